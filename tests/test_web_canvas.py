"""The workflow canvas in a real headless Chromium: nodes, wires, pan and zoom, save and load,
and a real run on the tiny SD 1.5 model with live progress and scored results.

Same set-up as tests/test_web_ui.py (Debian's ``chromium`` driven by Playwright, skipped
without it except under ``CI=true``, never a browser download, only 127.0.0.1 reachable),
against one real ``castbook serve`` for the module whose home has the tiny presets
(tests/support/api.py's ``write_presets``: ``tiny`` takes reference images).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support.api import write_presets
from tests.support.server import Server
from tests.support.web import (
    BLOB_URL,
    api_client,
    castbook_server,
    png_bytes,
    require_browser,
    screenshot,
    server_page,
)

ROOT = Path(__file__).resolve().parents[1]
CANVAS_SCREENSHOT = ROOT / "docs" / "web-canvas.png"
RESULTS_SCREENSHOT = ROOT / "docs" / "web-results.png"

require_browser()

from playwright.sync_api import Browser, Locator, Page, expect  # noqa: E402

from tests.support.canvas import (  # noqa: E402
    RUN_TIMEOUT_MS,
    add_character,
    add_from_nodes_tab,
    assert_near,
    centre,
    drag_wire,
    drop_card,
    node,
    port,
    wire,
    wire_ends,
    wires,
)

# ---- one server (with the tiny presets) and one browser for the module ----------------------


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path], tiny_svd: Path
) -> Iterator[tuple[Server, str]]:
    home = tmp_path_factory.mktemp("web-canvas") / "home"
    write_presets(home, tiny_models)
    with (home / "presets.toml").open("a") as presets:  # a video model, and a missing one
        presets.write(
            f'\n[presets.tiny-svd]\nbackend = "diffusers"\nmodel = "{tiny_svd}"\n'
            'modes = ["i2v"]\ndefaults = { width = 256, height = 256, steps = 2 }\n'
            'options = { family = "svd" }\n'
            '\n[presets.gone]\nbackend = "diffusers"\nmodel = "/nonexistent/model"\n'
            'modes = ["i2v"]\noptions = { family = "svd" }\n'
        )
    with castbook_server(home) as served:
        yield served


@pytest.fixture
def http(served: tuple[Server, str]) -> Iterator[httpx.Client]:
    with api_client(*served) as client:
        yield client


@pytest.fixture
def page(browser: Browser, served: tuple[Server, str], http: httpx.Client) -> Iterator[Page]:
    # Each test starts from an empty library and no saved workflows.
    for character in http.get("/v1/characters").json():
        http.delete(f"/v1/characters/{character['id']}")
    for saved in http.get("/v1/workflows").json():
        http.delete(f"/v1/workflows/{saved['id']}")
    with server_page(browser, served[0], viewport=(1440, 900), key=served[1]) as page:
        page.goto("/")
        expect(page.locator("#key-dialog")).to_be_hidden()
        yield page


# ---- helpers --------------------------------------------------------------------------------


def png_image(color: tuple[int, int, int]) -> Image.Image:
    return Image.open(io.BytesIO(png_bytes(color))).convert("RGB")


def canvas_point(page: Page, x: float, y: float) -> tuple[float, float]:
    box = page.locator("#canvas").bounding_box()
    assert box is not None
    return box["x"] + x, box["y"] + y


def build_batch_and_eval(page: Page, name: str) -> tuple[Locator, Locator, Locator]:
    """A character, a batch render and a consistency eval, wired as in the docs."""
    character = drop_card(page, name, 30, 60)
    batch = add_from_nodes_tab(page, "batch_render", 320, 30)
    evaluation = add_from_nodes_tab(page, "consistency_eval", 650, 150)
    wire(page, character, "character", batch, "characters")
    wire(page, batch, "images", evaluation, "images")
    wire(page, character, "character", evaluation, "character")
    expect(wires(page)).to_have_count(3)
    return character, batch, evaluation


def world_position(element: Locator) -> tuple[float, float]:
    return element.evaluate("e => [e.offsetLeft, e.offsetTop]")


# ---- the tests ------------------------------------------------------------------------------


def test_a_character_batch_render_and_eval_run_with_scored_results(
    page: Page, http: httpx.Client, tmp_path: Path
) -> None:
    expect(page.locator("#canvas-empty")).to_be_visible()

    # A character made in the New character form, with an uploaded reference image.
    page.click("#new-character")
    page.fill("#field-name", "Mira")
    page.fill("#field-style", "watercolor, soft light")
    page.set_input_files(
        "#field-image", files=[{"name": "mira.png", "mimeType": "image/png", "buffer": png_bytes()}]
    )
    page.click("#save-character")
    expect(page.locator(".card", has_text="Mira")).to_be_visible()

    # Its card dropped on the canvas: a character node with its picture and style prompt.
    character = drop_card(page, "Mira", 30, 300)
    expect(page.locator("#canvas-empty")).to_be_hidden()
    expect(character.locator(".node-name")).to_have_text("Mira")
    expect(character.locator(".node-style")).to_have_text("watercolor, soft light")
    expect(character.locator("img.node-thumb")).to_have_attribute("src", BLOB_URL)

    batch = add_from_nodes_tab(page, "batch_render", 320, 30)
    evaluation = add_from_nodes_tab(page, "consistency_eval", 650, 300)
    wire(page, character, "character", batch, "characters")
    wire(page, batch, "images", evaluation, "images")
    wire(page, character, "character", evaluation, "character")
    expect(wires(page)).to_have_count(3)

    batch.locator('textarea[data-field="prompts"]').fill("a knight at dawn\nthe knight at dusk")
    batch.locator('select[data-field="preset"]').select_option("tiny")
    # The preset select offers the presets that do text-to-image, from /v1/presets.
    offered = batch.locator('select[data-field="preset"] option').evaluate_all(
        "options => options.map(o => o.value)"
    )
    presets = http.get("/v1/presets").json()
    assert offered == ["", *(p["id"] for p in presets if "t2i" in p["modes"])]
    assert len(offered) < len(presets) + 1  # some preset does not do text-to-image
    screenshot(page, CANVAS_SCREENSHOT, tmp_path)

    page.click("#run-workflow")
    expect(page.locator("#cancel-run")).to_be_visible()
    # Live progress from the event stream: the batch render says "running a/b".
    expect(batch.locator(".node-status")).to_have_text(
        re.compile(r"^running \d+/\d+$"), timeout=RUN_TIMEOUT_MS
    )
    expect(evaluation.locator(".node-status")).to_have_text("done", timeout=RUN_TIMEOUT_MS)
    expect(batch.locator(".node-status")).to_have_text("done")
    expect(character.locator(".node-status")).to_have_text("done")
    expect(page.locator("#cancel-run")).to_be_hidden()
    expect(page.locator("#canvas-status")).to_contain_text("Done")

    # The results panel: both variants, scored 0-100, exactly one best, loaded from blobs.
    results = page.locator("#results-panel")
    expect(results).to_be_visible()
    figures = results.locator("figure.result")
    expect(figures).to_have_count(2)
    expect(results.locator("figure.result.best")).to_have_count(1)
    expect(results.locator("figure.result.best .score")).to_contain_text("★")
    for index in range(2):
        image = figures.nth(index).locator("img")
        expect(image).to_have_attribute("src", BLOB_URL)
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
        )
        score = float(figures.nth(index).locator(".score").inner_text().lstrip("★ "))
        assert 0 <= score <= 100
        # Its alt text names the node, the character, the prompt sent and the score.
        sent = figures.nth(index).locator(".result-prompt").inner_text().removeprefix("Prompt ")
        assert "knight at d" in sent and "watercolor, soft light" in sent, sent
        assert image.get_attribute("alt") == (
            f"Result of batch_render_1, Mira, “{sent}”, consistency {score:.1f} of 100"
        )
    # On the nodes: the eval's scored thumbnails, its best starred.
    expect(evaluation.locator(".node-result")).to_have_count(2)
    expect(evaluation.locator(".node-result.best")).to_have_count(1)
    expect(batch.locator(".node-result")).to_have_count(2)

    # The nodes' thumbnails say the same, each with its own node's score (the eval: the
    # character it scored against).
    def unscored(alts: list[str]) -> set[str]:
        return {re.sub(r", consistency \d+\.\d of 100$", "", alt) for alt in alts}

    panel_alts = figures.locator("img").evaluate_all("is => is.map((i) => i.alt)")
    batch_alts = batch.locator(".node-result img").evaluate_all("is => is.map((i) => i.alt)")
    assert all(re.search(r", consistency \d+\.\d of 100$", alt) for alt in batch_alts)
    assert unscored(batch_alts) == unscored(panel_alts), (batch_alts, panel_alts)
    for alt in evaluation.locator(".node-result img").evaluate_all("is => is.map((i) => i.alt)"):
        assert re.fullmatch(r"Result of consistency_eval_1, Mira, consistency \d+\.\d of 100", alt)
    page.click("#zoom-fit")  # the results panel took room: show the whole graph
    screenshot(page, RESULTS_SCREENSHOT, tmp_path)

    # The character is deleted: its node says so, and a run is refused on that node.
    page.click("#tab-characters")
    page.locator(".card", has_text="Mira").locator("button.delete").click()
    page.click("#confirm-delete")
    expect(page.locator(".card")).to_have_count(0)
    expect(character).to_have_class(re.compile(r"\bmissing\b"))
    expect(character.locator(".node-missing")).to_be_visible()
    page.click("#run-workflow")
    expect(character.locator('.field-error[data-error-for="character"]')).to_contain_text(
        "no character"
    )
    expect(page.locator("#canvas-status")).to_contain_text("Not run")


def wire_middle(page: Page, index: int = 0) -> tuple[float, float]:
    return (
        page.locator("#wires .wire .wire-line")
        .nth(index)
        .evaluate(
            """path => {
            const m = path.getScreenCTM();
            const p = path.getPointAtLength(path.getTotalLength() / 2);
            return [m.a * p.x + m.c * p.y + m.e, m.b * p.x + m.d * p.y + m.f];
        }"""
        )
    )


def test_wires_follow_the_type_rules_and_delete_removes_wires_and_nodes(
    page: Page, http: httpx.Client
) -> None:
    add_character(http, "Ada", (30, 120, 200))
    add_character(http, "Bo", (200, 160, 30))
    page.reload()
    expect(page.locator(".card")).to_have_count(2)
    ada = drop_card(page, "Ada", 20, 20)
    bo = drop_card(page, "Bo", 20, 200)
    batch = add_from_nodes_tab(page, "batch_render", 300, 20)
    evaluation = add_from_nodes_tab(page, "consistency_eval", 620, 20)
    output = add_from_nodes_tab(page, "output", 620, 200)

    # While a wire is dragged, ports that cannot take it are dimmed, the others lit.
    drag_wire(page, port(batch, "out", "scores"), port(evaluation, "in", "images"), release=False)
    expect(evaluation.locator('.port-row[data-port="images"]')).to_have_class(
        re.compile(r"\bport-refused\b")
    )
    expect(evaluation.locator('.port-row[data-port="character"]')).to_have_class(
        re.compile(r"\bport-refused\b")
    )
    expect(output.locator('.port-row[data-port="value"]')).to_have_class(re.compile(r"\bport-ok\b"))
    page.mouse.up()
    expect(wires(page)).to_have_count(0)
    expect(page.locator("#canvas-status")).to_contain_text("images takes images, character, image")
    expect(page.locator(".port-row.port-refused")).to_have_count(0)

    # A many port takes several wires; a single port's new wire replaces its old one.
    wire(page, ada, "character", batch, "characters")
    wire(page, bo, "character", batch, "characters")
    wire(page, batch, "images", evaluation, "images")
    expect(wires(page)).to_have_count(3)
    wire(page, batch, "best", evaluation, "images")
    expect(wires(page)).to_have_count(3)
    expect(page.locator('#wires .wire[data-to="consistency_eval_1"]')).to_have_attribute(
        "data-output", "best"
    )
    # A node cannot feed itself (longer cycles: test_cycles_are_refused).
    wire(page, evaluation, "best", evaluation, "images")
    expect(page.locator("#canvas-status")).to_contain_text("cannot take its own output")
    expect(wires(page)).to_have_count(3)

    # Click a wire to select it; Delete removes it.
    x, y = wire_middle(page, 0)
    page.mouse.click(x, y)
    selected = page.locator("#wires .wire.selected")
    expect(selected).to_have_count(1)
    removed = (selected.get_attribute("data-from"), selected.get_attribute("data-to"))
    page.keyboard.press("Delete")
    expect(wires(page)).to_have_count(2)
    left = {(w.get_attribute("data-from"), w.get_attribute("data-to")) for w in wires(page).all()}
    assert removed not in left

    # Delete a node: it goes, and so do its wires.
    batch.locator(".node-header").click()
    expect(batch).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("Delete")
    expect(node(page, "batch_render")).to_have_count(0)
    expect(wires(page)).to_have_count(0)
    expect(page.locator("#canvas .node")).to_have_count(4)


def test_cycles_are_refused(page: Page) -> None:
    redraw = add_from_nodes_tab(page, "image_to_image", 20, 20)
    evaluation = add_from_nodes_tab(page, "consistency_eval", 400, 20)
    wire(page, redraw, "images", evaluation, "images")
    expect(wires(page)).to_have_count(1)
    wire(page, evaluation, "best", redraw, "image")
    expect(page.locator("#canvas-status")).to_contain_text("cycle")
    expect(wires(page)).to_have_count(1)


def test_pan_and_zoom_move_the_view_and_drops_land_under_the_mouse(page: Page) -> None:
    # Keyboard: a node type selected in the Nodes tab and Enter adds it mid-canvas.
    page.click("#tab-nodes")
    page.locator('.node-type[data-type="output"]').focus()
    page.keyboard.press("Enter")
    output = node(page, "output")
    expect(output).to_have_count(1)
    canvas = page.locator("#canvas").bounding_box()
    box = output.bounding_box()
    assert canvas and box
    assert canvas["x"] < box["x"] < canvas["x"] + canvas["width"] - box["width"]
    assert canvas["y"] < box["y"] < canvas["y"] + canvas["height"] - box["height"]
    output.locator(".node-header").click()
    page.keyboard.press("Delete")

    evaluation = add_from_nodes_tab(page, "consistency_eval", 150, 120)
    output = add_from_nodes_tab(page, "output", 500, 300)
    wire(page, evaluation, "scores", output, "value")
    before = evaluation.bounding_box()
    assert before

    # Pan: drag with the middle button (a left drag on the empty canvas selects, see
    # tests/test_web_canvas_editing.py); nodes and wires move with it.
    page.mouse.move(*canvas_point(page, 700, 650))
    page.mouse.down(button="middle")
    page.mouse.move(*canvas_point(page, 850, 700), steps=6)
    page.mouse.up(button="middle")
    after = evaluation.bounding_box()
    assert after
    assert_near((after["x"] - before["x"], after["y"] - before["y"]), (150, 50))
    start, end = wire_ends(page)
    assert_near(start, centre(port(evaluation, "out", "scores")))
    assert_near(end, centre(port(output, "in", "value")))

    # Zoom with the wheel around the cursor: the point under it stays put.
    cursor = canvas_point(page, 600, 500)
    page.mouse.move(*cursor)
    page.mouse.wheel(0, -400)
    page.wait_for_function("document.querySelector('#canvas').dataset.zoom > 1.5")
    zoom = float(page.locator("#canvas").get_attribute("data-zoom"))
    expect(page.locator("#zoom-reset")).to_have_text(f"{round(zoom * 100)}%")
    zoomed = evaluation.bounding_box()
    assert zoomed
    assert abs(zoomed["width"] - after["width"] * zoom) < 2
    assert_near(
        (zoomed["x"] - cursor[0], zoomed["y"] - cursor[1]),
        ((after["x"] - cursor[0]) * zoom, (after["y"] - cursor[1]) * zoom),
    )
    start, end = wire_ends(page)
    assert_near(start, centre(port(evaluation, "out", "scores")))
    assert_near(end, centre(port(output, "in", "value")))

    # Zoomed out too: a node dropped from the Nodes tab lands with its corner at the mouse.
    page.click("#zoom-out")
    page.click("#zoom-out")
    page.click("#zoom-out")
    page.click("#zoom-out")
    zoom = float(page.locator("#canvas").get_attribute("data-zoom"))
    assert zoom < 1
    dropped = add_from_nodes_tab(page, "text_to_image", 420, 90)
    landed = dropped.bounding_box()
    assert landed
    assert_near((landed["x"], landed["y"]), canvas_point(page, 420, 90))
    assert abs(landed["width"] - 260 * zoom) < 2

    # Fit shows every node; 100% goes back.
    page.click("#zoom-fit")
    canvas = page.locator("#canvas").bounding_box()
    assert canvas
    for element in page.locator("#canvas .node").all():
        shown = element.bounding_box()
        assert shown
        assert (
            canvas["x"] <= shown["x"]
            and shown["x"] + shown["width"] <= canvas["x"] + canvas["width"]
        )
        assert (
            canvas["y"] <= shown["y"]
            and shown["y"] + shown["height"] <= canvas["y"] + canvas["height"]
        )
    page.click("#zoom-reset")
    expect(page.locator("#zoom-reset")).to_have_text("100%")


def test_save_clear_load_restores_nodes_wires_and_positions(page: Page, http: httpx.Client) -> None:
    add_character(http, "Ada", (30, 120, 200))
    page.reload()
    character, batch, evaluation = build_batch_and_eval(page, "Ada")
    batch.locator('textarea[data-field="prompts"]').fill("at the harbour\nin the rain")
    batch.locator('select[data-field="preset"]').select_option("tiny")
    batch.locator("details.node-more summary").click()
    batch.locator('input[data-field="steps"]').fill("3")
    # Move the eval node, so the saved layout is not just where it was dropped.
    header = centre(evaluation.locator(".node-title"))
    page.mouse.move(*header)
    page.mouse.down()
    page.mouse.move(header[0] + 40, header[1] + 200, steps=5)
    page.mouse.up()
    nodes = page.locator("#canvas .node")
    positions = {n.get_attribute("data-node-id"): world_position(n) for n in nodes.all()}
    links = sorted(
        (w.get_attribute("data-from"), w.get_attribute("data-output"), w.get_attribute("data-to"))
        for w in wires(page).all()
    )

    page.click("#save-workflow")
    page.fill("#workflow-name", "Harbour")
    page.click("#save-confirm")
    expect(page.locator("#save-dialog")).to_be_hidden()
    expect(page.locator("#canvas-status")).to_contain_text("Saved as “Harbour”")
    expect(page.locator("#workflow-title")).to_have_text("Harbour")
    # The same name again: refused with a message, then replaced on request.
    page.click("#save-workflow")
    expect(page.locator("#workflow-name")).to_have_value("Harbour")
    page.click("#save-confirm")
    expect(page.locator("#save-error")).to_contain_text("already exists")
    page.click("#save-replace")
    expect(page.locator("#save-dialog")).to_be_hidden()
    listed = http.get("/v1/workflows").json()
    assert [w["name"] for w in listed] == ["Harbour"]
    stored = http.get(f"/v1/workflows/{listed[0]['id']}").json()["graph"]
    assert stored["layout"] == {k: {"x": v[0], "y": v[1]} for k, v in positions.items()}
    assert stored["nodes"]["batch_render_1"]["inputs"]["steps"] == 3

    page.click("#clear-canvas")
    page.click("#canvas-confirm-ok")
    expect(nodes).to_have_count(0)
    expect(wires(page)).to_have_count(0)
    expect(page.locator("#canvas-empty")).to_be_visible()

    page.click("#load-workflow")
    row = page.locator(".workflow-row", has_text="Harbour")
    row.locator(".workflow-load").click()
    expect(page.locator("#load-dialog")).to_be_hidden()
    expect(nodes).to_have_count(3)
    expect(wires(page)).to_have_count(3)
    assert {n.get_attribute("data-node-id"): world_position(n) for n in nodes.all()} == positions
    assert (
        sorted(
            (
                w.get_attribute("data-from"),
                w.get_attribute("data-output"),
                w.get_attribute("data-to"),
            )
            for w in wires(page).all()
        )
        == links
    )
    expect(batch.locator('textarea[data-field="prompts"]')).to_have_value(
        "at the harbour\nin the rain"
    )
    expect(batch.locator('select[data-field="preset"]')).to_have_value("tiny")
    expect(batch.locator('input[data-field="steps"]')).to_have_value("3")
    expect(character.locator(".node-name")).to_have_text("Ada")
    expect(page.locator("#workflow-title")).to_have_text("Harbour")

    # Delete the saved workflow from the Load list.
    page.click("#load-workflow")
    page.locator(".workflow-row", has_text="Harbour").locator(".workflow-delete").click()
    page.click("#canvas-confirm-ok")
    expect(page.locator(".workflow-row")).to_have_count(0)
    expect(page.locator("#load-empty")).to_be_visible()
    assert http.get("/v1/workflows").json() == []


def test_problems_show_on_the_node_and_field_they_name(page: Page) -> None:
    runs: list[str] = []
    page.on("request", lambda r: runs.append(r.url) if "/v1/workflows/run" in r.url else None)
    batch = add_from_nodes_tab(page, "batch_render", 20, 20)
    evaluation = add_from_nodes_tab(page, "consistency_eval", 340, 20)

    # The catalogue's ranges are checked as you type, and block Run.
    batch.locator("details.node-more summary").click()
    steps = batch.locator('input[data-field="steps"]')
    steps.fill("60")
    expect(batch.locator('.field-error[data-error-for="steps"]')).to_have_text(
        "Steps must be between 1 and 50, got 60"
    )
    expect(steps).to_have_class(re.compile(r"\bfield-invalid\b"))
    page.click("#run-workflow")
    expect(page.locator("#canvas-status")).to_contain_text("Fix 2 fields")
    expect(batch.locator('.field-error[data-error-for="prompts"]')).to_contain_text("required")
    assert runs == []

    # What only the server checks (here: inputs left unwired) comes back on the right node.
    steps.fill("")
    expect(batch.locator('.field-error[data-error-for="steps"]')).to_be_hidden()
    batch.locator('textarea[data-field="prompts"]').fill("a lighthouse")
    page.click("#run-workflow")
    expect(page.locator("#canvas-status")).to_contain_text("marked on the nodes")
    assert len(runs) == 1
    expect(batch.locator('.field-error[data-error-for="characters"]')).to_contain_text("required")
    expect(evaluation.locator('.field-error[data-error-for="images"]')).to_contain_text("required")
    expect(evaluation.locator('.field-error[data-error-for="character"]')).to_contain_text(
        "required"
    )
    expect(batch).to_have_class(re.compile(r"\bhas-error\b"))
    expect(evaluation.locator('.port-row[data-port="images"]')).to_have_class(
        re.compile(r"\bport-invalid\b")
    )
    expect(page.locator("#run-workflow")).to_be_enabled()


def test_cancel_stops_a_running_workflow(page: Page) -> None:
    render = add_from_nodes_tab(page, "text_to_image", 40, 40)
    render.locator('textarea[data-field="prompt"]').fill("a lighthouse at night")
    render.locator('select[data-field="preset"]').select_option("tiny-slow")  # 50 steps
    page.click("#run-workflow")
    expect(render.locator(".node-status")).to_have_text(
        re.compile(r"^running [1-9]\d*/50$"), timeout=RUN_TIMEOUT_MS
    )
    expect(page.locator("#run-workflow")).to_be_disabled()
    page.click("#cancel-run")
    expect(render.locator(".node-status")).to_have_text("cancelled", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#canvas-status")).to_have_text("Cancelled.")
    expect(page.locator("#cancel-run")).to_be_hidden()
    expect(page.locator("#run-workflow")).to_be_enabled()


def test_a_failure_shows_on_its_node_and_videos_play_in_the_results(
    page: Page, http: httpx.Client
) -> None:
    """Both for real: preset ``gone`` names a model folder that does not exist (the node
    fails when it loads), ``tiny-svd`` is a tiny Stable Video Diffusion model."""
    add_character(http, "Ada", (30, 120, 200))
    page.reload()
    character = drop_card(page, "Ada", 30, 60)
    video = add_from_nodes_tab(page, "image_to_video", 360, 40)
    wire(page, character, "image", video, "image")
    presets = video.locator('select[data-field="preset"]')
    offered = presets.locator("option").evaluate_all("options => options.map(o => o.value)")
    assert {"gone", "tiny-svd"} <= set(offered) and "tiny" not in offered  # i2v presets only
    presets.select_option("gone")

    page.click("#run-workflow")
    # Run warns first (its model folder is missing); Run anyway: the server says why.
    expect(page.locator("#canvas-confirm-text")).to_contain_text("gone's local folder is missing")
    page.click("#canvas-confirm-ok")
    expect(video.locator(".node-status")).to_have_text("failed", timeout=RUN_TIMEOUT_MS)
    expect(video.locator(".node-error")).to_contain_text("gone")
    expect(character.locator(".node-status")).to_have_text("done")  # it ran before the failure
    expect(page.locator("#canvas-status")).to_contain_text("Failed at image_to_video_1")
    expect(page.locator("#results-panel")).to_be_hidden()

    presets.select_option("tiny-svd")
    video.locator("details.node-more summary").click()
    video.locator('input[data-field="num_frames"]').fill("3")
    page.click("#run-workflow")
    expect(video.locator(".node-status")).to_have_text("done", timeout=RUN_TIMEOUT_MS)
    expect(video.locator(".node-error")).to_be_hidden()
    clip = page.locator("#results-panel figure.result[data-kind='video'] video")
    expect(clip).to_have_attribute("src", BLOB_URL)
    assert clip.get_attribute("controls") is not None
    page.wait_for_function("v => v.readyState >= 1 && v.duration > 0", arg=clip.element_handle())
    expect(video.locator(".node-results video")).to_have_attribute("src", BLOB_URL)


def test_a_character_node_picks_its_reference_image_and_survives_a_reload(
    page: Page, http: httpx.Client
) -> None:
    ada = add_character(http, "Ada", (30, 120, 200))
    second = http.post(
        f"/v1/characters/{ada['id']}/images",
        files=[("image", ("side.png", png_bytes((90, 200, 90)), "image/png"))],
    )
    assert second.status_code == 201, second.text
    other = next(
        i["sha256"] for i in second.json()["images"] if i["sha256"] != ada["primary_image"]
    )
    page.reload()
    character = drop_card(page, "Ada", 40, 40)
    choices = character.locator(".reference-choice")
    expect(choices).to_have_count(2)
    expect(
        character.locator(f'.reference-choice[data-sha="{ada["primary_image"]}"]')
    ).to_have_attribute("aria-pressed", "true")
    character.locator(f'.reference-choice[data-sha="{other}"]').click()
    expect(character.locator(f'.reference-choice[data-sha="{other}"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    # The canvas is kept in the browser as it changes: the graph names the chosen reference.
    page.wait_for_function(
        """sha => {
            const draft = JSON.parse(localStorage.getItem("castbook.canvas") || "null");
            return draft && draft.graph.nodes.character_1.inputs.reference === sha;
        }""",
        arg=other,
    )
    page.reload()
    restored = node(page, "character")
    expect(restored).to_have_count(1)
    expect(restored.locator(".node-name")).to_have_text("Ada")
    expect(restored.locator(f'.reference-choice[data-sha="{other}"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    # A character node from the Nodes tab asks which character it is.
    chooser = add_from_nodes_tab(page, "character", 320, 40)
    chooser.locator("select.node-character-select").select_option(label="Ada")
    expect(chooser.locator(".node-name")).to_have_text("Ada")
    expect(chooser.locator("img.node-thumb")).to_have_attribute("src", BLOB_URL)


def test_a_rerun_reuses_unchanged_seeded_nodes(page: Page, http: httpx.Client) -> None:
    add_character(http, "Ada", (30, 120, 200))
    page.reload()
    character = drop_card(page, "Ada", 30, 60)
    render = add_from_nodes_tab(page, "text_to_image", 360, 40)
    wire(page, character, "character", render, "characters")
    render.locator('textarea[data-field="prompt"]').fill("reading in a library")
    render.locator('select[data-field="preset"]').select_option("tiny")
    render.locator("details.node-more summary").click()
    render.locator('input[data-field="seed"]').fill("7")

    page.click("#run-workflow")
    expect(render.locator(".node-status")).to_have_text("done", timeout=RUN_TIMEOUT_MS)
    # Nothing changed: the picture is taken from the first run, and said so.
    page.click("#run-workflow")
    expect(render.locator(".node-status")).to_have_text("cached", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#results-panel figure.result")).to_have_count(1)
    # The prompt its model was given, the character's style injected (also when re-used).
    expect(page.locator("#results-panel .result-prompt")).to_have_text(
        "Prompt ink and watercolor, reading in a library"
    )
    tasks = http.get("/v1/tasks", params={"limit": 2}).json()
    assert tasks[0]["result"]["nodes"]["text_to_image_1"]["cached_from"] == tasks[1]["id"]
    assert [o["id"] for o in tasks[0]["outputs"]] == [o["id"] for o in tasks[1]["outputs"]]
    # Unticked, every node renders again.
    page.uncheck("#reuse-results")
    page.click("#run-workflow")
    expect(render.locator(".node-status")).to_have_text("done", timeout=RUN_TIMEOUT_MS)
    latest = http.get("/v1/tasks", params={"limit": 1}).json()[0]
    assert "cached_from" not in latest["result"]["nodes"]["text_to_image_1"]


def test_an_image_is_the_evals_reference_and_results_show_the_prompts_sent(
    page: Page, http: httpx.Client
) -> None:
    """Image → Batch Render → Consistency Eval, as Pixify draws it: the eval scores against
    a plain Image node; each result shows the prompt its model was given (the character's
    style injected) and the negative prompt."""
    reference = add_character(http, "Ada", (30, 120, 200))["primary_image"]
    patched = http.patch("/v1/characters/Ada", json={"negative_prompt": "blurry"})
    assert patched.status_code == 200, patched.text
    page.reload()
    character = drop_card(page, "Ada", 30, 60)
    photo = add_from_nodes_tab(page, "image", 30, 360)
    photo.locator('input[data-field="image"]').fill(reference)
    batch = add_from_nodes_tab(page, "batch_render", 320, 30)
    evaluation = add_from_nodes_tab(page, "consistency_eval", 650, 150)
    wire(page, character, "character", batch, "characters")
    wire(page, batch, "images", evaluation, "images")
    wire(page, photo, "image", evaluation, "character")  # an image as the reference
    expect(wires(page)).to_have_count(3)
    batch.locator('textarea[data-field="prompts"]').fill("a knight at dawn")
    batch.locator('select[data-field="preset"]').select_option("tiny")

    page.click("#run-workflow")
    expect(evaluation.locator(".node-status")).to_have_text("done", timeout=RUN_TIMEOUT_MS)
    figure = page.locator("#results-panel figure.result")
    expect(figure).to_have_count(1)
    expect(figure.locator(".score")).to_contain_text("★")
    expect(figure.locator(".result-prompt")).to_have_text(
        "Prompt ink and watercolor, a knight at dawn"
    )
    expect(figure.locator(".result-negative")).to_have_text("Negative blurry")
    task = http.get("/v1/tasks", params={"limit": 1}).json()[0]
    (score,) = task["result"]["nodes"]["consistency_eval_1"]["scores"]
    assert score["reference"] == reference and "character" not in score


def test_a_result_becomes_an_image_node_for_image_to_image(page: Page, http: httpx.Client) -> None:
    render = add_from_nodes_tab(page, "text_to_image", 40, 40)
    render.locator('textarea[data-field="prompt"]').fill("a lighthouse")
    render.locator('select[data-field="preset"]').select_option("tiny-plain")
    page.click("#run-workflow")
    expect(render.locator(".node-status")).to_have_text("done", timeout=RUN_TIMEOUT_MS)
    figure = page.locator("#results-panel figure.result").first
    sha = figure.get_attribute("data-sha")
    assert sha and len(sha) == 64

    # Dragged from the results panel onto the canvas: an Image node holding that picture.
    figure.drag_to(page.locator("#canvas"), target_position={"x": 120, "y": 420})
    expect(node(page, "image")).to_have_count(1)
    image = node(page, "image").first
    expect(image.locator('input[data-field="image"]')).to_have_value(sha)
    preview = image.locator("img.image-preview")
    expect(preview).to_have_attribute("src", BLOB_URL)
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=preview.element_handle()
    )
    # Its Use button does the same at the canvas's centre.
    figure.hover()
    figure.locator("button.result-use").click()
    expect(node(page, "image")).to_have_count(2)
    second = node(page, "image").last
    expect(second.locator('input[data-field="image"]')).to_have_value(sha)
    second.locator(".node-remove").click()
    expect(node(page, "image")).to_have_count(1)

    # Wired into image-to-image, it is the picture that gets redrawn.
    redraw = add_from_nodes_tab(page, "image_to_image", 420, 360)
    wire(page, image, "image", redraw, "image")
    redraw.locator('textarea[data-field="prompt"]').fill("at night")
    redraw.locator('select[data-field="preset"]').select_option("tiny-plain")
    page.click("#run-workflow")
    expect(redraw.locator(".node-status")).to_have_text("done", timeout=RUN_TIMEOUT_MS)
    task = http.get("/v1/tasks", params={"limit": 1}).json()[0]
    assert task["input"]["graph"]["nodes"]["image_1"]["inputs"]["image"] == sha
    (redrawn,) = task["result"]["nodes"]["image_to_image_1"]["outputs"]["images"]
    assert redrawn != sha


def test_undo_and_redo_step_through_changes(page: Page, http: httpx.Client) -> None:
    add_character(http, "Ada", (30, 120, 200))
    page.reload()
    expect(page.locator("#undo")).to_be_disabled()
    character = drop_card(page, "Ada", 30, 60)
    render = add_from_nodes_tab(page, "text_to_image", 360, 40)
    wire(page, character, "character", render, "characters")
    expect(wires(page)).to_have_count(1)
    page.locator("#canvas").click(position={"x": 700, "y": 500})  # the canvas has the keys

    page.keyboard.press("Control+z")  # the wire
    expect(wires(page)).to_have_count(0)
    expect(node(page, "text_to_image")).to_have_count(1)
    page.keyboard.press("Control+z")  # the text-to-image node
    expect(node(page, "text_to_image")).to_have_count(0)
    expect(page.locator("#redo")).to_be_enabled()
    page.keyboard.press("Control+Shift+z")
    expect(node(page, "text_to_image")).to_have_count(1)
    page.keyboard.press("Control+y")
    expect(wires(page)).to_have_count(1)
    expect(page.locator("#redo")).to_be_disabled()

    # A typed value is one step too, and Clear can be undone.
    prompt = node(page, "text_to_image").locator('textarea[data-field="prompt"]')
    prompt.fill("in the rain")
    page.locator("#canvas").click(position={"x": 700, "y": 500})
    page.click("#clear-canvas")
    page.click("#canvas-confirm-ok")
    expect(page.locator("#canvas .node")).to_have_count(0)
    page.click("#undo")
    expect(page.locator("#canvas .node")).to_have_count(2)
    expect(wires(page)).to_have_count(1)
    expect(node(page, "text_to_image").locator('textarea[data-field="prompt"]')).to_have_value(
        "in the rain"
    )
    page.click("#undo")
    expect(node(page, "text_to_image").locator('textarea[data-field="prompt"]')).to_have_value("")


def test_copy_paste_and_duplicate_keep_values_and_inner_wires(page: Page) -> None:
    add_from_nodes_tab(page, "batch_render", 40, 40)
    add_from_nodes_tab(page, "consistency_eval", 420, 60)
    # Fixed by id: ".last" of a type would move on to the copies.
    batch = page.locator('#canvas .node[data-node-id="batch_render_1"]')
    evaluation = page.locator('#canvas .node[data-node-id="consistency_eval_1"]')
    batch.locator('textarea[data-field="prompts"]').fill("waving\nreading")
    wire(page, batch, "images", evaluation, "images")
    expect(wires(page)).to_have_count(1)

    # One node: Ctrl+C, Ctrl+V gives a copy with the same values, placed a step further on.
    batch.locator(".node-title").click()
    page.keyboard.press("Control+c")
    page.keyboard.press("Control+v")
    expect(node(page, "batch_render")).to_have_count(2)
    copy = page.locator('#canvas .node[data-node-id="batch_render_2"]')
    expect(copy.locator('textarea[data-field="prompts"]')).to_have_value("waving\nreading")
    expect(copy).to_have_class(re.compile(r"\bselected\b"))
    original, pasted = world_position(batch), world_position(copy)
    assert (pasted[0] - original[0], pasted[1] - original[1]) == (40, 40)
    expect(wires(page)).to_have_count(1)  # a wire to a node left behind is not copied

    # Two wired nodes: Ctrl+D duplicates both and the wire between them.
    batch.locator(".node-title").click()
    evaluation.locator(".node-title").click(modifiers=["Shift"])
    page.keyboard.press("Control+d")
    expect(node(page, "consistency_eval")).to_have_count(2)
    expect(node(page, "batch_render")).to_have_count(3)
    expect(wires(page)).to_have_count(2)
    page.keyboard.press("Control+z")  # one step takes the duplicate back
    expect(node(page, "batch_render")).to_have_count(2)
    expect(wires(page)).to_have_count(1)
