"""Training a character's LoRA from its card in a real headless Chromium (issue 19): the
Train button, the refusal of too few images, progress, the before/after report, prior
preservation, cancel.

Same set-up as tests/test_web_library.py (Debian's ``chromium`` driven by Playwright,
skipped without it except under ``CI=true``, only 127.0.0.1 reachable), against a real
``castbook serve`` whose home has the tiny random-weight presets (tests/support/api.py), so
the task trains for real on the CPU in its worker process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api import write_presets
from tests.support.server import Server
from tests.support.web import (
    BLOB_URL,
    api_client,
    castbook_server,
    enter_key,
    png_bytes,
    require_browser,
    screenshot,
    server_page,
)

require_browser()

from playwright.sync_api import Browser, Page, expect  # noqa: E402

# Loading torch and the model in the server's worker, then training, on busy shared cores.
TRAIN_TIMEOUT_MS = 240_000
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "web-train.png"
COLOURS = [(200, 60, 40), (40, 160, 90), (60, 80, 200)]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]
) -> Iterator[tuple[Server, str]]:
    home = tmp_path_factory.mktemp("web-train") / "home"
    write_presets(home, tiny_models)
    with castbook_server(home) as served:
        yield served


@pytest.fixture
def page(browser: Browser, served: tuple[Server, str]) -> Iterator[Page]:
    with server_page(browser, served[0], viewport=(1280, 900)) as page:
        enter_key(page, served[1])
        yield page


@pytest.fixture
def http(served: tuple[Server, str]) -> Iterator[httpx.Client]:
    with api_client(*served) as client:
        yield client


def add_character(http: httpx.Client, name: str, images: int) -> None:
    assert http.post("/v1/characters", json={"name": name, "hair": "red"}).status_code == 201
    files = [("image", (f"{i}.png", png_bytes(COLOURS[i % 3]), "image/png")) for i in range(images)]
    if files:
        assert http.post(f"/v1/characters/{name}/images", files=files).status_code == 201


def open_train(page: Page, name: str) -> None:
    page.reload()  # characters made over HTTP: the page learns of them on load
    page.locator(f'.card[data-name="{name}"] button.train').click()
    expect(page.locator("#train-dialog")).to_be_visible()
    expect(page.locator("#train-title")).to_have_text(f"Train {name}'s LoRA")


def fill(page: Page, steps: int, report_prompts: int) -> None:
    page.select_option("#train-preset", "tiny-plain")
    for name, value in (
        ("steps", steps),
        ("rank", 2),
        ("resolution", 64),
        ("report_prompts", report_prompts),
    ):
        page.fill(f"#train-form [name='{name}']", str(value))


def test_train_from_the_card_shows_progress_the_report_and_cancels(
    page: Page, http: httpx.Client, tmp_path: Path
) -> None:
    # Too few images: the server's refusal under the field, nothing queued.
    add_character(http, "Solo", 1)
    open_train(page, "Solo")
    expect(page.locator("#train-images")).to_contain_text("1 reference image: at least 3")
    fill(page, 3, 1)
    page.click("#train-start")
    error = page.locator('#train-form .field-error[data-error-for="image"]')
    expect(error).to_contain_text("a LoRA needs at least 3")
    assert http.get("/v1/tasks").json() == []
    page.click("#train-close")

    # Trained: the progress, then the scores without and with the LoRA and the sheet.
    add_character(http, "Ona", 3)
    open_train(page, "Ona")
    expect(page.locator("#train-loras")).to_have_text("No LoRA yet.")
    fill(page, 3, 1)
    page.check("#train-form [name='prior_preservation']")
    page.fill("#train-form [name='class_images']", "1")
    page.click("#train-start")
    expect(page.locator("#train-progress")).to_be_visible()
    expect(page.locator("#train-report")).to_be_visible(timeout=TRAIN_TIMEOUT_MS)
    expect(page.locator("#train-status")).to_contain_text("succeeded")
    (lora,) = http.get("/v1/characters/Ona/loras").json()["loras"]
    assert lora["training"]["prior_preservation"]["class_images"] == 1
    (task,) = http.get("/v1/tasks").json()
    report = task["result"]["consistency"]
    mean = page.locator('#train-scores tr[data-figure="mean"] td')
    expect(mean).to_have_text(
        [
            "mean",
            f"{report['without']['mean']:.1f}",
            f"{report['with']['mean']:.1f}",
            f"{report['gain']['mean']:+.1f}",
        ]
    )
    expect(page.locator('#train-scores tr[data-figure="worst"] td').first).to_have_text("worst")
    expect(page.locator("#train-sheet")).to_have_attribute("src", BLOB_URL)
    page.wait_for_function("document.querySelector('#train-sheet').naturalWidth > 0")
    expect(page.locator("#train-loras")).to_contain_text("3 steps, rank 2")
    expect(page.locator("#train-cancel-task")).to_be_hidden()
    screenshot(page, SCREENSHOT, tmp_path)

    # Cancelled while training: the task ends cancelled and the LoRA stays the one above.
    # Prior preservation unticked, its emptied class-image count is not sent (nor refused).
    fill(page, 100_000, 0)
    page.uncheck("#train-form [name='prior_preservation']")
    page.fill("#train-form [name='class_images']", "")
    page.click("#train-start")
    expect(page.locator("#train-report")).to_be_hidden()
    expect(page.locator("#train-status")).to_contain_text("loss", timeout=TRAIN_TIMEOUT_MS)
    page.click("#train-cancel-task")
    expect(page.locator("#train-status")).to_contain_text("cancelled", timeout=TRAIN_TIMEOUT_MS)
    expect(page.locator("#train-start")).to_be_enabled()
    after = http.get("/v1/characters/Ona/loras").json()["loras"]
    assert [x["sha256"] for x in after] == [lora["sha256"]]
    cancelled = max(http.get("/v1/tasks").json(), key=lambda t: t["created_at"])
    assert cancelled["input"]["settings"]["prior_preservation"] is False
