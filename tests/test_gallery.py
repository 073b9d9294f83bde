"""The gallery (``GET /v1/results``, ``GET /v1/results.zip``) and the prompt preview
(``POST /v1/prompt/preview``), in process: tasks' rows seeded directly (their shape is the
workflow job kind's), the describing of every job kind's result, paging, filters, owners,
the zip's files and parameters; the preview against what generation's own step makes."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, select

from castbook.db import GalleryCharacterRow, GalleryItemRow
from castbook.generation import load_presets, prepare_request, resolve_request
from castbook.jobs import Job, JobOutput, JobStatus
from castbook.jobs.retention import prune
from castbook.tasks.gallery import OutputDescription, describe_outputs
from castbook.workflow import WorkflowStore
from tests.support.api import Api, ApiFactory, add_character
from tests.support.gallery import seed_results


@pytest.fixture
def api(make_api: ApiFactory) -> Api:
    return make_api()


def seed(api: Api, owner: str, count: int, **options: Any) -> list[Any]:
    return seed_results(api.services.database, api.services.blobs, owner, count, **options)


def every_page(api: Api, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v1/results", params=query, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def test_pages_cover_every_result_once_newest_first_with_what_it_was_made_with(api: Api) -> None:
    headers = api.key("ann")
    seeded = seed(api, "ann", 23, per_task=3)
    first = api.client.get("/v1/results", params={"limit": 10}, headers=headers).json()
    assert first["total"] == 23 and len(first["items"]) == 10 and first["next_cursor"]
    items = every_page(api, headers, limit=10)
    assert len(items) == 23
    # Newest first: the last seeded task's last output leads.
    assert [(i["task"], i["seed"]) for i in items] == [(s.task, s.seed) for s in reversed(seeded)]
    top = items[0]
    newest = seeded[-1]
    assert top["prompt"] == newest.prompt and top["negative_prompt"] == "blurry"
    assert top["score"] == newest.score and top["characters"] == [newest.character]
    assert top["preset"] == "comfyui" and top["task_kind"] == "workflow"
    assert top["url"].endswith(f"/v1/results/{newest.sha256}")
    assert api.client.get(top["url"], headers=headers).status_code == 200


def test_filters_by_character_workflow_score_and_kind(
    make_api: ApiFactory, database_url: str
) -> None:
    api = make_api(database_url)
    headers = api.key("ann")
    workflow_id = WorkflowStore(api.services.database, "ann").save("Portraits", {"nodes": {}}).id
    seeded = seed(api, "ann", 12, characters=("Alice", "Bob"), per_task=2)
    seeded += seed(api, "ann", 6, characters=("Cleo",), workflow=workflow_id, per_task=2)

    def picked(**params: Any) -> set[tuple[str, int]]:
        return {(i["task"], i["seed"]) for i in every_page(api, headers, **params)}

    def expected(condition: Any) -> set[tuple[str, int]]:
        return {(s.task, s.seed) for s in seeded if condition(s)}

    assert picked(character="Bob") == expected(lambda s: s.character == "Bob")
    assert picked(workflow="Portraits") == expected(lambda s: s.workflow == workflow_id)
    assert picked(workflow=workflow_id) == expected(lambda s: s.workflow == workflow_id)
    assert picked(min_score=50) == expected(lambda s: s.score >= 50)
    both = picked(character="Alice", min_score=30)
    assert both == expected(lambda s: s.character == "Alice" and s.score >= 30) and both
    assert picked(kind="video") == set()
    named = api.client.get("/v1/results", params={"workflow": "Portraits"}, headers=headers)
    assert named.json()["items"][0]["workflow"] == {"id": workflow_id, "name": "Portraits"}
    # A character of the library is found by its id too (the gallery keeps names).
    alice = add_character(api, headers, "Alice")
    assert picked(character=alice["id"]) == expected(lambda s: s.character == "Alice")


def test_bad_filters_are_named(api: Api) -> None:
    headers = api.key("ann")
    assert (
        api.client.get("/v1/results", params={"min_score": 101}, headers=headers).status_code == 422
    )
    bad = api.client.get("/v1/results", params={"cursor": "abc"}, headers=headers)
    assert bad.status_code == 422 and "cursor" in bad.text


def test_other_owners_see_none_of_it(api: Api) -> None:
    seed(api, "ann", 5)
    bob = api.key("bob")
    assert api.client.get("/v1/results", headers=bob).json() == {
        "items": [],
        "next_cursor": None,
        "total": 0,
    }
    archive = zipfile.ZipFile(io.BytesIO(api.client.get("/v1/results.zip", headers=bob).content))
    assert json.loads(archive.read("results.json"))["count"] == 0
    assert api.client.get("/v1/results").status_code == 401


def test_tasks_that_end_later_are_listed_at_the_next_read(api: Api) -> None:
    headers = api.key("ann")
    seed(api, "ann", 4)
    assert api.client.get("/v1/results", headers=headers).json()["total"] == 4
    # A task ending now, through the store as an executor ends it.
    jobs = api.services.jobs
    job = jobs.create(kind="generation", input={"request": {"prompt": "a cat"}}, owner="ann")
    jobs.start(job.id, "test-worker")
    sha = api.services.blobs.put(b"\x89PNG pretend")[0]
    jobs.succeed(
        job.id,
        [JobOutput(sha, "image", "image/png", 8, 8, 42)],
        {"prompt": "a cat, sharp", "negative_prompt": "blurry", "preset": "tiny"},
    )
    page = api.client.get("/v1/results", headers=headers).json()
    assert page["total"] == 5
    newest = page["items"][0]
    assert (newest["task"], newest["prompt"], newest["seed"]) == (job.id, "a cat, sharp", 42)
    # Reading again adds nothing twice.
    assert api.client.get("/v1/results", headers=headers).json()["total"] == 5


def test_a_result_has_a_small_copy_for_the_grid(api: Api) -> None:
    headers = api.key("ann")
    big = io.BytesIO()
    Image.new("RGB", (1024, 768), (200, 30, 90)).save(big, format="PNG")
    jobs = api.services.jobs
    job = jobs.create(kind="generation", input={"request": {"prompt": "x"}}, owner="ann")
    jobs.start(job.id, "test-worker")
    sha = api.services.blobs.put(big.getvalue())[0]
    jobs.succeed(job.id, [JobOutput(sha, "image", "image/png", 1024, 768, 1)], {})
    for _ in range(2):  # made, then from memory
        small = api.client.get(f"/v1/results/{sha}/thumbnail", headers=headers)
        assert small.status_code == 200 and small.headers["content-type"] == "image/webp"
        assert "immutable" in small.headers["cache-control"]
        with Image.open(io.BytesIO(small.content)) as image:
            assert image.size == (256, 192)
        assert len(small.content) < len(big.getvalue()) / 10
    other = api.client.get(f"/v1/results/{sha}/thumbnail", headers=api.key("bob"))
    assert other.status_code == 404


def test_results_go_with_their_tasks(api: Api) -> None:
    headers = api.key("ann")
    seed(api, "ann", 6)  # a month old
    assert api.client.get("/v1/results", headers=headers).json()["total"] == 6
    report = prune(api.services.database, api.services.blobs, older_than=7 * 86400)
    assert report.tasks == 2
    assert api.client.get("/v1/results", headers=headers).json()["total"] == 0
    with api.services.database.engine.connect() as connection:
        for table in (GalleryItemRow, GalleryCharacterRow):
            assert connection.scalar(select(func.count()).select_from(table)) == 0


def test_the_zip_holds_each_result_and_its_parameters(api: Api) -> None:
    headers = api.key("ann")
    seeded = seed(api, "ann", 7, characters=("Alice", "Bob"), per_task=1)
    answer = api.client.get("/v1/results.zip", params={"character": "Alice"}, headers=headers)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/zip"
    assert "castbook-results.zip" in answer.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert archive.testzip() is None
    listing = json.loads(archive.read("results.json"))
    alice = [s for s in reversed(seeded) if s.character == "Alice"]
    assert listing["count"] == len(alice) == 4
    for entry, made in zip(listing["results"], alice, strict=True):
        parameters = json.loads(archive.read(entry["file"].replace(".png", ".json")))
        assert parameters == entry
        assert (parameters["prompt"], parameters["seed"], parameters["score"]) == (
            made.prompt,
            made.seed,
            made.score,
        )
        assert parameters["negative_prompt"] == "blurry" and parameters["preset"] == "comfyui"
        assert parameters["characters"] == ["Alice"]
        assert archive.read(entry["file"]) == api.services.blobs.get(made.sha256)


# ---- what each job kind's result says about its outputs ---------------------------------------


def finished(kind: str, given: dict[str, Any], result: dict[str, Any], outputs: list[str]) -> Job:
    now = datetime.now(UTC)
    return Job(
        id="j1",
        owner="ann",
        kind=kind,
        queue="default",
        status=JobStatus.SUCCEEDED,
        input=given,
        result=result,
        error=None,
        error_data=None,
        progress_step=1,
        progress_total=1,
        progress_message="done",
        attempts=1,
        cancel_requested=False,
        worker=None,
        created_at=now,
        started_at=now,
        finished_at=now,
        updated_at=now,
        outputs=tuple(JobOutput(sha, "image", "image/png", 8, 8, None) for sha in outputs),
    )


def test_each_job_kind_is_described() -> None:
    generation = finished(
        "generation",
        {"request": {"prompt": "x", "characters": ["Alice"]}, "preset": "tiny"},
        {"prompt": "x, long hair", "negative_prompt": "blurry", "preset": "tiny"},
        ["a", "b"],
    )
    made = OutputDescription(
        prompt="x, long hair", negative_prompt="blurry", preset="tiny", characters=("Alice",)
    )
    assert describe_outputs(generation) == [made, made]

    batch = finished(
        "batch_render",
        {"characters": ["Alice"], "preset": "tiny"},
        {
            "preset": "tiny",
            "characters": ["Alice"],
            "variants": [
                {"output": "a", "prompt": "w", "final_prompt": "w, hair", "score": 80.5,
                 "negative_prompt": "n"},
            ],
            "contact_sheet": "sheet",
        },
        ["a", "sheet"],
    )  # fmt: skip
    assert describe_outputs(batch) == [
        OutputDescription(
            prompt="w, hair", negative_prompt="n", preset="tiny", score=80.5, characters=("Alice",)
        ),
        OutputDescription(shown=False),
    ]

    story = finished(
        "story",
        {},
        {"preset": "tiny", "panels": [{"scene": 1, "output": "p", "prompt": "at sea",
                                       "characters": ["Bob"], "score": 60}]},
        ["p", "board"],
    )  # fmt: skip
    assert describe_outputs(story) == [
        OutputDescription(
            prompt="at sea", preset="tiny", score=60.0, characters=("Bob",), node="scene 1"
        ),
        OutputDescription(shown=False),
    ]

    # A workflow: the making node's report; the score of the last node that scored it.
    workflow = finished(
        "workflow",
        {"graph": {}, "workflow": "w1"},
        {
            "order": ["gen", "eval1", "eval2"],
            "nodes": {
                "gen": {"outputs": {"images": ["a"]}, "prompt": "p", "negative_prompt": "n",
                        "preset": "tiny", "characters": ["Alice"]},
                "eval1": {"scores": [{"image": "a", "score": 10}]},
                "eval2": {"scores": [{"image": "a", "score": 90, "character": "Alice"}]},
            },
        },
        ["a", "z"],
    )  # fmt: skip
    described = describe_outputs(workflow)
    assert described[0] == OutputDescription(
        prompt="p", negative_prompt="n", preset="tiny", score=90.0, characters=("Alice",),
        node="gen", workflow="w1",
    )  # fmt: skip
    assert described[1] == OutputDescription(workflow="w1")
    assert (
        describe_outputs(replace(workflow, result=None)) == [OutputDescription(workflow="w1")] * 2
    )


# ---- the prompt preview -------------------------------------------------------------------------


@pytest.fixture
def preview_api(make_api: ApiFactory, home: Path) -> Api:
    """A preset of its own: the preview loads no model, so its folder need not exist."""
    (home / "presets.toml").write_text(
        '[presets.tiny]\nbackend = "diffusers"\nmodel = "/nowhere/sd15"\n'
        'options = { family = "sd15" }\n'
    )
    return make_api()


def test_the_preview_is_what_generation_sends(preview_api: Api) -> None:
    api = preview_api
    headers = api.key("ann")
    alice = add_character(api, headers, "Alice")
    api.client.patch(
        f"/v1/characters/{alice['id']}",
        json={"negative_prompt": "extra fingers", "physical": {"eyes": "green"}},
        headers=headers,
    )
    body = {"prompt": "reading a book", "negative_prompt": "blurry", "characters": [alice["id"]],
            "preset": "tiny"}  # fmt: skip
    answer = api.client.post("/v1/prompt/preview", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    shown = answer.json()
    # What generation's own preparation makes of the same request.
    preset = load_presets(api.services.settings.home).get("tiny")
    request = resolve_request(
        {"prompt": "reading a book", "negative_prompt": "blurry", "characters": ["Alice"]}, preset
    )
    prepared = prepare_request(request, preset, library=api.services.library("ann"))
    assert (shown["prompt"], shown["negative_prompt"]) == (
        prepared.prompt,
        prepared.negative_prompt,
    )
    assert "long black hair" in shown["prompt"] and "green eyes" in shown["prompt"]
    assert "extra fingers" in shown["negative_prompt"] and "blurry" in shown["negative_prompt"]
    assert shown["characters"] == ["Alice"] and shown["preset"] == "tiny"

    variants = api.client.post(
        "/v1/prompt/preview",
        json={"prompts": ["waving", "sleeping"], "characters": ["Alice"], "preset": "tiny"},
        headers=headers,
    ).json()["variants"]
    assert "waving" in variants[0]["prompt"] and "sleeping" in variants[1]["prompt"]
    # Image to image: the same injection (its init image is not needed to say it).
    redraw = api.client.post(
        "/v1/prompt/preview",
        json={"prompt": "at night", "characters": ["Alice"], "preset": "tiny", "mode": "i2i"},
        headers=headers,
    )
    assert redraw.status_code == 200, redraw.text
    assert redraw.json()["prompt"] == shown["prompt"].replace("reading a book", "at night")
    assert all("long black hair" in v["prompt"] for v in variants)


def test_the_preview_names_what_is_wrong_and_is_per_owner(preview_api: Api) -> None:
    api = preview_api
    ann = api.key("ann")
    alice = add_character(api, ann, "Alice")
    bob = api.key("bob")
    refused = api.client.post(
        "/v1/prompt/preview", json={"prompt": "x", "characters": [alice["id"]]}, headers=bob
    )
    assert refused.status_code == 422 and "characters.0" in refused.text
    unknown = api.client.post(
        "/v1/prompt/preview", json={"prompt": "x", "preset": "nope"}, headers=ann
    )
    assert unknown.status_code == 422 and "preset" in unknown.text
    empty = api.client.post("/v1/prompt/preview", json={"prompt": ""}, headers=ann)
    assert empty.status_code == 200 and empty.json()["prompt"] == ""
