"""What the canvas's browser tests share (tests/test_web_canvas.py and
tests/test_web_canvas_fixes.py): adding nodes and characters with real drags, wiring ports,
and where a wire's ends are on screen. It imports Playwright: import it after
:func:`tests.support.web.require_browser`."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import Locator, Page, expect

from tests.support.web import png_bytes

RUN_TIMEOUT_MS = 90_000


def add_character(http: httpx.Client, name: str, color: tuple[int, int, int]) -> dict[str, Any]:
    made = http.post("/v1/characters", json={"name": name, "style_prompt": "ink and watercolor"})
    assert made.status_code == 201, made.text
    uploaded = http.post(
        f"/v1/characters/{made.json()['id']}/images",
        files=[("image", ("ref.png", png_bytes(color), "image/png"))],
        data={"primary": "true"},
    )
    assert uploaded.status_code == 201, uploaded.text
    return uploaded.json()


def node(page: Page, node_type: str) -> Locator:
    return page.locator(f'#canvas .node[data-type="{node_type}"]')


def port(owner: Locator, direction: str, name: str) -> Locator:
    return owner.locator(f'.port[data-direction="{direction}"][data-port="{name}"]')


def centre(locator: Locator) -> tuple[float, float]:
    box = locator.bounding_box()
    assert box is not None
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def add_from_nodes_tab(page: Page, node_type: str, x: float, y: float) -> Locator:
    """Drag a node type from the Nodes tab to (x, y) on the canvas."""
    page.click("#tab-nodes")
    before = node(page, node_type).count()
    page.locator(f'.node-type[data-type="{node_type}"]').drag_to(
        page.locator("#canvas"), target_position={"x": x, "y": y}
    )
    expect(node(page, node_type)).to_have_count(before + 1)
    return node(page, node_type).last


def drop_card(page: Page, name: str, x: float, y: float) -> Locator:
    page.click("#tab-characters")
    page.locator(".card", has_text=name).drag_to(
        page.locator("#canvas"), target_position={"x": x, "y": y}
    )
    added = page.locator("#canvas .node[data-type='character']", has_text=name)
    expect(added).to_have_count(1)
    return added


def drag_wire(page: Page, start: Locator, end: Locator, *, release: bool = True) -> None:
    x, y = centre(start)
    page.mouse.move(x, y)
    page.mouse.down()
    tx, ty = centre(end)
    page.mouse.move(tx, ty, steps=8)
    if release:
        page.mouse.up()


def wire(page: Page, source: Locator, output: str, target: Locator, name: str) -> None:
    drag_wire(page, port(source, "out", output), port(target, "in", name))


def wires(page: Page) -> Locator:
    return page.locator("#wires .wire")


def wire_ends(page: Page, index: int = 0) -> list[tuple[float, float]]:
    """The screen points where a wire starts and ends."""
    return (
        page.locator("#wires .wire .wire-line")
        .nth(index)
        .evaluate(
            """path => {
            const m = path.getScreenCTM();
            return [0, path.getTotalLength()].map((at) => {
                const p = path.getPointAtLength(at);
                return [m.a * p.x + m.c * p.y + m.e, m.b * p.x + m.d * p.y + m.f];
            });
        }"""
        )
    )


def assert_near(a: tuple[float, float], b: tuple[float, float], tolerance: float = 3) -> None:
    assert abs(a[0] - b[0]) <= tolerance and abs(a[1] - b[1]) <= tolerance, (a, b)
