"""Issue 18's bugs of the browser app, each reproduced with real mouse and keyboard events in
Debian's Chromium against a real ``castbook serve`` (the set-up of tests/test_web_canvas.py,
whose helpers this module uses) rendering on a fake ComfyUI on 127.0.0.1: wires that left
their ports when a focused field scrolled the canvas, the status line squeezed to nothing at
1280×720, a run lost on reload (and the next one queued without a word), shortcuts dead
after a toolbar click, the blank page after Escape on the key prompt, and the prompts, names
and 401s of results and errors; then the Queue tab.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.fake_comfyui_server import FakeComfyUI
from tests.support.server import Server
from tests.support.web import (
    api_client,
    castbook_server,
    require_browser,
    server_page,
)

require_browser()

from playwright.sync_api import Browser, Locator, Page, expect  # noqa: E402

from tests.support.canvas import (  # noqa: E402
    RUN_TIMEOUT_MS,
    add_character,
    add_from_nodes_tab,
    assert_near,
    centre,
    drop_card,
    node,
    port,
    wire,
    wire_ends,
    wires,
)

DEADLINE_S = 90
STORED_RUN = "() => localStorage.getItem('castbook.run')"


@pytest.fixture(scope="module")
def comfy() -> Iterator[FakeComfyUI]:
    """The runs render on a fake ComfyUI (the built-in ``comfyui`` preset): no CPU of a real
    model, and ``held`` keeps a run going for as long as a test needs."""
    with FakeComfyUI() as server:
        yield server


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, comfy: FakeComfyUI
) -> Iterator[tuple[Server, str]]:
    home = tmp_path_factory.mktemp("web-fixes") / "home"
    home.mkdir(parents=True)
    (home / "presets.toml").write_text(  # a preset whose model folder is gone: runs fail
        '[presets.gone]\nbackend = "diffusers"\nmodel = "/nonexistent/model"\n'
        'options = { family = "sd15" }\n'
    )
    with castbook_server(home, {"CASTBOOK_COMFYUI_URL": comfy.url}) as served:
        yield served


@pytest.fixture
def http(served: tuple[Server, str]) -> Iterator[httpx.Client]:
    with api_client(*served) as client:
        yield client


def settle(http: httpx.Client) -> None:
    """No task of an earlier test left running (it would hold the executor), no characters."""
    for status in ("queued", "running"):
        for task in http.get("/v1/tasks", params={"status": status}).json():
            http.post(f"/v1/tasks/{task['id']}/cancel")
    deadline = time.monotonic() + DEADLINE_S
    while any(http.get("/v1/tasks", params={"status": s}).json() for s in ("queued", "running")):
        assert time.monotonic() < deadline, "an earlier test's task did not stop"
        time.sleep(0.2)
    for character in http.get("/v1/characters").json():
        http.delete(f"/v1/characters/{character['id']}")


@pytest.fixture
def page(
    browser: Browser, served: tuple[Server, str], http: httpx.Client, comfy: FakeComfyUI
) -> Iterator[Page]:
    comfy.held = False
    settle(http)
    with server_page(browser, served[0], viewport=(1440, 900), key=served[1]) as page:
        page.goto("/")
        expect(page.locator("#key-dialog")).to_be_hidden()
        expect(page.locator("#nodes-panel .node-type").first).to_be_attached()
        yield page


def port_centres(page: Page, source: Any, output: str, target: Any, name: str) -> list[Any]:
    return [centre(port(source, "out", output)), centre(port(target, "in", name))]


def assert_wire_on_its_ports(page: Page, source: Any, output: str, target: Any, name: str) -> None:
    page.wait_for_timeout(0)  # a pending redraw (requestAnimationFrame) runs first
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => done()))")
    for end, expected in zip(
        wire_ends(page), port_centres(page, source, output, target, name), strict=True
    ):
        assert_near(end, expected)


def text_to_image_graph(prompt: str, preset: str) -> dict[str, Any]:
    return {
        "nodes": {
            "text_to_image_1": {
                "type": "text_to_image",
                "inputs": {"prompt": prompt, "preset": preset},
            }
        }
    }


def wait_for_status(http: httpx.Client, task_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while (task := http.get(f"/v1/tasks/{task_id}").json())["status"] != status:
        assert time.monotonic() < deadline, task
        time.sleep(0.1)
    return task


def queue_run(http: httpx.Client, prompt: str, preset: str, **inputs: Any) -> str:
    graph = text_to_image_graph(prompt, preset)
    graph["nodes"]["text_to_image_1"]["inputs"].update(inputs)
    answer = http.post("/v1/workflows/run", json={"graph": graph, "cache": False})
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


# ---- 1: a focused field below the canvas edge ------------------------------------------------


def test_a_field_focused_below_the_canvas_edge_pans_and_wires_stay_on_their_ports(
    page: Page,
) -> None:
    height = page.locator("#canvas").bounding_box()["height"]
    output = add_from_nodes_tab(page, "output", 60, 60)
    render = add_from_nodes_tab(page, "text_to_image", 420, height - 150)
    wire(page, render, "images", output, "value")
    expect(wires(page)).to_have_count(1)

    # More settings and a field in it lie below the edge: clicking them makes the browser
    # scroll the canvas (overflow: hidden) to show them, as a user clicking there does.
    render.locator("details.node-more summary").click()
    seed = render.locator('input[data-field="seed"]')
    seed.click()
    expect(seed).to_be_focused()
    page.keyboard.type("7")
    scrolled = page.locator("#canvas").evaluate("c => [c.scrollLeft, c.scrollTop]")
    assert scrolled == [0, 0], f"the canvas scrolled itself by {scrolled}"
    canvas_box = page.locator("#canvas").bounding_box()
    seed_box = seed.bounding_box()
    assert canvas_box["y"] <= seed_box["y"] and (
        seed_box["y"] + seed_box["height"] <= canvas_box["y"] + canvas_box["height"] + 1
    ), "the focused field is out of sight"

    # Any later redraw (here: moving the other node) draws the wire on its ports.
    x, y = centre(output.locator(".node-header"))
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 30, y + 20, steps=4)
    page.mouse.up()
    assert_wire_on_its_ports(page, render, "images", output, "value")
    page.click("#zoom-reset")
    assert_wire_on_its_ports(page, render, "images", output, "value")
    page.click("#zoom-fit")
    assert_wire_on_its_ports(page, render, "images", output, "value")


# ---- 2 and 6: 1280×720 with the results open; the prompts sent --------------------------------


def test_at_1280_by_720_the_status_and_fit_stay_in_sight_and_results_show_the_prompts_sent(
    page: Page, http: httpx.Client
) -> None:
    add_character(http, "Ada", (30, 120, 200))
    patched = http.patch("/v1/characters/Ada", json={"negative_prompt": "blurry"})
    assert patched.status_code == 200, patched.text
    page.set_viewport_size({"width": 1280, "height": 720})
    page.reload()
    character = drop_card(page, "Ada", 20, 40)
    render = add_from_nodes_tab(page, "text_to_image", 290, 10)
    redraw = add_from_nodes_tab(page, "image_to_image", 290, 330)
    wire(page, character, "character", render, "characters")
    wire(page, character, "image", redraw, "image")
    wire(page, character, "character", redraw, "characters")
    render.locator('textarea[data-field="prompt"]').fill("a lighthouse")
    redraw.locator('textarea[data-field="prompt"]').fill("at night")
    for rendering in (render, redraw):
        rendering.locator('select[data-field="preset"]').select_option("comfyui")

    page.click("#run-workflow")
    expect(redraw.locator(".node-status")).to_have_text("done", timeout=RUN_TIMEOUT_MS)
    expect(render.locator(".node-status")).to_have_text("done")
    figures = page.locator("#results-panel figure.result")
    expect(figures).to_have_count(2)
    # Text-to-image and image-to-image results show what their model was given.
    prompts = sorted(figures.locator(".result-prompt").all_inner_texts())
    assert prompts == [
        "Prompt ink and watercolor, a lighthouse",
        "Prompt ink and watercolor, at night",
    ]
    assert figures.locator(".result-negative").all_inner_texts() == ["Negative blurry"] * 2
    alts = sorted(figures.locator("img").evaluate_all("images => images.map((i) => i.alt)"))
    assert alts == [  # the node, the character, the prompt sent (nothing scored them)
        "Result of image_to_image_1, Ada, “ink and watercolor, at night”",
        "Result of text_to_image_1, Ada, “ink and watercolor, a lighthouse”",
    ]

    # The status line keeps room for what it says, and every toolbar button is in sight.
    status = page.locator("#canvas-status")
    expect(status).to_contain_text("Done")
    status_box = status.bounding_box()
    assert status_box["width"] >= 200, status_box
    assert status.evaluate("s => s.scrollWidth <= s.clientWidth + 1"), "the status is cut off"
    toolbar = page.locator("#canvas-toolbar").bounding_box()
    for button in ("#run-workflow", "#zoom-fit", "#zoom-in", "#redo"):
        box = page.locator(button).bounding_box()
        assert (
            box["x"] >= toolbar["x"] and box["x"] + box["width"] <= toolbar["x"] + toolbar["width"]
        ), f"{button} is clipped: {box} in {toolbar}"
        assert box["y"] + box["height"] <= toolbar["y"] + toolbar["height"], (button, box)
    page.click("#zoom-fit")
    canvas = page.locator("#canvas").bounding_box()
    for each in (character, render, redraw):
        box = each.bounding_box()
        assert canvas["x"] <= box["x"] and box["x"] + box["width"] <= canvas["x"] + canvas["width"]


# ---- 3: a reload during a run; the next run in the queue --------------------------------------


def test_a_reload_mid_run_picks_the_run_up_and_a_queued_run_says_what_it_waits_for(
    page: Page, http: httpx.Client, comfy: FakeComfyUI
) -> None:
    render = add_from_nodes_tab(page, "text_to_image", 40, 40)
    render.locator('textarea[data-field="prompt"]').fill("a lighthouse")
    render.locator('select[data-field="preset"]').select_option("comfyui")
    running = render.locator(".node-status", has_text=re.compile(r"^running"))
    comfy.held = True  # the run goes on until the test lets it end

    page.click("#run-workflow")
    expect(running).to_have_count(1, timeout=RUN_TIMEOUT_MS)
    task_id = page.evaluate(STORED_RUN)
    assert task_id

    page.reload()
    # The page finds its run again: progress on the node, Cancel, then the results. (The
    # reloaded page first loads its scripts and node types: generous waits on busy cores.)
    expect(page.locator("#cancel-run")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(running).to_have_count(1, timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#run-workflow")).to_be_disabled()
    comfy.held = False
    status = page.locator("#canvas-status")
    expect(status).to_contain_text("Done", timeout=RUN_TIMEOUT_MS)
    expect(render.locator(".node-status")).to_have_text("done")
    expect(page.locator("#results-panel figure.result")).to_have_count(1)
    expect(page.locator("#cancel-run")).to_be_hidden()
    task = http.get(f"/v1/tasks/{task_id}").json()
    assert task["status"] == "succeeded"
    shown = float(re.search(r"Done in (\d+\.\d) s", status.inner_text()).group(1))
    assert abs(shown - task["seconds"]) <= 0.051, (shown, task["seconds"])  # the server's time
    assert page.evaluate(STORED_RUN) is None

    # A run started elsewhere holds the executor: Run here says what it waits behind.
    comfy.held = True
    other = queue_run(http, "a harbour", "comfyui")
    wait_for_status(http, other, "running")
    page.click("#run-workflow")
    expect(status).to_contain_text(
        f"Queued behind 1 task of yours: workflow {other[:8]} running", timeout=RUN_TIMEOUT_MS
    )
    expect(page.locator("#cancel-run")).to_be_visible()
    mine = http.get(f"/v1/tasks/{page.evaluate(STORED_RUN)}").json()
    assert mine["status"] == "queued"
    queued_at = datetime.fromisoformat(mine["created_at"])
    while datetime.now(UTC) - queued_at < timedelta(seconds=1.5):  # a wait worth reporting
        time.sleep(0.1)
    comfy.held = False
    expect(status).to_contain_text("Done", timeout=RUN_TIMEOUT_MS)
    expect(status).to_contain_text("in the queue")  # the wait is not counted as the run's
    mine = http.get(f"/v1/tasks/{mine['id']}").json()
    shown = float(re.search(r"Done in (\d+\.\d) s", status.inner_text()).group(1))
    assert abs(shown - mine["seconds"]) <= 0.051, (shown, mine["seconds"])


def test_load_and_clear_leave_a_run_going_also_one_another_browser_picked_up(
    browser: Browser, served: tuple[Server, str], page: Page, http: httpx.Client, comfy: FakeComfyUI
) -> None:
    """No run is lost to a click: Load or Clear stops following a run, not the run. Another
    browser (nothing stored) picks up the owner's running workflow; loading a workflow there
    used to cancel the first browser's run."""
    saved = http.post(
        "/v1/workflows",
        json={"name": "harbour to load", "graph": text_to_image_graph("a harbour", "comfyui")},
    )
    assert saved.status_code == 201, saved.text
    render = add_from_nodes_tab(page, "text_to_image", 40, 40)
    render.locator('textarea[data-field="prompt"]').fill("a lighthouse")
    render.locator('select[data-field="preset"]').select_option("comfyui")
    comfy.held = True
    page.click("#run-workflow")
    expect(render.locator(".node-status", has_text=re.compile(r"^running"))).to_have_count(
        1, timeout=RUN_TIMEOUT_MS
    )
    task_id = page.evaluate(STORED_RUN)
    assert task_id

    # Another browser (its own storage: no run stored) picks the run up; Load there.
    with server_page(browser, served[0], viewport=(1440, 900), key=served[1]) as other:
        other.goto("/")
        expect(other.locator("#cancel-run")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        expect(other.locator("#canvas")).to_have_attribute("data-resume", "picked")
        assert other.evaluate(STORED_RUN) == task_id
        other.click("#load-workflow")
        other.locator(".workflow-row", has_text="harbour to load").locator(".workflow-load").click()
        status = other.locator("#canvas-status")
        expect(status).to_contain_text("Loaded “harbour to load”.")
        expect(status).to_contain_text(f"The run {task_id[:8]} goes on: the Queue tab follows it")
        expect(other.locator("#cancel-run")).to_be_hidden()
        expect(other.locator("#run-workflow")).to_be_enabled()
        expect(node(other, "text_to_image").locator('textarea[data-field="prompt"]')).to_have_value(
            "a harbour"
        )
        # A reload there does not pick the run it left up again onto the loaded workflow
        # (its node has the same id): the canvas keeps the workflow and follows nothing.
        other.reload()
        expect(other.locator("#canvas")).to_have_attribute(
            "data-resume", "none", timeout=RUN_TIMEOUT_MS
        )
        expect(other.locator("#cancel-run")).to_be_hidden()
        loaded = node(other, "text_to_image")
        expect(loaded.locator('textarea[data-field="prompt"]')).to_have_value("a harbour")
        expect(loaded.locator(".node-status")).to_be_hidden()
        assert other.evaluate(STORED_RUN) is None
    assert http.get(f"/v1/tasks/{task_id}").json()["status"] == "running"

    # Clear in the browser that started it: the canvas is empty, the run goes on.
    page.click("#clear-canvas")
    page.click("#canvas-confirm-ok")
    expect(page.locator("#canvas .node")).to_have_count(0)
    expect(page.locator("#canvas-status")).to_have_text(
        f"The run {task_id[:8]} goes on: the Queue tab follows it (Cancel there stops it)."
    )
    expect(page.locator("#cancel-run")).to_be_hidden()
    assert http.get(f"/v1/tasks/{task_id}").json()["status"] == "running"
    # It ends as it would have, with its result; the Queue tab shows it.
    comfy.held = False
    assert len(wait_for_status(http, task_id, "succeeded")["outputs"]) == 1
    page.click("#tab-queue")
    expect(page.locator(f'#queue-list .task-row[data-id="{task_id}"]')).to_have_attribute(
        "data-status", "succeeded", timeout=RUN_TIMEOUT_MS
    )


def test_a_run_is_followed_through_a_server_that_does_not_answer_for_a_while(
    page: Page, comfy: FakeComfyUI
) -> None:
    """A stopping server ends its event streams at once (docs/api.md) and is away until it
    starts again: the page keeps asking for its run instead of giving it up at the first
    refused request."""
    render = add_from_nodes_tab(page, "text_to_image", 40, 40)
    render.locator('textarea[data-field="prompt"]').fill("a lighthouse")
    render.locator('select[data-field="preset"]').select_option("comfyui")
    refused = {"polls": 0}

    def stream_ends(route: Any) -> None:  # as a stopping server ends it: no "done"
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body="")

    def server_away(route: Any) -> None:
        if route.request.method == "GET" and refused["polls"] < 3:
            refused["polls"] += 1
            route.abort("connectionrefused")
        else:
            route.continue_()

    page.route(re.compile(r"/v1/tasks/[0-9a-f]+/events$"), stream_ends)
    page.route(re.compile(r"/v1/tasks/[0-9a-f]+$"), server_away)
    comfy.held = True  # the run goes on until the server has been away three times
    page.click("#run-workflow")
    status = page.locator("#canvas-status")
    expect(status).to_contain_text("The server is not answering", timeout=RUN_TIMEOUT_MS)
    expect(status).to_contain_text("The server is back", timeout=RUN_TIMEOUT_MS)
    comfy.held = False
    expect(status).to_contain_text("Done", timeout=RUN_TIMEOUT_MS)
    expect(render.locator(".node-status")).to_have_text("done")
    expect(page.locator("#results-panel figure.result")).to_have_count(1)
    assert refused["polls"] == 3


