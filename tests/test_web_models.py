"""Models on nodes in a real headless Chromium: preset selects mark presets whose models are
not installed, a node offers "Download (…)" with live progress (picked up again after a
reload), the Run button warns before a run that would fail, and a downloaded preset then
really runs on the CPU.

Same set-up as tests/test_web_canvas.py (Debian's ``chromium`` driven by Playwright, only
127.0.0.1 reachable), against one real ``castbook serve`` for the module whose hub is a
:class:`~tests.support.fake_hub.FakeHub` serving tiny repositories laid out like the built-in
preset ``sd15-ip-adapter``'s (``HF_ENDPOINT``, not offline). Only the download test pulls;
the other tests use presets that stay missing, so the order does not matter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fake_hub import FakeHub
from tests.support.hub_models import SD15_REPO
from tests.support.server import Server
from tests.support.web import (
    BLOB_URL,
    api_client,
    castbook_server,
    create_key,
    require_browser,
    screenshot,
    server_page,
)

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "web-models.png"
PULLED = "sd15-ip-adapter"  # the tests' fake hub has its repositories
NEVER_PULLED = "sdxl-ip-adapter-face"  # its repositories are not on the fake hub
ADMIN_ONLY = "Only an admin key can download models on this server (castbook keys create --admin)"
PULL_TIMEOUT_MS = 120_000
RUN_TIMEOUT_MS = 120_000
THROTTLE = 200_000  # bytes per second: the download cancelled is still running at the click
SLOW = 20_000  # once the progress was seen: the rest takes long enough to reload the page
# The UNet (2.9 MB) is the file the progress waits for: a file's bytes count when it has
# arrived. It comes at FAST; the moment the hub has sent it, the rest (about 0.7 MB) at SLOW.
UNET = "unet/diffusion_pytorch_model.fp16.safetensors"
FAST = 2_000_000  # a chunk is 1/20 s of it: at most a chunk or two of the rest leaves fast

require_browser()

from playwright.sync_api import Browser, Locator, Page, expect  # noqa: E402

from tests.support.canvas import add_character  # noqa: E402


@dataclass(frozen=True)
class Served:
    server: Server
    key: str  # an ordinary key
    admin: str  # an admin key (may pull models)
    hub: FakeHub


def castbook(environment: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "castbook", *args],
        env=environment, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


@contextmanager
def slow_once_sent(hub: FakeHub, repo_id: str, path: str) -> Iterator[None]:
    """The hub sends at FAST until it has sent ``path`` once more in full, then at SLOW
    (a wait on the bytes sent, not on the clock)."""
    start, size = hub.bytes_sent(repo_id, path), hub.file(repo_id, path).size
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if hub.bytes_sent(repo_id, path) - start >= size:
                hub.throttle(SLOW)
                return
            time.sleep(0.005)

    hub.throttle(FAST)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(timeout=5)


# ---- one fake hub, one server and one browser for the module ----------------------------------


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, hub_repos: dict[str, dict[str, Path]]
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("web-models")
    home = root / "home"
    hub_env = {"HF_HUB_OFFLINE": "0", "HF_HOME": str(root / "hf")}
    with FakeHub() as hub:
        for repo_id, files in hub_repos.items():
            hub.add_repo(repo_id, files)
        hub_env["HF_ENDPOINT"] = hub.endpoint
        with castbook_server(home, hub_env) as (server, key):
            # The same environment as the server's (castbook_server's), for the CLI.
            environment = {**os.environ, "CASTBOOK_HOME": str(home), **hub_env}
            for name in ("CASTBOOK_DATABASE_URL", "CASTBOOK_BLOB_DIR", "CASTBOOK_EXECUTOR"):
                environment.pop(name, None)
            admin = create_key(environment, "admin", admin=True)
            castbook(environment, "models", "list")  # asks the hub for the download sizes
            yield Served(server, key, admin, hub)


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    with api_client(served.server, served.key) as client:
        yield client


@contextmanager
def canvas_page(browser: Browser, served: Served, key: str) -> Iterator[Page]:
    """A fresh page (fresh localStorage: an empty canvas) with ``key``."""
    with server_page(browser, served.server, viewport=(1440, 900), key=key) as page:
        page.goto("/")
        expect(page.locator("#key-dialog")).to_be_hidden()
        expect(page.locator('.node-type[data-type="text_to_image"]')).to_be_attached()
        yield page


# ---- helpers --------------------------------------------------------------------------------


def node(page: Page, node_type: str) -> Locator:
    return page.locator(f'#canvas .node[data-type="{node_type}"]')


def add_node(page: Page, node_type: str, x: float, y: float) -> Locator:
    """Drag a node type from the Nodes tab to (x, y) on the canvas."""
    page.click("#tab-nodes")
    before = node(page, node_type).count()
    page.locator(f'.node-type[data-type="{node_type}"]').drag_to(
        page.locator("#canvas"), target_position={"x": x, "y": y}
    )
    expect(node(page, node_type)).to_have_count(before + 1)
    return node(page, node_type).nth(before)


def preset_select(owner: Locator) -> Locator:
    return owner.locator('select[data-field="preset"]')


def options(owner: Locator) -> list[dict[str, str]]:
    return (
        preset_select(owner)
        .locator("option")
        .evaluate_all(
            "options => options.map(o => ({value: o.value, text: o.textContent, title: o.title,"
            " models: o.dataset.models || ''}))"
        )
    )


def option_text(owner: Locator, value: str) -> str:
    return next(o["text"] for o in options(owner) if o["value"] == value)


def label(preset: dict[str, Any]) -> str:
    """What the page shows for a preset: its id, marked when its models cannot run."""
    models = preset["models"]
    if models["runnable"]:
        return preset["id"]
    return f"{preset['id']} — {'partial' if models['state'] == 'partial' else 'not installed'}"


def t2i_default(http: httpx.Client) -> dict[str, Any]:
    return next(p for p in http.get("/v1/presets").json() if "t2i" in p["default_for"])


# ---- the tests ------------------------------------------------------------------------------


def test_preset_selects_mark_presets_that_are_not_installed(
    browser: Browser, served: Served, http: httpx.Client
) -> None:
    presets = {p["id"]: p for p in http.get("/v1/presets").json()}
    assert not presets[NEVER_PULLED]["models"]["runnable"]
    assert presets["openai-images"]["models"]["state"] == "remote"
    with canvas_page(browser, served, served.key) as page:
        t2i = add_node(page, "text_to_image", 300, 40)
        offered = options(t2i)
        # The first entry says which preset the default resolves to (marked as any other).
        assert offered[0]["value"] == ""
        assert offered[0]["text"] == f"default ({label(t2i_default(http))})"
        assert len(offered) > 3
        for option in offered[1:]:
            preset = presets[option["value"]]
            assert option["text"] == label(preset)
            if preset["models"]["runnable"]:
                assert option["models"] == ""
            else:  # marked, and its title says what is missing and what happens
                assert option["models"] == preset["models"]["state"]
                assert "A run with it fails" in option["title"]
                assert "missing model, ip_adapter, image_encoder" in option["title"]
        assert option_text(t2i, NEVER_PULLED) == f"{NEVER_PULLED} — not installed"
        assert option_text(t2i, "openai-images") == "openai-images"  # remote: never marked
        assert option_text(t2i, "comfyui") == "comfyui"

        # A chosen preset that is not installed: the notice, and the select is marked.
        preset_select(t2i).select_option(NEVER_PULLED)
        notice = t2i.locator(".node-models")
        expect(notice).to_be_visible()
        expect(notice.locator(".node-models-title")).to_have_text("Model not installed")
        expect(notice).to_contain_text(f"{NEVER_PULLED} is not on this server")
        # The hub was never asked for its sizes: the weights computed from the architecture.
        expect(notice.locator("button.model-download")).to_have_text(
            re.compile(r"^Download \(≈\d+\.\d GB\)$")
        )
        expect(preset_select(t2i)).to_have_class(re.compile(r"\bpreset-missing\b"))
        # A remote preset runs without local models: the node is normal again.
        preset_select(t2i).select_option("openai-images")
        expect(notice).to_be_hidden()
        expect(preset_select(t2i)).not_to_have_class(re.compile(r"\bpreset-missing\b"))

        # An empty preset is the default for the node's mode: image to video's cannot run here.
        video = add_node(page, "image_to_video", 700, 40)
        default = next(p for p in presets.values() if "i2v" in p["default_for"])
        assert not default["models"]["runnable"]
        assert options(video)[0]["text"] == f"default ({label(default)})"
        expect(video.locator(".node-models")).to_contain_text(f"{default['id']} (the default)")
        expect(video.locator(".node-models .model-download")).to_be_visible()


def test_the_train_dialogs_base_models_are_marked_as_the_nodes_are(
    browser: Browser, served: Served, http: httpx.Client
) -> None:
    """The other preset picker: a character's Train dialog (base model) marks the presets
    that cannot train here, with the reason, as the nodes' selects do."""
    presets = {p["id"]: p for p in http.get("/v1/presets").json() if p["backend"] == "diffusers"}
    assert not presets[NEVER_PULLED]["models"]["runnable"]
    made = add_character(http, "Tam", (90, 40, 160))
    try:
        with canvas_page(browser, served, served.key) as page:
            page.click("#tab-characters")
            page.locator('.card[data-name="Tam"] button.train').click()
            expect(page.locator("#train-dialog")).to_be_visible()
            select = page.locator("#train-preset")
            expect(select.locator("option")).to_have_count(len(presets))
            offered = select.locator("option").evaluate_all(
                "options => options.map(o => ({value: o.value, text: o.textContent,"
                " title: o.title, models: o.dataset.models || ''}))"
            )
            for option in offered:
                preset = presets[option["value"]]
                assert option["text"].startswith(label(preset)), option
                if preset["models"]["runnable"]:
                    assert option["models"] == "" and option["title"] == "", option
                else:
                    assert option["models"] == preset["models"]["state"], option
                    missing = ", ".join(preset["models"]["missing"])
                    assert f"missing {missing}. Training with it fails." in option["title"], option
            assert next(o for o in offered if o["value"] == NEVER_PULLED)["text"].startswith(
                f"{NEVER_PULLED} — not installed"
            )
            # Choosing one that cannot train says why under the select.
            select.select_option(NEVER_PULLED)
            note = page.locator("#train-preset-note")
            expect(note).to_be_visible()
            expect(note).to_contain_text("Training with it fails")
            expect(note).to_contain_text("castbook models pull")
    finally:
        http.delete(f"/v1/characters/{made['id']}")


