"""Issue 18's editing tools of a ComfyUI-class node editor, in Debian's Chromium with real mouse
and keyboard events against a real ``castbook serve``: box selection, the node search, the
context menu, the minimap and auto-arrange, collapsible nodes, drafts (Save keeps an
unfinished workflow, Run names what is missing), a character placed and wired without a mouse,
and the layout at 1280×720, 1440×900 and 1920×1080 (whose screenshots are
docs/web-layout-*.png, written when missing; ``bash scripts/web-screenshots.sh`` makes them
again).

Each test starts from a canvas put in the browser's draft (``castbook.canvas``, what a
reload restores) rather than dragged together, to keep it a few seconds.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.support.server import Server
from tests.support.web import api_client, castbook_server, require_browser, server_page

require_browser()

from playwright.sync_api import Browser, Locator, Page, expect  # noqa: E402

from tests.support.canvas import (  # noqa: E402
    add_character,
    assert_near,
    centre,
    node,
    port,
    wire_ends,
    wires,
)

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(1280, 720), (1440, 900), (1920, 1080)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    home = tmp_path_factory.mktemp("web-editing") / "home"
    home.mkdir(parents=True)
    with castbook_server(home) as served:
        yield served


@pytest.fixture
def http(served: tuple[Server, str]) -> Iterator[httpx.Client]:
    with api_client(*served) as client:
        for character in client.get("/v1/characters").json():
            client.delete(f"/v1/characters/{character['id']}")
        for saved in client.get("/v1/workflows").json():
            client.delete(f"/v1/workflows/{saved['id']}")
        yield client


@pytest.fixture
def page(browser: Browser, served: tuple[Server, str], http: httpx.Client) -> Iterator[Page]:
    with server_page(browser, served[0], viewport=(1440, 900), key=served[1]) as page:
        page.goto("/")
        expect(page.locator("#key-dialog")).to_be_hidden()
        expect(page.locator("#nodes-panel .node-type").first).to_be_attached()
        yield page


# ---- helpers --------------------------------------------------------------------------------


def open_canvas(page: Page, graph: dict[str, Any], names: dict[str, str] | None = None) -> None:
    """Put `graph` in the browser's draft and reload: the canvas the page restores."""
    draft = json.dumps({"graph": graph, "names": names or {}})
    page.evaluate("draft => localStorage.setItem('castbook.canvas', draft)", draft)
    page.reload()
    expect(page.locator("#canvas .node")).to_have_count(len(graph["nodes"]))


def by_id(page: Page, node_id: str) -> Locator:
    return page.locator(f'#canvas .node[data-node-id="{node_id}"]')


def selected_ids(page: Page) -> set[str]:
    return set(
        page.locator("#canvas .node.selected").evaluate_all("ns => ns.map(n => n.dataset.nodeId)")
    )


def world_position(element: Locator) -> tuple[float, float]:
    return tuple(element.evaluate("e => [e.offsetLeft, e.offsetTop]"))


def canvas_point(page: Page, x: float, y: float) -> tuple[float, float]:
    box = page.locator("#canvas").bounding_box()
    assert box is not None
    return box["x"] + x, box["y"] + y


def drag(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=6)
    page.mouse.up()


THREE = {
    "nodes": {
        "batch_render_1": {"type": "batch_render", "inputs": {"prompts": ["a lighthouse"]}},
        "consistency_eval_1": {
            "type": "consistency_eval",
            "inputs": {"images": ["batch_render_1", "images"]},
        },
        "output_1": {"type": "output", "inputs": {"value": ["consistency_eval_1", "best"]}},
    },
    "layout": {
        "batch_render_1": {"x": 40, "y": 40},
        "consistency_eval_1": {"x": 360, "y": 60},
        "output_1": {"x": 700, "y": 420},
    },
}


# ---- box selection --------------------------------------------------------------------------


