"""What the browser tests share: a real ``castbook serve`` on 127.0.0.1 with its own home and
key, Debian's ``chromium`` driven by Playwright (never a downloaded browser), and pages that
reach only that server and fail the test on any script error.

A module calls :func:`require_browser` before importing Playwright: without
``/usr/bin/chromium`` or the ``playwright`` package it is skipped, except with ``CI=true``,
where that is a failure.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image

from tests.support.server import Server, start_server, stop

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 10_000
BLOB_URL = re.compile(r"^blob:")  # pictures are fetched with the key, shown as blobs
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_browser() -> None:
    """Skip the calling module (fail it under CI=true) when the browser cannot run."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = (
                "the playwright package is missing (pip install playwright; no browser download)"
            )
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI=true needs the browser tests: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@contextmanager
def castbook_server(home: Path, env: dict[str, str] | None = None) -> Iterator[tuple[Server, str]]:
    """A real ``castbook serve`` on ``home`` (and its own empty HF cache), with a key."""
    environment = {**os.environ, "CASTBOOK_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    environment["HF_HOME"] = str(home.parent / "hf-empty")
    for name in ("CASTBOOK_DATABASE_URL", "CASTBOOK_BLOB_DIR", "CASTBOOK_EXECUTOR"):
        environment.pop(name, None)
    # The lookalike check on upload starts the evaluation workers: off unless asked for.
    environment["CASTBOOK_IDENTIFY_ON_ADD"] = "0"
    environment.update(env or {})
    key = create_key(environment, "web")
    server = start_server(environment, home.parent / "server.log")
    try:
        yield server, key
    finally:
        stop(server)


def create_key(environment: Mapping[str, str], name: str, *, admin: bool = False) -> str:
    """The key ``castbook keys create --name NAME [--admin] --plain`` would print for the
    home and database ``environment`` names, made in this process the way that command
    makes it (the command itself runs in tests/test_api_server.py; a process costs seconds)."""
    from castbook.api import ApiKeys
    from castbook.db import Database
    from castbook.settings import Settings

    database = Database(Settings.from_env(environment).database_url)
    try:
        return ApiKeys(database).create(name, admin=admin)[1]
    finally:
        database.dispose()


@contextmanager
def chromium() -> Iterator[Browser]:
    from playwright.sync_api import expect, sync_playwright

    # Assertions wait as long as actions do (Playwright's own default is 5 s): on two busy
    # cores a page that waits on the server (extraction, a search) can take longer.
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def server_page(
    browser: Browser,
    server: Server,
    *,
    viewport: tuple[int, int],
    key: str | None = None,
) -> Iterator[Page]:
    """A fresh page on ``server``; ``key`` is put in localStorage before the page loads.
    Requests to any other host are refused, and a script error fails the test."""
    context = browser.new_context(
        base_url=server.base, viewport={"width": viewport[0], "height": viewport[1]}
    )
    context.set_default_timeout(TIMEOUT_MS)
    if key is not None:
        context.add_init_script(f"localStorage.setItem('castbook.apiKey', {key!r})")
    # Only the castbook server: anything else the page asked for would be a bug.
    context.route(
        "**/*",
        lambda route: (
            route.continue_() if route.request.url.startswith(server.base) else route.abort()
        ),
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors


@contextmanager
def api_client(server: Server, key: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.base, headers=headers, timeout=30) as client:
        yield client


def screenshot(page: Page, target: Path, tmp_path: Path, **options: Any) -> None:
    """docs/ screenshots are written when missing or with CASTBOOK_UPDATE_SCREENSHOTS=1, so
    an ordinary test run leaves the committed files alone (it writes into tmp_path)."""
    update = os.environ.get("CASTBOOK_UPDATE_SCREENSHOTS") == "1" or not target.exists()
    page.screenshot(path=str(target if update else tmp_path / target.name), **options)


def png_bytes(color: tuple[int, int, int] = (200, 60, 40)) -> bytes:
    """A small portrait-shaped PNG: a coloured card with a face-coloured block."""
    image = Image.new("RGB", (96, 128), color)
    for x in range(30, 66):
        for y in range(30, 70):
            image.putpixel((x, y), (250, 220, 180))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def enter_key(page: Page, key: str) -> None:
    """Type ``key`` into the page's key dialog, as a user does on a first visit."""
    from playwright.sync_api import expect

    page.goto("/")
    expect(page.locator("#key-dialog")).to_be_visible()
    page.fill("#api-key", key)
    page.click("#save-key")
    expect(page.locator("#key-dialog")).to_be_hidden()