def test_clear_while_the_server_is_away_stops_following_the_run(
    page: Page, http: httpx.Client, comfy: FakeComfyUI
) -> None:
    """Clear while the page asks for a run a stopping server left (its stream ended): the
    page stops asking; it neither says the server is away over the cleared canvas nor shows
    the run's results there when the run ends (the run goes on, as after any Clear)."""
    render = add_from_nodes_tab(page, "text_to_image", 40, 40)
    render.locator('textarea[data-field="prompt"]').fill("a lighthouse")
    render.locator('select[data-field="preset"]').select_option("comfyui")
    polls = {"away": True, "refused": 0, "after_clear": 0}

    def stream_ends(route: Any) -> None:  # as a stopping server ends it: no "done"
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body="")

    def server_away(route: Any) -> None:
        if route.request.method != "GET":
            route.continue_()
        elif polls["away"]:
            polls["refused"] += 1
            route.abort("connectionrefused")
        else:
            polls["after_clear"] += 1
            route.continue_()

    page.route(re.compile(r"/v1/tasks/[0-9a-f]+/events$"), stream_ends)
    page.route(re.compile(r"/v1/tasks/[0-9a-f]+$"), server_away)
    comfy.held = True
    page.click("#run-workflow")
    status = page.locator("#canvas-status")
    expect(status).to_contain_text("The server is not answering", timeout=RUN_TIMEOUT_MS)
    task_id = page.evaluate(STORED_RUN)
    assert task_id
    page.click("#clear-canvas")
    page.click("#canvas-confirm-ok")
    left = f"The run {task_id[:8]} goes on: the Queue tab follows it (Cancel there stops it)."
    expect(status).to_have_text(left)
    polls["away"] = False  # the server is back, and the run ends
    comfy.held = False
    assert len(wait_for_status(http, task_id, "succeeded")["outputs"]) == 1
    page.click("#tab-queue")
    expect(page.locator(f'#queue-list .task-row[data-id="{task_id}"]')).to_have_attribute(
        "data-status", "succeeded", timeout=RUN_TIMEOUT_MS
    )
    expect(status).to_have_text(left)
    expect(page.locator("#results-panel figure.result")).to_have_count(0)
    assert polls["after_clear"] == 0, polls