def test_a_key_that_is_not_admin_is_told_who_may_download(
    browser: Browser, served: Served, http: httpx.Client
) -> None:
    tasks_before = len(http.get("/v1/tasks").json())
    with canvas_page(browser, served, served.key) as page:
        t2i = add_node(page, "text_to_image", 300, 40)
        preset_select(t2i).select_option(NEVER_PULLED)
        t2i.locator("button.model-download").click()
        expect(t2i.locator(".node-models-error")).to_have_text(ADMIN_ONLY)
        expect(t2i.locator(".model-pull")).to_have_count(0)
        expect(t2i.locator("button.model-download")).to_be_visible()  # nothing else changed
    assert len(http.get("/v1/tasks").json()) == tasks_before


def test_a_download_that_fails_shows_the_tasks_error(browser: Browser, served: Served) -> None:
    # The fake hub does not have this preset's repositories: the pull task fails.
    with canvas_page(browser, served, served.admin) as page:
        t2i = add_node(page, "text_to_image", 300, 40)
        preset_select(t2i).select_option(NEVER_PULLED)
        t2i.locator("button.model-download").click()
        error = t2i.locator(".node-models-error")
        expect(error).to_contain_text(re.compile(r"^Download failed: .+"), timeout=PULL_TIMEOUT_MS)
        expect(t2i.locator("button.model-download")).to_be_visible()  # to try again
        expect(page.locator("#canvas-status")).to_contain_text(f"Download of {NEVER_PULLED} failed")
        assert page.evaluate("localStorage.getItem('castbook.pulls')") is None
        task = next(
            t
            for t in httpx.get(
                f"{served.server.base}/v1/tasks",
                headers={"Authorization": f"Bearer {served.admin}"},
            ).json()
            if t["kind"] == "model_pull" and t["input"]["preset"] == NEVER_PULLED
        )
        assert task["status"] == "failed" and task["error"] in error.text_content()