def test_box_selection_then_move_copy_and_delete_act_on_the_whole_selection(page: Page) -> None:
    open_canvas(page, THREE)
    batch, evaluation, output = (by_id(page, n) for n in THREE["nodes"])
    # A drag on the empty canvas draws a box and selects what it touches, not the output.
    start = canvas_point(page, 20, 20)
    eval_box = evaluation.bounding_box()
    assert eval_box
    end = (eval_box["x"] + 30, eval_box["y"] + 30)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=6)
    expect(page.locator("#canvas .select-box")).to_be_visible()
    page.mouse.up()
    expect(page.locator("#canvas .select-box")).to_have_count(0)
    assert selected_ids(page) == {"batch_render_1", "consistency_eval_1"}

    # Shift adds: a box around the output only, with Shift held.
    out_box = output.bounding_box()
    assert out_box
    page.keyboard.down("Shift")
    drag(page, (out_box["x"] - 15, out_box["y"] - 15), (out_box["x"] + 20, out_box["y"] + 20))
    page.keyboard.up("Shift")
    assert selected_ids(page) == set(THREE["nodes"])

    # Dragging one title bar moves all three by the same step; the wires follow.
    before = {n: world_position(by_id(page, n)) for n in THREE["nodes"]}
    title_x, title_y = centre(batch.locator(".node-title"))
    drag(page, (title_x, title_y), (title_x + 60, title_y + 30))
    for node_id, (x, y) in before.items():
        assert world_position(by_id(page, node_id)) == (x + 60, y + 30), node_id
    start_point, _ = wire_ends(page, 0)
    assert_near(start_point, centre(port(batch, "out", "images")))

    # Ctrl+C, Ctrl+V copies all three with the wires between them.
    page.keyboard.press("Control+c")
    page.keyboard.press("Control+v")
    expect(page.locator("#canvas .node")).to_have_count(6)
    expect(wires(page)).to_have_count(4)
    assert len(selected_ids(page)) == 3 and not selected_ids(page) & set(THREE["nodes"])
    # Delete removes the whole (pasted) selection; a click on the empty canvas clears it.
    page.keyboard.press("Delete")
    expect(page.locator("#canvas .node")).to_have_count(3)
    page.keyboard.press("Control+a")
    assert selected_ids(page) == set(THREE["nodes"])
    page.mouse.click(*canvas_point(page, 20, 600))
    assert selected_ids(page) == set()
    # Ctrl+click adds one node, as Shift+click does.
    batch.locator(".node-title").click()
    output.locator(".node-title").click(modifiers=["Control"])
    assert selected_ids(page) == {"batch_render_1", "output_1"}


# ---- node search ----------------------------------------------------------------------------


def test_the_node_search_adds_the_chosen_type_where_it_was_opened(page: Page) -> None:
    point = canvas_point(page, 300, 200)
    page.mouse.dblclick(*point)
    search = page.locator("#canvas .node-search")
    expect(search).to_be_visible()
    expect(search.locator("input")).to_be_focused()
    search.locator("input").type("eval")
    items = search.locator(".node-search-item")
    expect(items.first).to_have_attribute("data-type", "consistency_eval")
    page.keyboard.press("Enter")
    expect(search).to_be_hidden()
    added = node(page, "consistency_eval")
    expect(added).to_have_count(1)
    box = added.bounding_box()
    assert box
    assert_near((box["x"], box["y"]), point)

    # `/` opens it where the pointer is; arrows choose; Escape closes without adding.
    page.mouse.move(*canvas_point(page, 700, 400))
    page.keyboard.press("/")
    expect(search).to_be_visible()
    search.locator("input").type("image")
    count = items.count()
    assert count >= 2
    shown = items.evaluate_all("is => is.map(i => (i.textContent + ' ' + i.title).toLowerCase())")
    assert all("image" in text for text in shown), shown
    page.keyboard.press("ArrowDown")
    expect(items.nth(1)).to_have_attribute("aria-selected", "true")
    chosen = items.nth(1).get_attribute("data-type")
    page.keyboard.press("Escape")
    expect(search).to_be_hidden()
    expect(page.locator("#canvas .node")).to_have_count(1)
    page.keyboard.press("/")
    search.locator("input").type("image")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(node(page, str(chosen))).to_have_count(1)
    search.locator("input").evaluate("i => i.blur()")
    page.keyboard.press("/")
    search.locator("input").type("no such node type")
    expect(search.locator(".node-search-none")).to_be_visible()
    page.keyboard.press("Enter")
    expect(page.locator("#canvas .node")).to_have_count(2)