# ---- 4: shortcuts after a toolbar click --------------------------------------------------------


def test_shortcuts_work_after_a_toolbar_click(page: Page) -> None:
    add_from_nodes_tab(page, "text_to_image", 40, 40)
    add_from_nodes_tab(page, "output", 400, 40)
    nodes = page.locator("#canvas .node")
    expect(nodes).to_have_count(2)

    page.click("#clear-canvas")
    page.click("#canvas-confirm-ok")
    expect(nodes).to_have_count(0)
    expect(page.locator("#clear-canvas")).to_be_focused()  # the dialog gave the focus back
    page.keyboard.press("Control+z")
    expect(nodes).to_have_count(2)

    # A node selected, then a toolbar button clicked: Delete still removes the node.
    node(page, "output").locator(".node-header").click()
    page.click("#zoom-in")
    expect(page.locator("#zoom-in")).to_be_focused()
    page.keyboard.press("Delete")
    expect(node(page, "output")).to_have_count(0)
    page.click("#zoom-out")
    page.keyboard.press("Control+z")
    expect(node(page, "output")).to_have_count(1)

    # Ctrl+A selects every node (not the page's text): Delete removes them all; Ctrl+Z.
    page.click("#zoom-in")
    page.keyboard.press("Control+a")
    expect(page.locator("#canvas .node.selected")).to_have_count(2)
    page.keyboard.press("Delete")
    expect(nodes).to_have_count(0)
    page.keyboard.press("Control+z")
    expect(nodes).to_have_count(2)

    # Ctrl+S opens the canvas's Save, even from a node's field (not the browser's).
    node(page, "text_to_image").locator('textarea[data-field="prompt"]').click()
    page.keyboard.press("Control+s")
    expect(page.locator("#save-dialog")).to_be_visible()
    expect(page.locator("#workflow-name")).to_be_focused()


