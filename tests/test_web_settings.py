"""The web app's Settings tab in a real headless Chromium: providers and their keys through
``/v1/providers`` on a real ``castbook serve`` (admin keys only), keys typed into a password
field and shown masked only, and "Test" calling the suite's fake Gemini server on 127.0.0.1
from the server. Same set-up as the other tests/test_web_*.py (Debian's ``chromium``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.fake_gemini_server import FakeGeminiServer
from tests.support.server import Server
from tests.support.web import castbook_server, create_key, require_browser, screenshot
from tests.support.web import server_page as open_page

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "web-settings.png"
GOOD = "AIzaSy-good-key-0000000000abcd"
BAD = "AIzaSy-refused-key-00000000wxyz"

require_browser()

from playwright.sync_api import Browser, Page, expect  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, str]]:
    home = tmp_path_factory.mktemp("web-settings") / "home"
    quiet = {name: "" for name in ("CASTBOOK_EXTRACT_BASE_URL", "CASTBOOK_EXTRACT_API_KEY")}
    with castbook_server(home, quiet) as (server, key):
        environment = {**os.environ, "CASTBOOK_HOME": str(home)}
        environment.pop("CASTBOOK_DATABASE_URL", None)
        yield server, key, create_key(environment, "admin", admin=True)


@contextmanager
def settings_tab(browser: Browser, server: Server, key: str) -> Iterator[Page]:
    with open_page(browser, server, viewport=(1280, 900), key=key) as page:
        page.goto("/")
        page.click("#tab-settings")
        expect(page.locator("#settings-panel")).to_be_visible()
        yield page


def test_an_ordinary_key_is_told_an_admin_key_is_needed(
    served: tuple[Server, str, str], browser: Browser
) -> None:
    server, key, _ = served
    with settings_tab(browser, server, key) as page:
        expect(page.locator("#providers-admin-only")).to_be_visible()
        expect(page.locator("#providers-admin-only")).to_contain_text("admin key")
        expect(page.locator("#provider-form")).to_be_hidden()


def test_add_a_provider_and_keys_test_them_and_remove_them(
    served: tuple[Server, str, str], browser: Browser, tmp_path: Path
) -> None:
    server, _, admin = served
    with FakeGeminiServer(api_keys=[GOOD]) as gemini, settings_tab(browser, server, admin) as page:
        expect(page.locator("#providers-empty")).to_be_visible()
        # A bad URL is refused with the server's message; nothing is added.
        page.fill("#provider-name", "broken")
        page.select_option("#provider-kind", "openai")
        page.fill("#provider-base-url", "ftp://example/v1")
        page.fill("#provider-model", "m")
        page.click("#add-provider")
        expect(page.locator("#provider-form-error")).to_contain_text("http(s) URL")
        expect(page.locator(".provider")).to_have_count(0)

        page.fill("#provider-name", "google")
        page.select_option("#provider-kind", "gemini")
        page.fill("#provider-base-url", gemini.base_url)
        page.fill("#provider-model", "")
        page.select_option("#provider-prefer", "free")
        page.click("#add-provider")
        google = page.locator('.provider[data-provider="google"]')
        expect(google).to_contain_text("No keys yet.")
        expect(google.locator(".provider-where")).to_contain_text("image work: free keys first")
        expect(page.locator("#provider-name")).to_have_value("")

        key_input = google.locator('input[name="key"]')
        expect(key_input).to_have_attribute("type", "password")
        key_input.fill(BAD)
        google.locator('select[name="tier"]').select_option("free")
        google.get_by_role("button", name="Add key").click()
        google = page.locator('.provider[data-provider="google"]')
        expect(google.locator(".provider-key")).to_have_count(1)
        google.locator('input[name="key"]').fill(GOOD)
        google.get_by_role("button", name="Add key").click()
        keys = page.locator('.provider[data-provider="google"] .provider-key')
        expect(keys).to_have_count(2)
        expect(keys.nth(0)).to_contain_text("AIz…wxyz")
        expect(keys.nth(0)).to_contain_text("free")
        expect(keys.nth(1)).to_contain_text("AIz…abcd")
        expect(keys.nth(1)).to_contain_text("not tested yet")

        page.locator('.provider[data-provider="google"]').get_by_role("button", name="Test").click()
        results = page.locator('.provider[data-provider="google"] .test-result li')
        expect(results).to_have_count(2)
        expect(results.nth(0)).to_contain_text("AIz…wxyz (free): failed")
        expect(results.nth(0)).to_contain_text("refused the key")
        expect(results.nth(1)).to_contain_text("AIz…abcd (paid): works")
        expect(keys.nth(0)).to_contain_text("last test failed")
        expect(keys.nth(1)).to_contain_text("worked when tested")
        screenshot(page, SCREENSHOT, tmp_path)
        content = page.content()
        assert GOOD not in content and BAD not in content

        # Edit: only the model changes; the URL (and so the keys' test records) stays.
        google = page.locator('.provider[data-provider="google"]')
        google.get_by_role("button", name="Edit").click()
        edit = google.locator(".provider-edit")
        expect(edit.locator('input[name="base_url"]')).to_have_value(gemini.base_url)
        edit.locator('input[name="model"]').fill("gemini-3-pro-image-preview")
        edit.locator('select[name="prefer"]').select_option("paid")
        edit.get_by_role("button", name="Save").click()
        where = page.locator('.provider[data-provider="google"] .provider-where')
        expect(where).to_contain_text("gemini-3-pro-image-preview")
        expect(where).to_contain_text("image work: paid keys first")
        expect(keys.nth(1)).to_contain_text("worked when tested")
        google = page.locator('.provider[data-provider="google"]')
        google.get_by_role("button", name="Edit").click()
        google.locator('.provider-edit input[name="base_url"]').fill("ftp://nowhere")
        google.locator(".provider-edit").get_by_role("button", name="Save").click()
        expect(google.locator(".provider-edit .form-error")).to_contain_text("http(s) URL")
        google.locator(".provider-edit").get_by_role("button", name="Cancel").click()
        expect(google.locator(".provider-edit")).to_be_hidden()

        remove = keys.nth(0).get_by_role("button", name="Remove")
        remove.click()
        expect(remove).to_have_text("Really remove?")
        remove.click()
        expect(keys).to_have_count(1)
        expect(keys.nth(0)).to_contain_text("AIz…abcd")

        drop = page.locator('.provider[data-provider="google"]').get_by_role(
            "button", name="Remove provider"
        )
        drop.click()
        drop.click()
        expect(page.locator(".provider")).to_have_count(0)
        expect(page.locator("#providers-empty")).to_be_visible()
    assert {r.key for r in gemini.requests} == {BAD, GOOD}