def test_a_wire_let_go_on_the_empty_canvas_offers_the_nodes_that_take_it(page: Page) -> None:
    open_canvas(page, {"nodes": {"batch_render_1": {"type": "batch_render", "inputs": {}}}})
    batch = by_id(page, "batch_render_1")
    point = canvas_point(page, 650, 250)
    drag(page, centre(port(batch, "out", "images")), point)
    search = page.locator("#canvas .node-search")
    expect(search).to_be_visible()
    offered = set(
        search.locator(".node-search-item").evaluate_all("is => is.map(i => i.dataset.type)")
    )
    assert {"consistency_eval", "output"} <= offered, offered
    assert "text_to_image" not in offered, offered  # nothing of it takes images
    page.keyboard.type("eval")
    page.keyboard.press("Enter")
    evaluation = node(page, "consistency_eval")
    expect(evaluation).to_have_count(1)
    box = evaluation.bounding_box()
    assert box
    assert_near((box["x"], box["y"]), point)
    expect(
        page.locator('#wires .wire[data-from="batch_render_1"][data-to="consistency_eval_1"]')
    ).to_have_attribute("data-port", "images")
    # A wire picked up from an input and let go there is removed, as before: no search.
    drag(page, centre(port(evaluation, "in", "images")), canvas_point(page, 650, 600))
    expect(wires(page)).to_have_count(0)
    expect(search).to_be_hidden()


# ---- context menu ---------------------------------------------------------------------------


def test_the_context_menu_acts_on_the_canvas_a_node_and_a_wire(page: Page) -> None:
    open_canvas(page, THREE)
    menu = page.locator("#canvas .context-menu")
    evaluation = by_id(page, "consistency_eval_1")

    # A node's menu, used with the keyboard: ↓ to Collapse, Enter.
    evaluation.locator(".node-title").click(button="right")
    expect(menu).to_be_visible()
    labels = menu.locator(".context-item").all_inner_texts()
    assert [label.split("\n")[0] for label in labels] == [
        "Duplicate",
        "Collapse",
        "Disconnect",
        "Delete",
    ]
    expect(menu.locator('[data-action="duplicate"]')).to_be_focused()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(menu).to_be_hidden()
    expect(evaluation).to_have_class(re.compile(r"\bcollapsed\b"))
    # Disconnect takes both of its wires off; Duplicate adds a copy.
    evaluation.locator(".node-title").click(button="right")
    menu.locator('[data-action="disconnect"]').click()
    expect(wires(page)).to_have_count(0)
    page.keyboard.press("Control+z")
    expect(wires(page)).to_have_count(2)
    evaluation.locator(".node-title").click(button="right")
    menu.locator('[data-action="duplicate"]').click()
    expect(node(page, "consistency_eval")).to_have_count(2)

    # A wire's menu: Delete wire.
    # Its middle, once the pointer would land on it there (a redraw may be pending).
    at = page.wait_for_function(
        """() => {
            const path = document.querySelector('#wires .wire[data-to="output_1"] .wire-hit');
            if (!path) return null;
            const p = path.getPointAtLength(path.getTotalLength() / 2);
            const m = path.getScreenCTM();
            const x = m.a * p.x + m.c * p.y + m.e;
            const y = m.b * p.x + m.d * p.y + m.f;
            const hit = document.elementFromPoint(x, y);
            return hit && hit.closest('.wire[data-to="output_1"]') ? [x, y] : null;
        }"""
    ).json_value()
    page.mouse.click(*at, button="right")
    expect(menu.locator(".context-item")).to_have_text(["Delete wireDelete"])
    page.keyboard.press("Enter")
    expect(page.locator('#wires .wire[data-to="output_1"]')).to_have_count(0)

    # The empty canvas's menu: Add node… opens the search there; Escape closes a menu.
    # The empty canvas's menu: Paste puts the copy (Duplicate copied) where it was opened.
    empty = canvas_point(page, 900, 650)
    page.mouse.click(*empty, button="right")
    expect(menu.locator('[data-action="arrange"]')).to_be_enabled()
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    page.mouse.click(*empty, button="right")
    menu.locator('[data-action="paste"]').click()
    expect(node(page, "consistency_eval")).to_have_count(3)
    pasted = node(page, "consistency_eval").last.bounding_box()
    assert pasted
    assert_near((pasted["x"], pasted["y"]), empty)
    # Add node… opens the search there; Escape closed the menu above.
    page.mouse.click(*canvas_point(page, 600, 650), button="right")
    menu.locator('[data-action="add-node"]').click()
    expect(page.locator("#canvas .node-search")).to_be_visible()
    page.keyboard.type("output")
    page.keyboard.press("Enter")
    expect(node(page, "output")).to_have_count(2)