def test_nodes_added_from_the_nodes_tab_do_not_cover_each_other(page: Page) -> None:
    page.click("#tab-nodes")
    for node_type in ("text_to_image", "batch_render", "output", "text_to_image"):
        page.locator(f'.node-type[data-type="{node_type}"]').focus()
        page.keyboard.press("Enter")
    nodes = page.locator("#canvas .node")
    expect(nodes).to_have_count(4)
    boxes = [nodes.nth(index).bounding_box() for index in range(4)]
    for index, a in enumerate(boxes):
        for b in boxes[index + 1 :]:
            apart = (
                a["x"] + a["width"] <= b["x"]
                or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"]
                or b["y"] + b["height"] <= a["y"]
            )
            assert apart, (a, b)


# ---- 5: the key prompt -------------------------------------------------------------------------


def test_escape_on_the_key_prompt_offers_it_again_and_a_good_key_clears_stale_errors(
    browser: Browser, served: tuple[Server, str]
) -> None:
    server, key = served
    with server_page(browser, server, viewport=(1280, 720), key="cb_stale") as page:
        page.goto("/")
        expect(page.locator("#key-dialog")).to_be_visible()
        expect(page.locator("#key-error")).to_contain_text("unknown API key")
        page.keyboard.press("Escape")
        expect(page.locator("#key-dialog")).to_be_hidden()
        # Not a blank page waiting for ever: it says what is missing and offers the prompt.
        expect(page.locator("#key-needed")).to_be_visible()
        expect(page.locator("#nodes-panel")).not_to_contain_text("Loading the node types")
        page.click("#enter-key")
        page.fill("#api-key", key)
        page.click("#save-key")
        expect(page.locator("#key-dialog")).to_be_hidden()
        expect(page.locator("#key-needed")).to_be_hidden()
        expect(page.locator("#nodes-panel .node-type").first).to_be_attached()

        # The key stops working while the character form is open: Create is refused and the
        # prompt asks again; once a good key is saved, the form no longer shows the refusal.
        page.click("#new-character")
        page.fill("#field-name", "Kit")
        page.evaluate("() => localStorage.setItem('castbook.apiKey', 'cb_revoked')")
        page.click("#save-character")
        expect(page.locator("#key-dialog")).to_be_visible()
        page.fill("#api-key", key)
        page.click("#save-key")
        expect(page.locator("#key-dialog")).to_be_hidden()
        expect(page.locator("#character-dialog")).to_be_visible()
        expect(page.locator("#character-dialog")).not_to_contain_text("unknown API key")
        page.click("#save-character")
        expect(page.locator("#character-dialog")).to_be_hidden()
        expect(page.locator(".card", has_text="Kit")).to_be_visible()