def test_run_warns_before_a_run_that_would_fail_for_a_missing_model(
    browser: Browser, served: Served, http: httpx.Client
) -> None:
    tasks_before = len(http.get("/v1/tasks").json())
    with canvas_page(browser, served, served.key) as page:
        t2i = add_node(page, "text_to_image", 300, 40)
        t2i.locator('textarea[data-field="prompt"]').fill("a lighthouse at dusk")
        preset_select(t2i).select_option(NEVER_PULLED)
        dialog = page.locator("#canvas-confirm")

        # Cancel: nothing is submitted.
        page.click("#run-workflow")
        expect(dialog).to_be_visible()
        expect(page.locator("#canvas-confirm-text")).to_contain_text(
            f"text_to_image_1 will fail: {NEVER_PULLED} is not installed. Download it first?"
        )
        expect(page.locator("#canvas-confirm-ok")).to_have_text("Run anyway")
        page.click("#canvas-confirm-cancel")
        expect(dialog).to_be_hidden()
        expect(page.locator("#canvas-status")).to_contain_text("Not run: download the missing")
        expect(t2i.locator(".node-status")).to_be_hidden()
        assert len(http.get("/v1/tasks").json()) == tasks_before

        # Run anyway: the server's missing-model error lands on the node.
        page.click("#run-workflow")
        page.click("#canvas-confirm-ok")
        expect(t2i.locator(".node-status")).to_have_text("failed", timeout=RUN_TIMEOUT_MS)
        expect(t2i.locator(".node-error")).to_contain_text(NEVER_PULLED)
    assert len(http.get("/v1/tasks").json()) == tasks_before + 1


