"""``POST /v1/batch-renders`` and ``POST /v1/stories``, run for real on the tiny SD 1.5 model
through the app's own job handlers (``batch_render`` and ``story``)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from castbook.api import ApiConfig
from castbook.blobs import open_blob_store
from castbook.db import Database
from castbook.errors import FieldError
from castbook.jobs import Job, JobContext, JobHandler, JobOutput
from castbook.settings import Settings
from castbook.tasks.generation import GenerationJobs
from castbook.tasks.render import render_handlers
from tests.support.api import Api, ApiFactory, add_character
from tests.support.drawings import BOB, character, png_bytes

# The API fixtures of test_api, shared by name.

PROMPTS = ["at a cafe", "at the beach", "on a train"]
STORY: dict[str, Any] = {
    "title": "Morning at the cafe",
    "characters": ["Alice", "bob"],
    "preset": "tiny",
    "defaults": {"seed": 100},
    "scenes": [
        {"prompt": "Alice orders a coffee", "characters": ["Alice"], "shot": "close-up"},
        {"prompt": "Bob waves from the door", "characters": ["Bob"]},
        {"prompt": "they share a table", "characters": ["alice", "Bob"], "shot": "wide",
         "seed": 7},
    ],
}  # fmt: skip


def add_bob(api: Api, headers: dict[str, str]) -> None:
    made = api.client.post("/v1/characters", json={"name": "Bob"}, headers=headers)
    assert made.status_code == 201, made.text
    uploaded = api.client.post(
        f"/v1/characters/{made.json()['id']}/images",
        files=[("image", ("bob.png", png_bytes(character(**BOB)), "image/png"))],
        headers=headers,
    )
    assert uploaded.status_code == 201, uploaded.text


def download(api: Api, task: dict[str, Any], sha: str, headers: dict[str, str]) -> Any:
    url = next(o["url"] for o in task["outputs"] if o["id"] == sha)
    response = api.client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    assert hashlib.sha256(response.content).hexdigest() == sha
    return response


def png_parameters(data: bytes) -> dict[str, Any]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return json.loads(image.text["castbook"])


# ---- batch renders --------------------------------------------------------------------------


def test_a_batch_render_scores_its_variants_and_marks_the_best(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    alice, bob = api.key("alice"), api.key("bob")
    add_character(api, alice)
    submitted = api.client.post(
        "/v1/batch-renders",
        json={"characters": ["alice"], "prompts": PROMPTS, "preset": "tiny", "seed": 11,
              "inference_type": "a100"},
        headers=alice,
    )  # fmt: skip
    assert submitted.status_code == 202, submitted.text
    task = submitted.json()
    assert task["kind"] == "batch_render" and task["queue"] == "a100"
    assert submitted.headers["location"].endswith(f"/v1/tasks/{task['id']}")
    assert task["input"]["characters"] == ["Alice"] and task["input"]["max_attempts"] == 1

    done = api.wait(task["id"], alice)
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"] == {"step": 3, "total": 3, "message": "done"}
    result = done["result"]
    variants = result["variants"]
    assert [v["index"] for v in variants] == [1, 2, 3]
    assert [v["prompt"] for v in variants] == PROMPTS
    assert variants[1]["final_prompt"] == "long black hair, at the beach"
    assert [v["seed"] for v in variants] == [11, 12, 13]
    for v in variants:
        assert 0 <= v["score"] <= 100 and set(v["scores"]) == {"Alice"}
        assert v["attempts"] == 1 and v["passed"] is None and len(v["attempt_scores"]) == 1
    assert sum(v["best"] for v in variants) == 1
    best = next(v for v in variants if v["best"])
    assert result["best"] == best["index"] and best["score"] == max(v["score"] for v in variants)
    assert result["rerolls"] == 0

    # Every variant and the contact sheet are outputs, downloadable as PNG.
    assert [o["id"] for o in done["outputs"]] == [
        *(v["output"] for v in variants),
        result["contact_sheet"],
    ]
    for v in variants:
        picture = download(api, done, v["output"], alice)
        assert picture.headers["content-type"] == "image/png"
        parameters = png_parameters(picture.content)
        assert parameters["user_prompt"] == v["prompt"] and parameters["seed"] == v["seed"]
        assert parameters["score"] == v["score"] and parameters["preset"] == "tiny"
    sheet = download(api, done, result["contact_sheet"], alice)
    assert sheet.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(sheet.content)) as image:
        assert image.width > 256 and image.height > 256

    # The gallery lists the variants (not the sheet) with the prompts sent and their scores.
    gallery = api.client.get("/v1/results", headers=alice).json()
    assert [item["id"] for item in gallery["items"]] == [v["output"] for v in variants][::-1]
    for item, v in zip(gallery["items"], variants[::-1], strict=True):
        assert (item["prompt"], item["score"], item["seed"]) == (
            v["final_prompt"],
            v["score"],
            v["seed"],
        )
        assert item["negative_prompt"] == v["negative_prompt"] is not None
        assert item["characters"] == ["Alice"] and item["preset"] == "tiny"
    assert api.client.get("/v1/results", headers=bob).json()["total"] == 0

    # Another owner sees none of it.
    for path in (
        f"/v1/tasks/{task['id']}",
        f"/v1/tasks/{task['id']}/events",
        f"/v1/results/{result['contact_sheet']}",
        f"/v1/results/{variants[0]['output']}",
    ):
        response = api.client.get(path, headers=bob)
        assert response.status_code == 404, path
    assert api.client.post(f"/v1/tasks/{task['id']}/cancel", headers=bob).status_code == 404
    assert api.client.get("/v1/tasks", headers=bob).json() == []


def test_the_gate_rerolls_every_variant_under_the_threshold(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    headers = api.key("alice")
    add_character(api, headers)
    task = api.client.post(
        "/v1/batch-renders",
        json={"characters": ["Alice"], "prompts": PROMPTS, "preset": "tiny", "seed": 3,
              "min_score": 100, "max_attempts": 2},
        headers=headers,
    ).json()  # fmt: skip
    done = api.wait(task["id"], headers)
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    # No tiny-model picture reaches 100: every variant is rendered twice, the better kept.
    for v in result["variants"]:
        assert v["attempts"] == 2 and len(v["attempt_scores"]) == 2
        assert v["score"] == pytest.approx(max(v["attempt_scores"]), abs=0.01)
        assert v["passed"] is False
    assert result["rerolls"] == 3 and result["min_score"] == 100
    assert len(done["outputs"]) == 4


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"prompts": []}, "prompts", "at least one prompt"),
        ({"prompts": [f"p{i}" for i in range(9)]}, "prompts", "9 variants; the limit is 8"),
        ({"max_variants": 2}, "prompts", "3 variants; the limit is 2"),
        ({"min_score": 120}, "min_score", "less than or equal to 100"),
        ({"min_score": 50, "max_attempts": 11}, "max_attempts", "less than or equal to 10"),
        ({"characters": []}, "characters", "at least one character"),
        ({"characters": ["Alice", "Nobody"]}, "characters.1", "no character 'Nobody'"),
        ({"characters": ["Empty"]}, "characters.0", "no reference images"),
        ({"preset": "nope"}, "preset", "no preset 'nope'"),
        ({"preset": "tiny-plain"}, "characters", "takes at most 0 reference image(s)"),
        ({"width": 100}, "width", "must be between 256 and 1536, got 100"),
        ({"seed": 2**32 - 2}, "seed", "between 0 and 4294967295, got 4294967296 (the last"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"inference_type": "GPU!"}, "inference_type", "pattern"),
    ],
)
def test_invalid_batch_renders_name_the_field_and_write_nothing(
    make_api: ApiFactory, generating: Path, body: dict[str, Any], field: str, message: str
) -> None:
    api = make_api()
    headers = api.key("alice")
    add_character(api, headers)
    assert api.client.post("/v1/characters", json={"name": "Empty"}, headers=headers).is_success
    blobs = api.blobs()
    response = api.client.post(
        "/v1/batch-renders",
        json={"characters": ["Alice"], "prompts": PROMPTS, "preset": "tiny", **body},
        headers=headers,
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == field and message in problem["error"], problem
    assert api.job_count() == 0 and api.blobs() == blobs


def test_the_variant_cap_comes_from_the_server(make_api: ApiFactory, generating: Path) -> None:
    api = make_api(max_variants=2)
    headers = api.key("alice")
    add_character(api, headers)
    body = {"characters": ["Alice"], "prompts": PROMPTS, "preset": "tiny", "max_variants": 8}
    response = api.client.post("/v1/batch-renders", json=body, headers=headers)
    assert response.status_code == 422 and "the limit is 2" in response.json()["error"]
    assert ApiConfig.from_env({"CASTBOOK_MAX_VARIANTS": "12"}).max_variants == 12
    assert ApiConfig.from_env({}).max_variants == 8
    with pytest.raises(FieldError, match="CASTBOOK_MAX_VARIANTS"):
        ApiConfig.from_env({"CASTBOOK_MAX_VARIANTS": "0"})


# ---- stories --------------------------------------------------------------------------------


def test_a_two_character_story_renders_panels_and_a_storyboard(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    headers = api.key("alice")
    add_character(api, headers)
    add_bob(api, headers)
    submitted = api.client.post("/v1/stories", json={**STORY, "continuity": True}, headers=headers)
    assert submitted.status_code == 202, submitted.text
    task = submitted.json()
    assert task["kind"] == "story" and task["input"]["story"]["characters"] == ["Alice", "Bob"]
    assert task["input"]["story"]["scenes"][2]["characters"] == ["Alice", "Bob"]

    done = api.wait(task["id"], headers)
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert result["title"] == "Morning at the cafe" and result["continuity"] is True
    panels = result["panels"]
    assert [p["scene"] for p in panels] == [1, 2, 3]
    assert [set(p["scores"]) for p in panels] == [{"Alice"}, {"Bob"}, {"Alice", "Bob"}]
    assert [p["seed"] for p in panels] == [100, 101, 7]
    assert all(p["attempts"] == 1 for p in panels) and result["rerolls"] == 0
    assert panels[2]["score"] == min(panels[2]["scores"].values())
    assert panels[0]["caption"] == "[close-up] Alice orders a coffee"
    assert panels[0]["prompt"].endswith("close-up, Alice orders a coffee")

    media = {o["id"]: (o["kind"], o["media_type"]) for o in done["outputs"]}
    assert len(done["outputs"]) == 3 + 4
    for panel in panels:
        assert media[panel["output"]] == ("image", "image/png")
        parameters = png_parameters(download(api, done, panel["output"], headers).content)
        assert parameters["scene"] == panel["scene"] and parameters["seed"] == panel["seed"]
    board = result["storyboard"]
    assert media[board["png"]] == ("image", "image/png")
    assert media[board["drift"]] == ("image", "image/png")
    assert media[board["pdf"]] == ("pdf", "application/pdf")
    assert media[board["html"]] == ("html", "text/html")

    png = download(api, done, board["png"], headers)
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    pdf = download(api, done, board["pdf"], headers)
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-disposition"].endswith('.pdf"')
    html = download(api, done, board["html"], headers)
    assert html.headers["content-type"].startswith("text/html")
    page = html.text
    for caption in ("[close-up] Alice orders a coffee", "Bob waves from the door",
                    "[wide] they share a table"):  # fmt: skip
        assert caption in page
    assert page.count("data:image/") >= 3
    assert f"{panels[0]['scores']['Alice']:.0f}" in page
    drift = download(api, done, board["drift"], headers)
    assert drift.content.startswith(b"\x89PNG")

    # The gallery lists the panels (not the board's files) with the prompts they were sent.
    gallery = api.client.get("/v1/results", headers=headers).json()
    listed = {item["id"]: item for item in gallery["items"]}
    assert gallery["total"] == 3 and set(listed) == {p["output"] for p in panels}
    for panel in panels:
        item = listed[panel["output"]]
        assert (item["prompt"], item["score"], item["seed"]) == (
            panel["prompt"],
            panel["score"],
            panel["seed"],
        )
        assert item["negative_prompt"] == panel["negative_prompt"] is not None
    assert listed[panels[2]["output"]]["characters"] == ["Alice", "Bob"]


def _story(**changes: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(STORY)), **changes}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            _story(
                scenes=[
                    {"prompt": "a", "characters": ["Alice"]},
                    {"prompt": "b", "characters": ["Carol"]},
                ]
            ),
            "scenes.1.characters.0",
            "'Carol' is not one of the story's characters",
        ),
        (_story(characters=["Alice", "Bob", "Carol"]), "characters.2", "no character 'Carol'"),
        (_story(scenes=[]), "scenes", "at least 1 item"),
        (_story(scenes=[{"prompt": ""}]), "scenes.0.prompt", "at least 1 character"),
        (_story(defaults={"steps": 99}), "defaults", "steps: must be between 1 and 50"),
        (
            _story(defaults={"seed": 2**32 - 1}),
            "scenes.1.seed",
            "between 0 and 4294967295, got 4294967296",
        ),
        (_story(preset="nope"), "preset", "no preset 'nope'"),
        (_story(preset="tiny-plain"), "scenes.0.characters", "takes at most 0 reference"),
        (_story(colour="red"), "colour", "Extra inputs are not permitted"),
        (_story(min_score=120), "min_score", "less than or equal to 100"),
        (_story(title=""), "title", "at least 1 character"),
    ],
)
def test_invalid_stories_name_the_location_and_write_nothing(
    make_api: ApiFactory, generating: Path, body: dict[str, Any], field: str, message: str
) -> None:
    api = make_api()
    headers = api.key("alice")
    add_character(api, headers)
    add_bob(api, headers)
    blobs = api.blobs()
    response = api.client.post("/v1/stories", json=body, headers=headers)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == field and message in problem["error"], problem
    assert api.job_count() == 0 and api.blobs() == blobs


class CancelAt:
    """A handler whose task is cancelled (the way a user does) when it reports ``message``."""

    def __init__(self, handler: JobHandler, message: str) -> None:
        self.handler = handler
        self.message = message
        self.seen: list[str] = []

    def __call__(self, job: Job, context: JobContext) -> tuple[list[JobOutput], dict[str, Any]]:
        report = context.progress

        def progress(step: int, total: int, message: str = "") -> None:
            self.seen.append(message)
            if message == self.message:
                context.store.cancel(job.id)
            report(step, total, message)

        context.progress = progress  # type: ignore[method-assign]
        return self.handler(job, context)


@pytest.mark.parametrize(
    ("kind", "path", "body", "at", "never"),
    [
        ("story", "/v1/stories", STORY, "scene 2", "scene 3"),
        # The variant already taken by the pool's thread finishes; the last never starts.
        ("batch_render", "/v1/batch-renders",
         {"characters": ["Alice"], "prompts": PROMPTS, "preset": "tiny"},
         "running 1/3", "running 3/3"),
    ],
)  # fmt: skip
def test_a_task_is_cancelled_between_scenes_and_variants(
    make_api: ApiFactory,
    generating: Path,
    api_settings: Callable[..., Settings],
    kind: str,
    path: str,
    body: dict[str, Any],
    at: str,
    never: str,
) -> None:
    settings = api_settings()
    handlers = render_handlers(
        GenerationJobs(settings, Database(settings.database_url), open_blob_store(settings))
    )
    handler = CancelAt(handlers[kind], at)
    api = make_api(handlers={kind: handler})
    headers = api.key("alice")
    add_character(api, headers)
    add_bob(api, headers)
    task = api.client.post(path, json=body, headers=headers).json()
    done = api.wait(task["id"], headers)
    assert done["status"] == "cancelled" and done["outputs"] == [], done["error"]
    assert at in handler.seen and never not in handler.seen