# ---- minimap and arrange --------------------------------------------------------------------


def test_the_minimap_pans_and_arrange_lays_out_by_the_wires_undoably(page: Page) -> None:
    open_canvas(page, THREE)
    minimap = page.locator("#canvas canvas.minimap")
    expect(minimap).to_be_hidden()
    page.click("#minimap-toggle")
    expect(minimap).to_be_visible()
    expect(page.locator("#minimap-toggle")).to_have_attribute("aria-pressed", "true")

    # A click on the output as the minimap draws it pans the output to the canvas's middle.
    output = by_id(page, "output_1")
    left, top, scale = (float(v) for v in minimap.get_attribute("data-mapping").split(","))
    x, y, w, h = output.evaluate("e => [e.offsetLeft, e.offsetTop, e.offsetWidth, e.offsetHeight]")
    box = minimap.bounding_box()
    assert box
    minimap.click(position={"x": (x + w / 2 - left) * scale, "y": (y + h / 2 - top) * scale})
    assert_near(centre(output), centre(page.locator("#canvas")), tolerance=3 / scale)
    # Dragging on it keeps panning.
    before = page.evaluate("() => document.querySelector('#canvas-world').style.transform")
    drag(page, (box["x"] + 20, box["y"] + 20), (box["x"] + 60, box["y"] + 50))
    assert page.evaluate("() => document.querySelector('#canvas-world').style.transform") != before
    # It stays on after a reload.
    page.reload()
    expect(minimap).to_be_visible()

    # Arrange: columns by the wires (batch render, then eval, then output), no overlaps.
    positions = {n: world_position(by_id(page, n)) for n in THREE["nodes"]}
    page.click("#arrange")
    expect(page.locator("#canvas-status")).to_contain_text("Arranged")
    arranged = {n: by_id(page, n).bounding_box() for n in THREE["nodes"]}
    order = ["batch_render_1", "consistency_eval_1", "output_1"]
    for a, b in itertools.pairwise(order):
        assert arranged[a]["x"] + arranged[a]["width"] < arranged[b]["x"], (a, b)
    # One undo step puts every node back.
    page.keyboard.press("Control+z")
    assert {n: world_position(by_id(page, n)) for n in THREE["nodes"]} == positions


# ---- collapsed nodes and drafts -------------------------------------------------------------


def test_a_collapsed_node_keeps_its_wires_and_a_draft_saves_it(
    page: Page, http: httpx.Client
) -> None:
    open_canvas(page, THREE)
    evaluation = by_id(page, "consistency_eval_1")
    full = evaluation.bounding_box()
    evaluation.locator(".node-collapse").click()
    expect(evaluation).to_have_class(re.compile(r"\bcollapsed\b"))
    expect(evaluation.locator(".node-collapse")).to_have_attribute("aria-expanded", "false")
    expect(evaluation.locator(".node-fields")).to_be_hidden()
    expect(port(evaluation, "in", "images")).to_be_visible()  # on the title bar's edge
    folded = evaluation.bounding_box()
    assert full and folded and folded["height"] < full["height"]
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => done()))")
    ends = {w.get_attribute("data-to"): i for i, w in enumerate(page.locator("#wires .wire").all())}
    _, into_eval = wire_ends(page, ends["consistency_eval_1"])
    assert_near(into_eval, centre(port(evaluation, "in", "images")))
    out_of_eval, _ = wire_ends(page, ends["output_1"])
    assert_near(out_of_eval, centre(port(evaluation, "out", "best")))

    # The eval has no character wired: Save keeps it anyway, as a draft that says so.
    page.keyboard.press("Control+s")
    page.fill("#workflow-name", "unfinished")
    page.click("#save-confirm")
    expect(page.locator("#save-dialog")).to_be_hidden()
    status = page.locator("#canvas-status")
    expect(status).to_contain_text("a draft")
    expect(status).to_contain_text("consistency_eval_1.character")
    (saved,) = http.get("/v1/workflows").json()
    stored = http.get(f"/v1/workflows/{saved['id']}").json()["graph"]
    assert stored["layout"]["consistency_eval_1"]["collapsed"] is True
    assert "collapsed" not in stored["layout"]["batch_render_1"]

    # Run checks it all and names what is missing, on the node and in the status line.
    page.click("#run-workflow")
    page.click("#canvas-confirm-ok")  # "Run anyway": this server has no model installed
    expect(status).to_contain_text("Not run")
    expect(status).to_contain_text("consistency_eval_1.character")
    expect(evaluation.locator('.field-error[data-error-for="character"]')).to_contain_text(
        "required"
    )
    # Loaded again it is still folded.
    page.click("#clear-canvas")
    page.click("#canvas-confirm-ok")
    page.click("#load-workflow")
    page.locator(".workflow-row", has_text="unfinished").locator(".workflow-load").click()
    expect(by_id(page, "consistency_eval_1")).to_have_class(re.compile(r"\bcollapsed\b"))
    expect(by_id(page, "batch_render_1")).not_to_have_class(re.compile(r"\bcollapsed\b"))