def test_download_a_preset_from_a_node_then_run_it(
    browser: Browser, served: Served, http: httpx.Client, tmp_path: Path
) -> None:
    assert http.get(f"/v1/models/{PULLED}").json()["state"] == "missing"
    assert t2i_default(http)["id"] == PULLED  # no text-to-image preset is installed yet
    served.hub.throttle(THROTTLE)
    try:
        with canvas_page(browser, served, served.admin) as page:
            chosen = add_node(page, "text_to_image", 40, 40)
            preset_select(chosen).select_option(PULLED)
            defaulted = add_node(page, "text_to_image", 360, 40)  # the default: the same preset
            video = add_node(page, "image_to_video", 680, 40)  # another preset: unchanged
            assert options(defaulted)[0]["text"] == f"default ({PULLED} — not installed)"
            expect(defaulted.locator(".node-models")).to_contain_text(f"{PULLED} (the default)")
            size = re.compile(r"^Download \(\d+\.\d MB\)$")  # `models list` asked the hub
            expect(chosen.locator("button.model-download")).to_have_text(size)
            expect(defaulted.locator("button.model-download")).to_have_text(size)

            # Cancel stops a download: the button is back (what arrived is kept).
            chosen.locator("button.model-download").click()
            expect(defaulted.locator(".model-pull")).to_be_visible()
            chosen.locator(".model-pull-cancel").click()
            expect(page.locator("#canvas-status")).to_have_text(
                f"Download of {PULLED} cancelled.", timeout=PULL_TIMEOUT_MS
            )
            expect(chosen.locator(".model-pull")).to_have_count(0)
            expect(defaulted.locator(".node-models")).to_contain_text("Model not installed")

            with slow_once_sent(served.hub, SD15_REPO, UNET):
                chosen.locator("button.model-download").click()
                # Live progress on every node that uses the preset: MB, percent, the file.
                for owner in (chosen, defaulted):
                    expect(owner.locator(".model-pull-figures")).to_have_text(
                        re.compile(r"^[1-9]\d* of \d+ MB · [1-9]\d* %$"),
                        timeout=PULL_TIMEOUT_MS,
                    )
            served.hub.throttle(SLOW)  # the rest (about 0.7 MB) now takes long: time to look
            expect(chosen.locator(".model-pull-message")).to_contain_text(
                re.compile(r"\(file \d+ of \d+: [^)]+\)")
            )
            expect(chosen.locator(".model-pull-cancel")).to_have_text("Cancel")
            expect(video.locator(".model-pull")).to_have_count(0)
            expect(video.locator("button.model-download")).to_be_visible()
            screenshot(page, SCREENSHOT, tmp_path, clip=clip(chosen, defaulted, video))

            # A reload picks the download up again (the canvas and the task id are kept).
            page.wait_for_function(
                "preset => (localStorage.getItem('castbook.canvas') || '').includes(preset)"
                " && (localStorage.getItem('castbook.pulls') || '').includes(preset)",
                arg=PULLED,
            )
            page.reload()
            expect(node(page, "text_to_image")).to_have_count(2)
            expect(chosen.locator(".model-pull-figures")).to_have_text(
                re.compile(r"^[1-9]\d* of \d+ MB · [1-9]\d* %$")
            )
            served.hub.throttle(None)

            # Done: both nodes are normal, the select unmarked, the server has the models.
            for owner in (chosen, defaulted):
                expect(owner.locator(".node-models")).to_be_hidden(timeout=PULL_TIMEOUT_MS)
                expect(preset_select(owner)).not_to_have_class(re.compile(r"\bpreset-missing\b"))
            assert option_text(chosen, PULLED) == PULLED
            assert options(defaulted)[0]["text"] == f"default ({PULLED})"
            expect(page.locator("#canvas-status")).to_have_text(
                f"Downloaded the models of {PULLED}."
            )
            assert page.evaluate("localStorage.getItem('castbook.pulls')") is None
            report = http.get(f"/v1/models/{PULLED}").json()
            assert report["state"] == "installed" and report["runnable"], report
            # Image to video's default shares the downloaded model: its mark follows.
            presets = http.get("/v1/presets").json()
            i2v = next(p for p in presets if "i2v" in p["default_for"])
            assert options(video)[0]["text"] == f"default ({label(i2v)})"

            # And it runs: no warning, a picture.
            for other in (video, defaulted):
                other.locator(".node-remove").click()
            expect(node(page, "text_to_image")).to_have_count(1)
            chosen.locator('textarea[data-field="prompt"]').fill("a red kite over the sea")
            chosen.locator("details.node-more summary").click()
            for field, value in (
                ("width", "256"),
                ("height", "256"),
                ("steps", "2"),
                ("seed", "7"),
            ):
                chosen.locator(f'input[data-field="{field}"]').fill(value)
            page.click("#run-workflow")
            expect(chosen.locator(".node-status")).to_have_text("done", timeout=RUN_TIMEOUT_MS)
            expect(page.locator("#canvas-confirm")).to_be_hidden()
            expect(chosen.locator(".node-result img")).to_have_attribute("src", BLOB_URL)
    finally:
        served.hub.throttle(None)


def clip(*nodes: Locator) -> dict[str, float]:
    """The part of the page around ``nodes`` (for the docs screenshot)."""
    boxes = [n.bounding_box() for n in nodes]
    assert all(boxes)
    left = min(b["x"] for b in boxes if b) - 20
    top = min(b["y"] for b in boxes if b) - 20
    right = max(b["x"] + b["width"] for b in boxes if b) + 20
    bottom = max(b["y"] + b["height"] for b in boxes if b) + 20
    return {"x": left, "y": top, "width": right - left, "height": bottom - top}
