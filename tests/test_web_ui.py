"""The browser UI in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

A real ``castbook serve`` process on 127.0.0.1 with its own ``CASTBOOK_HOME``; the browser
only talks to it. Skipped when ``/usr/bin/chromium`` or the ``playwright`` package is missing,
except under ``CI=true`` where that is a failure. Never downloads a browser.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import Server
from tests.support.web import (
    BLOB_URL,
    castbook_server,
    enter_key,
    png_bytes,
    require_browser,
    screenshot,
    server_page,
)

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "web-characters.png"

require_browser()

from playwright.sync_api import Browser, Page, expect  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    with castbook_server(tmp_path_factory.mktemp("web") / "home") as served:
        yield served


@pytest.fixture
def page(browser: Browser, served: tuple[Server, str]) -> Iterator[Page]:
    with server_page(browser, served[0], viewport=(1100, 640)) as page:
        yield page


def create_character(page: Page, name: str, tags: str, image: bytes | None = None) -> None:
    page.click("#new-character")
    page.fill("#field-name", name)
    page.fill("#field-style", "watercolor, soft light")
    page.fill("#field-traits", "red scarf\nscar over the left eye")
    page.fill("#field-tags", tags)
    if image is not None:
        page.set_input_files(
            "#field-image", files=[{"name": "ref.png", "mimeType": "image/png", "buffer": image}]
        )
    page.click("#save-character")


def test_static_files_need_no_key_and_the_api_still_does(served: tuple[Server, str]) -> None:
    server, _ = served
    index = httpx.get(f"{server.base}/", timeout=10)
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert '<script type="module" src="/static/app.js">' in index.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = httpx.get(f"{server.base}/static/{name}", timeout=10)
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert httpx.get(f"{server.base}/static/..%2Fapi%2Fapp.py", timeout=10).status_code == 404
    assert httpx.get(f"{server.base}/static/nope.js", timeout=10).status_code == 404
    assert httpx.get(f"{server.base}/v1/characters", timeout=10).status_code == 401


def test_character_library_and_canvas(
    page: Page, served: tuple[Server, str], tmp_path: Path
) -> None:
    server, key = served
    enter_key(page, key)
    expect(page.locator("#empty-library")).to_be_visible()
    assert page.evaluate("localStorage.getItem('castbook.apiKey')") == key

    # Create with an uploaded image: the card shows the thumbnail fetched with the key.
    create_character(page, "Mira", "hero, knight", png_bytes())
    card = page.locator(".card", has_text="Mira")
    expect(card).to_be_visible()
    expect(page.locator("#character-form")).to_be_hidden()
    expect(page.locator("#empty-library")).to_be_hidden()
    expect(card.locator(".tag")).to_have_text(["hero", "knight"])
    thumb = card.locator("img.thumb")
    expect(thumb).to_have_attribute("src", BLOB_URL)
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle()
    )
    create_character(page, "Oskar", "villain", png_bytes((40, 60, 200)))
    expect(page.locator(".card")).to_have_count(2)

    # A duplicate name: the API's error appears next to the name field.
    create_character(page, "mira", "")
    name_error = page.locator('.field-error[data-error-for="name"]')
    expect(name_error).to_be_visible()
    expect(name_error).to_contain_text("already exists")
    page.click("#cancel-character")
    expect(page.locator(".card")).to_have_count(2)

    # Search filters the cards (by name or tag).
    page.fill("#search", "knight")
    expect(page.locator(".card")).to_have_count(1)
    expect(page.locator(".card .name")).to_have_text("Mira")
    page.fill("#search", "nobody")
    expect(page.locator(".card")).to_have_count(0)
    expect(page.locator("#no-match")).to_be_visible()
    page.fill("#search", "")
    expect(page.locator(".card")).to_have_count(2)

    # Drag a card onto the canvas: a character node with the name appears there.
    page.locator(".card", has_text="Mira").drag_to(
        page.locator("#canvas"), target_position={"x": 220, "y": 140}
    )
    node = page.locator("#canvas .node")
    expect(node).to_have_count(1)
    expect(node.locator(".node-name")).to_have_text("Mira")
    canvas_box = page.locator("#canvas").bounding_box()
    box = node.bounding_box()
    assert canvas_box and box
    assert abs(box["x"] - canvas_box["x"] - 220) < 4 and abs(box["y"] - canvas_box["y"] - 140) < 4

    # Move it by dragging.
    page.mouse.move(box["x"] + 20, box["y"] + 10)
    page.mouse.down()
    page.mouse.move(box["x"] + 120, box["y"] + 70, steps=5)
    page.mouse.up()
    moved = node.bounding_box()
    assert moved and abs(moved["x"] - box["x"] - 100) < 4 and abs(moved["y"] - box["y"] - 60) < 4
    expect(node).to_have_class(re.compile(r"\bselected\b"))

    screenshot(page, SCREENSHOT, tmp_path)

    # Selected + Delete removes it.
    page.keyboard.press("Delete")
    expect(node).to_have_count(0)

    # Delete a character: cancel keeps it, confirm removes it here and in the API.
    page.locator(".card", has_text="Oskar").locator("button.delete").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.click("#cancel-delete")
    expect(page.locator(".card")).to_have_count(2)
    page.locator(".card", has_text="Oskar").locator("button.delete").click()
    page.click("#confirm-delete")
    expect(page.locator(".card", has_text="Oskar")).to_have_count(0)
    expect(page.locator(".card")).to_have_count(1)
    listed = httpx.get(
        f"{server.base}/v1/characters", headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).json()
    assert [c["name"] for c in listed] == ["Mira"]


def test_a_wrong_key_is_refused_in_the_prompt(page: Page) -> None:
    page.goto("/")
    page.fill("#api-key", "cb_not-a-real-key")
    page.click("#save-key")
    expect(page.locator("#key-error")).to_be_visible()
    expect(page.locator("#key-dialog")).to_be_visible()