# ---- keyboard -------------------------------------------------------------------------------


def test_a_cards_enter_before_the_node_types_load_places_it_when_they_do(
    page: Page, http: httpx.Client
) -> None:
    """Enter on a card just after a page load, before the node types are in, is not lost (it
    was dropped without a word: the full run's keyboard test failed that way once)."""
    add_character(http, "Bea", (40, 160, 90))
    held: list[Any] = []

    def hold(route: Any) -> None:  # answered when the test says
        held.append(route)

    page.route("**/v1/workflows/node-types", hold)
    try:
        with page.expect_request("**/v1/workflows/node-types"):
            page.reload()
        card = page.locator(".card", has_text="Bea")
        expect(card).to_have_attribute("tabindex", "0")
        card.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#canvas-status")).to_contain_text("still loading")
        expect(node(page, "character")).to_have_count(0)
        assert len(held) == 1, held
        held.pop().continue_()
        page.unroute("**/v1/workflows/node-types")
        character = node(page, "character")
        expect(character).to_have_count(1)
        expect(character.locator(".node-name")).to_have_text("Bea")
        expect(page.locator("#canvas-status")).to_contain_text("Placed Bea on the canvas")
    finally:
        for route in held:
            route.continue_()


def test_a_character_is_placed_and_wired_without_a_mouse(page: Page, http: httpx.Client) -> None:
    add_character(http, "Ada", (200, 60, 40))
    page.reload()
    card = page.locator(".card", has_text="Ada")
    expect(card).to_have_attribute("tabindex", "0")
    expect(card).to_have_attribute("aria-label", re.compile(r"^Ada, 1 reference image"))
    card.focus()
    page.keyboard.press("Enter")
    character = node(page, "character")
    expect(character).to_have_count(1)
    expect(character).to_be_focused()
    expect(character.locator(".node-name")).to_have_text("Ada")

    # A consistency eval from the node search, with the keyboard only.
    page.keyboard.press("/")
    page.keyboard.type("consistency")
    page.keyboard.press("Enter")
    evaluation = node(page, "consistency_eval")
    expect(evaluation).to_have_count(1)
    expect(evaluation).to_be_focused()
    assert evaluation.bounding_box() and character.bounding_box()

    # Tab from the character node reaches its output port; Enter, then its input, Enter.
    output = character.locator('.port-row[data-direction="out"][data-port="character"]')
    expect(output).to_have_attribute("aria-label", "character_1 output character: character")
    character.focus()
    for _ in range(12):
        page.keyboard.press("Tab")
        if output.evaluate("e => e === document.activeElement"):
            break
    expect(output).to_be_focused()
    page.keyboard.press("Enter")
    expect(output).to_have_class(re.compile(r"\bport-pending\b"))
    expect(page.locator("#canvas-status")).to_contain_text("Wiring from character_1.character")
    target = evaluation.locator('.port-row[data-direction="in"][data-port="character"]')
    expect(target).to_have_attribute(
        "aria-label", "consistency_eval_1 input character: takes image, character"
    )
    target.focus()
    page.keyboard.press("Enter")
    expect(wires(page)).to_have_count(1)
    expect(page.locator("#canvas-status")).to_contain_text(
        "Wired character_1.character → consistency_eval_1.character"
    )
    # A port that cannot take it is refused with the reason; Escape forgets a started wire.
    output.focus()
    page.keyboard.press("Enter")
    evaluation.locator('.port-row[data-direction="in"][data-port="images"]').focus()
    page.keyboard.press("Enter")
    expect(wires(page)).to_have_count(2)  # images takes a character (its reference image)
    evaluation.locator('.port-row[data-direction="out"][data-port="best"]').focus()
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    expect(page.locator("#canvas .port-pending")).to_have_count(0)
    # Delete on a focused port takes its wires off (not the selected node).
    output.focus()
    page.keyboard.press("Delete")
    expect(wires(page)).to_have_count(0)
    expect(page.locator("#canvas .node")).to_have_count(2)
    page.keyboard.press("Control+z")
    expect(wires(page)).to_have_count(2)