# ---- 6: a deleted character's name; no 401 on a page load ------------------------------------


def test_a_deleted_characters_error_names_it_and_a_page_load_meets_no_401(
    page: Page, http: httpx.Client
) -> None:
    refused: list[str] = []
    page.on("response", lambda response: response.status == 401 and refused.append(response.url))
    ada = add_character(http, "Ada", (30, 120, 200))
    page.reload()
    character = drop_card(page, "Ada", 30, 60)
    render = add_from_nodes_tab(page, "text_to_image", 360, 40)
    wire(page, character, "character", render, "characters")
    render.locator('textarea[data-field="prompt"]').fill("a lighthouse")
    render.locator('select[data-field="preset"]').select_option("comfyui")
    page.wait_for_function(  # the draft (with the node's name) is kept before the reload
        "() => (localStorage.getItem('castbook.canvas') || '').includes('comfyui')"
    )
    assert http.delete(f"/v1/characters/{ada['id']}").status_code in (200, 204)
    page.reload()
    expect(character).to_have_class(re.compile(r"\bmissing\b"))

    page.click("#run-workflow")
    error = character.locator('.field-error[data-error-for="character"]')
    expect(error).to_contain_text("“Ada”")
    expect(error).to_contain_text("deleted from the library")
    expect(error).not_to_contain_text(ada["id"])
    assert refused == [], refused