# ---- layout at common sizes -----------------------------------------------------------------


def save_small_png(page: Page, target: Path) -> None:
    """A screenshot in 256 colours (docs/ keeps them small)."""
    image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    small = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    target.parent.mkdir(parents=True, exist_ok=True)
    small.save(target, format="PNG", optimize=True)


def test_nothing_is_clipped_at_1280_1440_and_1920_wide(
    page: Page, http: httpx.Client, tmp_path: Path
) -> None:
    made = add_character(http, "Mira", (60, 120, 200))
    graph = {
        "nodes": {
            "character_1": {"type": "character", "inputs": {"character": made["id"]}},
            **THREE["nodes"],
            "consistency_eval_1": {
                "type": "consistency_eval",
                "inputs": {
                    "images": ["batch_render_1", "images"],
                    "character": ["character_1", "character"],
                },
            },
        }
    }
    graph["nodes"]["batch_render_1"] = {
        "type": "batch_render",
        "inputs": {
            "prompts": ["at the harbour", "in the rain"],
            "characters": [["character_1", "character"]],
        },
    }
    open_canvas(page, graph, {"character_1": "Mira"})
    page.click("#minimap-toggle")
    page.click("#arrange")
    update = os.environ.get("CASTBOOK_UPDATE_SCREENSHOTS") == "1"
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.click("#zoom-fit")
        page.click("#arrange")
        status = page.locator("#canvas-status")
        expect(status).to_contain_text("Arranged")
        status_box = status.bounding_box()
        assert status_box and status_box["width"] > 100, (width, status_box)
        for button in page.locator("#canvas-toolbar button:visible").all():
            box = button.bounding_box()
            assert box and box["width"] > 0, (width, button.inner_text())
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, (width, button.inner_text())
            assert box["y"] >= 0 and box["y"] + box["height"] <= height, (
                width,
                button.inner_text(),
            )
        sidebar = page.locator(".sidebar").bounding_box()
        assert sidebar
        for tab in page.locator(".tabs .tab").all():
            box = tab.bounding_box()
            assert box and box["x"] + box["width"] <= sidebar["x"] + sidebar["width"], (
                width,
                tab.inner_text(),
            )
        canvas = page.locator("#canvas").bounding_box()
        assert canvas and canvas["width"] > 400 and canvas["height"] > 300, (width, canvas)
        assert canvas["x"] + canvas["width"] <= width and canvas["y"] + canvas["height"] <= height
        minimap = page.locator("#canvas .minimap").bounding_box()
        assert minimap and minimap["x"] + minimap["width"] <= canvas["x"] + canvas["width"]
        for element in page.locator("#canvas .node").all():
            box = element.bounding_box()
            assert (
                box
                and canvas["x"] <= box["x"]
                and box["x"] + box["width"] <= (canvas["x"] + canvas["width"] + 1)
            ), (width, element.get_attribute("data-node-id"))
        target = ROOT / "docs" / f"web-layout-{width}x{height}.png"
        save_small_png(page, target if update or not target.exists() else tmp_path / target.name)