# ---- the Queue tab ------------------------------------------------------------------------------


def test_the_queue_tab_follows_tasks_live_cancels_them_and_reruns_one(
    page: Page, http: httpx.Client, comfy: FakeComfyUI
) -> None:
    # Work started elsewhere (the API): one running (held), one waiting behind it.
    comfy.held = True
    slow = queue_run(http, "a harbour", "comfyui")
    wait_for_status(http, slow, "running")
    waiting = queue_run(http, "a lighthouse", "comfyui", seed=5)

    page.click("#tab-queue")

    def row(task_id: str) -> Locator:
        return page.locator(f'#queue-list .task-row[data-id="{task_id}"]')

    expect(page.locator("#queue-list .task-row").first).to_have_attribute("data-id", waiting)
    expect(row(waiting)).to_have_attribute("data-status", "queued")
    expect(row(waiting).locator(".task-summary")).to_have_text("waiting for its turn")
    expect(page.locator("#queue-count")).to_have_text("2")
    expect(row(slow).locator(".task-summary")).to_have_text(
        re.compile(r"^node text_to_image_1: running \d+/\d+$"), timeout=RUN_TIMEOUT_MS
    )
    expect(row(slow).locator("progress")).to_be_visible()

    # Cancel from the tab: the running one stops; the waiting one runs, then ends — all
    # seen live, without a reload.
    row(slow).locator(".task-cancel").click()
    expect(row(slow)).to_have_attribute("data-status", "cancelled", timeout=RUN_TIMEOUT_MS)
    expect(row(waiting)).to_have_attribute("data-status", "running", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#queue-count")).to_have_text("1")
    comfy.held = False
    expect(row(waiting)).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)
    expect(row(waiting).locator(".task-summary")).to_contain_text("1 result")
    expect(page.locator("#queue-count")).to_be_hidden()

    # A failure says why in its row.
    broken = queue_run(http, "a bridge", "gone")
    expect(row(broken)).to_have_attribute("data-status", "failed", timeout=RUN_TIMEOUT_MS)
    expect(row(broken).locator(".task-summary")).to_contain_text("gone")

    # Results opens a finished task's pictures; Re-run puts its graph on the canvas and runs
    # it with the same settings.
    row(waiting).locator(".task-results").click()
    expect(page.locator("#results-panel figure.result")).to_have_count(1)
    row(waiting).locator(".task-rerun").click()
    render = node(page, "text_to_image")
    expect(render).to_have_count(1)
    expect(render.locator('textarea[data-field="prompt"]')).to_have_value("a lighthouse")
    expect(render.locator(".node-status")).to_have_text("done", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#reuse-results")).not_to_be_checked()  # as the task was sent
    newest = http.get("/v1/tasks", params={"limit": 1}).json()[0]
    old = http.get(f"/v1/tasks/{waiting}").json()
    assert newest["id"] != waiting and newest["status"] == "succeeded"
    assert newest["input"]["cache"] is False
    assert newest["input"]["graph"]["nodes"] == old["input"]["graph"]["nodes"]
    expect(page.locator("#queue-list .task-row").first).to_have_attribute(
        "data-id", newest["id"], timeout=RUN_TIMEOUT_MS
    )

    # A generation (not a workflow) is queued again on the server with its stored request.
    made = http.post("/v1/generations", json={"preset": "comfyui", "prompt": "a pier", "seed": 3})
    assert made.status_code == 202, made.text
    first = made.json()["id"]
    wait_for_status(http, first, "succeeded")
    row(first).locator(".task-rerun").click()
    expect(page.locator("#queue-list .task-row").first).not_to_have_attribute(
        "data-id", first, timeout=RUN_TIMEOUT_MS
    )
    again = http.get("/v1/tasks", params={"limit": 1}).json()[0]
    assert again["kind"] == "generation" and again["id"] != first
    assert again["input"] == http.get(f"/v1/tasks/{first}").json()["input"]
    expect(row(again["id"])).to_have_attribute("data-status", "succeeded", timeout=RUN_TIMEOUT_MS)


def test_the_queue_tab_shows_older_tasks_a_page_at_a_time(
    page: Page, http: httpx.Client, comfy: FakeComfyUI
) -> None:
    # More tasks than the tab's first page (50): one held running, the rest waiting (and
    # whatever earlier tests of this server left, below them).
    comfy.held = True
    made = []
    for n in range(53):
        answer = http.post("/v1/generations", json={"preset": "comfyui", "prompt": f"panel {n}"})
        assert answer.status_code == 202, answer.text
        made.append(answer.json()["id"])
    made.reverse()  # newest first, as listed
    every = [task["id"] for task in http.get("/v1/tasks", params={"limit": 500}).json()]
    assert every[:53] == made and len(every) < 100  # two pages of the tab's 50
    rows = page.locator("#queue-list .task-row")

    def shown() -> list[str | None]:
        return [rows.nth(i).get_attribute("data-id") for i in range(rows.count())]

    page.click("#tab-queue")
    expect(rows).to_have_count(50)
    more = page.locator("#queue-more")
    expect(more).to_be_visible()
    more.click()
    expect(rows).to_have_count(len(every))
    expect(more).to_be_hidden()  # the second page was short: nothing older
    assert shown() == every

    # A new task pushes the first page's last rows down, none lost between the pages.
    newer = http.post("/v1/generations", json={"preset": "comfyui", "prompt": "panel 53"})
    assert newer.status_code == 202, newer.text
    expect(rows.first).to_have_attribute("data-id", newer.json()["id"])
    expect(rows).to_have_count(len(every) + 1)
    assert shown() == [newer.json()["id"], *every]
    # Not left for the server's stop, which would wait its grace for the held run.
    comfy.held = False
    settle(http)
