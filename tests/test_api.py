"""The HTTP API in-process (Starlette's TestClient over httpx), on SQLite and PostgreSQL.

Generations run for real: the local executor runs the tiny random-weight SD 1.5 model through
a user preset in the test's CASTBOOK_HOME, the way a user's local model is run.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from castbook.db import Database
from castbook.jobs import Job, JobContext, JobOutput
from castbook.settings import Settings
from tests.conftest import make_image_bytes
from tests.support.api import (
    Api,
    ApiFactory,
    add_character,
    alice_png,
    read_events,
)
from tests.support.drawings import ALICE, character, png_bytes

# ---- gated handlers: jobs whose pace the test controls ---------------------------------------


class SteppingHandler:
    """Reports ``steps`` progress steps ``pause`` seconds apart; blocks until ``release``."""

    def __init__(self, steps: int = 4, pause: float = 0.1) -> None:
        self.steps = steps
        self.pause = pause
        self.release = threading.Event()
        self.release.set()

    def __call__(self, job: Job, context: JobContext) -> tuple[list[JobOutput], dict[str, Any]]:
        for step in range(1, self.steps + 1):
            context.progress(step, self.steps)
            time.sleep(self.pause)
        while not self.release.wait(0.02):
            context.progress(self.steps, self.steps)  # where a cancel arrives
        return [], {"ok": True}


# ---- auth ----------------------------------------------------------------------------------


def test_health_and_docs_need_no_key(make_api: ApiFactory) -> None:
    api = make_api()
    assert api.client.get("/health").json()["status"] == "ok"
    assert api.client.get("/docs").status_code == 200
    schema = api.client.get("/openapi.json").json()
    assert "/getImagetoImage" in schema["paths"] and "/v1/generations" in schema["paths"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def _routes(api: Api) -> list[tuple[str, str]]:
    """Every documented operation but /health, with its path parameters filled in."""
    paths = api.client.get("/openapi.json").json()["paths"]
    found = []
    for path, operations in paths.items():
        if path != "/health":
            filled = path.replace("{", "").replace("}", "")  # "{ref}" -> "ref"
            found.extend((method.upper(), filled) for method in operations)
    return found


def test_every_endpoint_needs_a_valid_key(make_api: ApiFactory, database_url: str) -> None:
    api = make_api(database_url)
    good = api.key("alice")
    revoked, plain = api.services.keys.create("old", "alice")
    api.services.keys.revoke(revoked.id)
    routes = _routes(api)
    assert len(routes) >= 15
    for headers in (
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer cb_not-a-key"},
        {"Authorization": "Bearer something-else"},
        {"Authorization": f"Bearer {plain}"},
    ):
        for method, path in routes:
            response = api.client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "key" in response.json()["error"]
    # The key is checked before anything else: a broken body or an unknown path is still 401.
    junk = {"content-type": "application/json"}
    assert api.client.post("/getImagetoImage", content=b"{bad", headers=junk).status_code == 401
    assert api.client.get("/v1/nothing-here").status_code == 401
    assert api.client.get("/v1/nothing-here", headers=good).status_code == 404
    refused = api.client.get("/v1/tasks", headers={"Authorization": f"Bearer {plain}"})
    assert "revoked" in refused.json()["error"]
    assert api.client.get("/v1/tasks", headers=good).json() == []


def test_keys_are_stored_hashed_and_listed_without_the_secret(make_api: ApiFactory) -> None:
    api = make_api()
    key, plain = api.services.keys.create("laptop")
    assert plain.startswith("cb_") and len(plain) > 40 and key.owner == "local"
    with api.services.database.session() as session:
        from castbook.db import ApiKeyRow

        row = session.get(ApiKeyRow, key.id)
        assert row is not None
        assert row.key_hash == hashlib.sha256(plain.encode()).hexdigest()
        assert plain not in (row.prefix, row.key_hash, row.name)
    assert api.services.keys.authenticate(plain).id == key.id
    listed = [k.to_json() for k in api.services.keys.list()]
    assert listed[0]["prefix"] == plain[:10] and plain not in json.dumps(listed)
    assert api.services.keys.revoke(key.id[:8]).revoked_at is not None


def test_keys_commands(castbook_home: Path) -> None:
    from typer.testing import CliRunner

    from castbook.api import ApiKeys
    from castbook.api.auth import AuthenticationError
    from castbook.cli.serve import keys_app

    runner = CliRunner()
    created = runner.invoke(keys_app, ["create", "--name", "laptop", "--owner", "ann", "--json"])
    assert created.exit_code == 0, created.output
    made = json.loads(created.stdout)
    assert made["key"].startswith("cb_") and made["owner"] == "ann"
    plain = runner.invoke(keys_app, ["create", "--name", "ci", "--plain"])
    assert plain.stdout.strip().startswith("cb_") and len(plain.stdout.split()) == 1
    listed = runner.invoke(keys_app, ["list", "--json"])
    assert [k["name"] for k in json.loads(listed.stdout)] == ["laptop", "ci"]
    assert made["key"] not in listed.stdout
    revoked = runner.invoke(keys_app, ["revoke", made["id"][:8]])
    assert revoked.exit_code == 0 and "Revoked" in revoked.stdout
    table = runner.invoke(keys_app, ["list"]).stdout
    assert "laptop" in table and "revoked" in table and "active" in table
    missing = runner.invoke(keys_app, ["revoke", "nope"])
    assert missing.exit_code == 1 and "no API key" in missing.stderr
    empty = runner.invoke(keys_app, ["create", "--name", " "])
    assert empty.exit_code == 1 and "name: must not be empty" in empty.stderr
    keys = ApiKeys(Database(Settings.from_env().database_url))
    with pytest.raises(AuthenticationError, match="revoked"):
        keys.authenticate(made["key"])
    keys.database.dispose()


def test_two_owners_never_see_each_others_records(
    make_api: ApiFactory, database_url: str, generating: Path
) -> None:
    api = make_api(database_url)
    alice, bob = api.key("alice"), api.key("bob")
    made = add_character(api, alice)
    task = api.client.post(
        "/v1/generations",
        json={"preset": "tiny", "characters": ["Alice"], "prompt": "at a cafe", "seed": 3},
        headers=alice,
    ).json()
    done = api.wait(task["id"], alice)
    assert done["status"] == "succeeded", done
    result = done["outputs"][0]["id"]
    image = made["images"][0]["sha256"]

    for path in (
        f"/v1/characters/{made['id']}",
        "/v1/characters/Alice",
        f"/v1/characters/{made['id']}/images/{image}",
        f"/v1/tasks/{task['id']}",
        f"/v1/tasks/{task['id']}/events",
        f"/v1/results/{result}",
    ):
        assert api.client.get(path, headers=alice).status_code == 200, path
        response = api.client.get(path, headers=bob)
        assert response.status_code == 404, path
        assert response.json()["type"] in ("CharacterNotFoundError", "NotFoundError")
    assert api.client.post(f"/v1/tasks/{task['id']}/cancel", headers=bob).status_code == 404
    assert api.client.post("/getImage", json={"id": task["id"]}, headers=bob).status_code == 404
    patched = api.client.patch(f"/v1/characters/{made['id']}", json={"hair": "x"}, headers=bob)
    assert patched.status_code == 404
    assert api.client.delete(f"/v1/characters/{made['id']}", headers=bob).status_code == 404
    assert api.client.get("/v1/characters", headers=bob).json() == []
    assert api.client.get("/v1/tasks", headers=bob).json() == []
    assert api.client.get("/v1/characters/export", headers=bob).json()["characters"] == []
    scored = api.client.post(
        "/v1/evaluations", data={"character": "Alice", "result": result}, headers=bob
    )
    assert scored.status_code == 404
    # Bob cannot borrow Alice's character or images by id either.
    for body, field in (
        ({"characters": [made["id"]], "prompt": "x"}, "characters.0"),
        ({"mode": "i2i", "init_image": result, "prompt": "x"}, "init_image"),
        ({"references": [image], "prompt": "x"}, "references.0"),
    ):
        response = api.client.post("/v1/generations", json={"preset": "tiny", **body}, headers=bob)
        assert response.status_code == 422 and response.json()["field"] == field, response.text
    # Bob's own character may share Alice's name.
    assert api.client.post("/v1/characters", json={"name": "Alice"}, headers=bob).status_code == 201
    assert len(api.client.get("/v1/characters", headers=alice).json()) == 1


# ---- generations and tasks -------------------------------------------------------------------


def test_a_generation_runs_as_a_task_with_live_events(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    headers = api.key("local")
    add_character(api, headers)
    submitted = api.client.post(
        "/v1/generations",
        json={"preset": "tiny", "characters": ["alice"], "prompt": "at a cafe", "batch": 2,
              "seed": 5},
        headers=headers,
    )  # fmt: skip
    assert submitted.status_code == 202, submitted.text
    task = submitted.json()
    assert submitted.headers["location"].endswith(f"/v1/tasks/{task['id']}")
    assert task["status"] in ("queued", "running")
    assert task["input"]["request"]["characters"] == ["Alice"]

    stream = api.client.get(f"/v1/tasks/{task['id']}/events", headers=headers)
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = read_events(stream.text)
    assert events[-1][0] == "done"
    finished = events[-1][1]
    assert finished["status"] == "succeeded", finished
    assert all(name == "progress" for name, _ in events[:-1])
    assert events[-2][1]["text"].startswith("succeeded")
    assert finished["result"]["prompt"] == "long black hair, at a cafe"
    assert finished["result"]["seed"] == 5

    assert len(finished["outputs"]) == 2
    for output in finished["outputs"]:
        download = api.client.get(output["url"], headers=headers)
        assert download.status_code == 200
        assert download.headers["content-type"] == "image/png"
        assert hashlib.sha256(download.content).hexdigest() == output["id"]
        with Image.open(io.BytesIO(download.content)) as image:
            assert image.size == (256, 256)
    listed = api.client.get("/v1/tasks?status=succeeded", headers=headers).json()
    assert [t["id"] for t in listed] == [task["id"]]


def test_tasks_page_by_cursor_without_skipping_or_repeating(
    make_api: ApiFactory, database_url: str
) -> None:
    api = make_api(database_url, handlers={})  # no handler: the tasks stay queued
    alice, bob = api.key("alice"), api.key("bob")
    jobs = api.services.jobs
    made = [jobs.create(kind="nothing", input={"n": n}, owner="alice").id for n in range(7)]
    bobs = jobs.create(kind="nothing", input={}, owner="bob").id
    # Four of them at the same instant: the order falls back to the id, pages still split.
    from castbook.db import JobRow

    with api.services.database.session() as session, session.begin():
        first = session.get(JobRow, made[2]).created_at
        for job_id in made[3:6]:
            session.get(JobRow, job_id).created_at = first
    newest_first = [t["id"] for t in api.client.get("/v1/tasks", headers=alice).json()]
    assert sorted(newest_first) == sorted(made) and bobs not in newest_first

    seen: list[str] = []
    url: str | None = "/v1/tasks?limit=3"
    pages = 0
    while url is not None:
        page = api.client.get(url, headers=alice)
        assert page.status_code == 200
        seen += [t["id"] for t in page.json()]
        if pages == 0:  # a task queued meanwhile does not shift the later pages
            made.append(jobs.create(kind="nothing", input={}, owner="alice").id)
        pages += 1
        link = page.headers.get("link")
        url = link.split(">")[0].lstrip("<") if link else None
    assert seen == newest_first and pages == 3  # 3 + 3 + 1: the short page links nothing

    # A page's last task deleted meanwhile (retention): its link still leads on.
    now = [t["id"] for t in api.client.get("/v1/tasks", headers=alice).json()]
    link = api.client.get("/v1/tasks?limit=2", headers=alice).headers["link"]
    with api.services.database.session() as session, session.begin():
        session.delete(session.get(JobRow, now[1]))
    url = link.split(">")[0].lstrip("<")
    assert [t["id"] for t in api.client.get(url, headers=alice).json()] == now[2:4]
    for bad in ("x", "12-", "-abc", "999999999999999999-abc", "1-a/b"):
        refused = api.client.get("/v1/tasks", params={"cursor": bad}, headers=alice)
        assert refused.status_code == 422 and refused.json()["field"] == "cursor", bad
    assert [t["id"] for t in api.client.get("/v1/tasks", headers=bob).json()] == [bobs]


def test_events_report_each_step_until_done(make_api: ApiFactory, database_url: str) -> None:
    handler = SteppingHandler(steps=4, pause=0.2)
    api = make_api(database_url, handlers={"generation": handler})
    headers = api.key("alice")
    task = api.client.post(
        "/v1/generations", json={"preset": "tiny-plain", "prompt": "x"}, headers=headers
    )
    # No presets.toml here: an unknown preset is refused before anything is queued.
    assert task.status_code == 422 and task.json()["field"] == "preset"
    task = api.client.post(
        "/v1/generations", json={"preset": "sd15-ip-adapter", "prompt": "x"}, headers=headers
    ).json()
    events = read_events(api.client.get(f"/v1/tasks/{task['id']}/events", headers=headers).text)
    texts = [data["text"] for name, data in events if name == "progress"]
    for step in range(1, 5):
        assert f"running {step}/4" in texts
    assert texts.index("running 1/4") < texts.index("running 4/4")
    assert events[-1][0] == "done" and events[-1][1]["status"] == "succeeded"
    assert events[-1][1]["result"] == {"ok": True}


def test_event_streams_and_waits_end_when_the_server_stops(
    make_api: ApiFactory, generating: Path
) -> None:
    """A stopping server (``castbook serve`` sets ``stopping`` at SIGTERM, before uvicorn waits
    for open requests) ends its event streams and ``/getImagetoImage`` waits at once, with the
    task as it stands, instead of holding the stop up until the task ends."""
    handler = SteppingHandler(steps=1, pause=0)
    handler.release.clear()  # the tasks run until the test ends
    api = make_api(handlers={"generation": handler}, workers=2)
    headers = api.key("alice")
    task = api.client.post(
        "/v1/generations", json={"preset": "tiny-plain", "prompt": "x"}, headers=headers
    ).json()
    answers: dict[str, Any] = {}

    def follow() -> None:
        response = api.client.get(f"/v1/tasks/{task['id']}/events", headers=headers)
        answers["events"] = read_events(response.text)

    def wait_for_result() -> None:
        body = {"app_id": "tiny-plain", "image": "data:image/png;base64,"
                + base64.b64encode(alice_png()).decode(), "prompt": "x"}  # fmt: skip
        answers["compat"] = api.client.post("/getImagetoImage", json=body, headers=headers)

    readers = [threading.Thread(target=follow), threading.Thread(target=wait_for_result)]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 120  # generous: a loaded machine
    while api.services.task_watch().reads < 2 or api.job_count() < 2:  # both are waiting
        assert time.monotonic() < deadline
        time.sleep(0.02)
    api.services.stopping = True
    for reader in readers:
        reader.join(timeout=120)
    try:
        assert not any(reader.is_alive() for reader in readers), "a request outlived the stop"
        events = answers["events"]
        assert events and all(name == "progress" for name, _ in events), events
        compat = answers["compat"]
        assert compat.status_code == 200, compat.text
        assert compat.json()["status"] in ("queued", "running") and compat.json()["output"] == []
    finally:
        handler.release.set()


def test_open_event_streams_share_one_read_per_poll(make_api: ApiFactory) -> None:
    """Six clients following six tasks cost the server one query per poll, not six."""
    handler = SteppingHandler(steps=3, pause=0.1)
    handler.release.clear()  # every task holds until all streams are open
    api = make_api(handlers={"generation": handler}, workers=6)
    headers = api.key("alice")
    body = {"preset": "sd15-ip-adapter", "prompt": "x"}
    tasks = [
        api.client.post("/v1/generations", json=body, headers=headers).json() for _ in range(6)
    ]
    watch = api.services.task_watch()
    asks = 0
    original = watch.state

    async def counted(job_id: str):  # type: ignore[no-untyped-def]
        nonlocal asks
        asks += 1
        return await original(job_id)

    watch.state = counted  # type: ignore[method-assign]
    streams: dict[str, list[tuple[str, dict[str, Any]]]] = {}

    def follow(task_id: str) -> None:
        response = api.client.get(f"/v1/tasks/{task_id}/events", headers=headers)
        streams[task_id] = read_events(response.text)

    readers = [threading.Thread(target=follow, args=(task["id"],)) for task in tasks]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 120  # generous: a loaded machine
    while asks < 60:  # every stream has been polling for a while
        assert time.monotonic() < deadline, asks
        time.sleep(0.02)
    handler.release.set()
    for reader in readers:
        reader.join(timeout=120)
    for task in tasks:
        events = streams[task["id"]]
        assert events[-1][0] == "done" and events[-1][1]["status"] == "succeeded", events
    # Streams that wake within one poll of each other reuse the same read.
    assert watch.reads < asks / 2, (watch.reads, asks)


def test_cancel_a_queued_and_a_running_task(make_api: ApiFactory, database_url: str) -> None:
    handler = SteppingHandler(steps=1, pause=0)
    handler.release.clear()  # the first job runs until cancelled
    api = make_api(database_url, handlers={"generation": handler})
    headers = api.key("alice")
    body = {"preset": "sd15-ip-adapter", "prompt": "x"}
    running = api.client.post("/v1/generations", json=body, headers=headers).json()
    queued = api.client.post("/v1/generations", json=body, headers=headers).json()
    deadline = time.monotonic() + 120  # generous: a loaded machine
    while (
        api.client.get(f"/v1/tasks/{running['id']}", headers=headers).json()["status"] != "running"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.02)

    cancelled = api.client.post(f"/v1/tasks/{queued['id']}/cancel", headers=headers).json()
    assert cancelled["status"] == "cancelled"
    asked = api.client.post(f"/v1/tasks/{running['id']}/cancel", headers=headers).json()
    assert asked["cancel_requested"] is True
    assert api.wait(running["id"], headers)["status"] == "cancelled"
    again = api.client.post(f"/v1/tasks/{running['id']}/cancel", headers=headers)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    missing = api.client.get("/v1/tasks/nope", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"] == "no task 'nope'"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"batch": 9}, "batch", "must be between 1 and 8, got 9"),
        ({"width": 100}, "width", "must be between 256 and 1536, got 100"),
        ({"steps": "many"}, "steps", "valid integer"),
        ({"guidance": 31}, "guidance", "must be between 1 and 30"),
        ({"denoise": 1.5}, "denoise", "must be between 0 and 1"),
        ({"strength": 0.5}, "strength", "castbook calls it denoise"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"mode": "3d"}, "mode", "t2i"),
        ({"preset": "nope"}, "preset", "no preset 'nope'"),
        ({"preset": "tiny-t2i", "mode": "i2i"}, "mode", "does t2i, not i2i"),
        ({"characters": ["Nobody"]}, "characters.0", "no character 'Nobody'"),
        ({"references": ["/etc/passwd"]}, "references.0", "http(s) URL"),
        ({"init_image": "data:image/png;base64,aGVsbG8=", "mode": "i2i"}, "init_image", "image"),
        ({"references": ["http://127.0.0.1:9/a.png"]}, "references.0", "loopback"),
        ({"references": ["0" * 64]}, "references.0", "no stored image"),
        ({"prompt": ""}, "prompt", "is empty"),
        ({"inference_type": "GPU!"}, "inference_type", "pattern"),
    ],
)
def test_invalid_generations_name_the_field_and_write_nothing(
    make_api: ApiFactory, generating: Path, body: dict[str, Any], field: str, message: str
) -> None:
    api = make_api()
    headers = api.key("alice")
    response = api.client.post(
        "/v1/generations", json={"preset": "tiny", "prompt": "x", **body}, headers=headers
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == field
    assert message in problem["error"], problem
    assert api.job_count() == 0 and api.blobs() == set()


def test_malformed_json_and_wrong_types_are_422(make_api: ApiFactory) -> None:
    api = make_api()
    headers = {**api.key("alice"), "content-type": "application/json"}
    for content in (b"{not json", b"[1, 2]", b'"text"', b""):
        response = api.client.post("/v1/generations", content=content, headers=headers)
        assert response.status_code == 422, content
        assert response.json()["field"] == "body"
    response = api.client.post("/v1/characters", json={"name": 5, "tags": "x"}, headers=headers)
    fields = {p["field"] for p in response.json()["errors"]}
    assert response.status_code == 422 and fields == {"name", "tags"}
    assert api.job_count() == 0 and api.client.get("/v1/characters", headers=headers).json() == []


def test_request_bodies_over_the_limit_get_413(make_api: ApiFactory) -> None:
    api = make_api(max_body_bytes=2000)
    headers = api.key("alice")
    big = {"name": "Alice", "description": "x" * 3000}
    response = api.client.post("/v1/characters", json=big, headers=headers)
    assert response.status_code == 413
    assert "over the limit" in response.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"name": "Alice", "description": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    response = api.client.post(
        "/v1/characters", content=chunks(), headers={**headers, "content-type": "application/json"}
    )
    assert response.status_code == 413
    assert api.client.get("/v1/characters", headers=headers).json() == []
    ok = api.client.post("/v1/characters", json={"name": "Alice"}, headers=headers)
    assert ok.status_code == 201


# ---- characters ----------------------------------------------------------------------------


def test_characters_crud_images_export_import(make_api: ApiFactory) -> None:
    api = make_api()
    headers = api.key("local")
    client = api.client
    made = client.post(
        "/v1/characters",
        json={"name": "Alice", "style_prompt": "long black hair", "physical": {"eyes": "blue"},
              "accessories": ["necklace"], "tags": ["hero"]},
        headers=headers,
    )  # fmt: skip
    assert made.status_code == 201
    alice = made.json()
    assert alice["physical"]["eyes"] == "blue" and alice["images"] == []
    duplicate = client.post("/v1/characters", json={"name": "ALICE"}, headers=headers)
    assert duplicate.status_code == 409 and "already exists" in duplicate.json()["error"]
    assert duplicate.json()["field"] == "name"

    huge = make_image_bytes((10, 10, 10), (3000, 1500))
    uploaded = client.post(
        f"/v1/characters/{alice['id']}/images",
        files=[("image", ("a.png", alice_png(), "image/png")),
               ("image", ("huge.png", huge, "image/png"))],
        headers=headers,
    )  # fmt: skip
    assert uploaded.status_code == 201, uploaded.text
    images = uploaded.json()["images"]
    assert [(i["width"], i["height"]) for i in images] == [(256, 256), (1536, 768)]
    assert uploaded.json()["primary_image"] == images[0]["sha256"]
    not_an_image = client.post(
        f"/v1/characters/{alice['id']}/images",
        files=[("image", ("notes.png", b"hello", "image/png"))],
        headers=headers,
    )
    assert not_an_image.status_code == 422 and "notes.png" in not_an_image.json()["error"]

    picture = client.get(images[1]["url"], headers=headers)
    assert picture.headers["content-type"] == "image/png"
    assert hashlib.sha256(picture.content).hexdigest() == images[1]["sha256"]
    thumb = client.get(images[1]["thumbnail_url"], headers=headers)
    assert thumb.headers["content-type"] == "image/webp"

    patched = client.patch(
        "/v1/characters/alice",
        json={"hair": "long black", "tags": [], "primary_image": images[1]["sha256"]},
        headers=headers,
    ).json()
    assert patched["physical"]["hair"] == "long black" and patched["tags"] == []
    assert patched["primary_image"] == images[1]["sha256"]
    removed = client.delete(f"/v1/characters/Alice/images/{images[0]['sha256']}", headers=headers)
    assert len(removed.json()["images"]) == 1
    assert images[0]["sha256"] not in api.blobs()  # no other record used it

    exported = client.get("/v1/characters/export?format=nbp", headers=headers).json()
    assert exported["type"] == "characters" and exported["characters"][0]["name"] == "Alice"
    assert client.delete(f"/v1/characters/{alice['id']}", headers=headers).status_code == 204
    assert client.get(f"/v1/characters/{alice['id']}", headers=headers).status_code == 404
    assert api.blobs() == set()
    report = client.post("/v1/characters/import", json=exported, headers=headers).json()
    assert report["imported"] == 1
    report = client.post("/v1/characters/import", json=exported, headers=headers).json()
    assert report["skipped"] == 1 and report["imported"] == 0
    bad = client.post("/v1/characters/import", json={"hello": 1}, headers=headers)
    assert bad.status_code == 422 and bad.json()["type"] == "ImportFormatError"


def test_evaluation_scores_images_against_a_character(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    headers = api.key("alice")
    add_character(api, headers)
    task = api.client.post(
        "/v1/generations", json={"preset": "tiny-plain", "prompt": "x"}, headers=headers
    ).json()
    result = api.wait(task["id"], headers)["outputs"][0]["id"]
    response = api.client.post(
        "/v1/evaluations",
        data={"character": "Alice", "result": [result]},
        files=[("image", ("same.png", png_bytes(character(**ALICE, seed=4)), "image/png")),
               ("image", ("other.png", make_image_bytes((30, 30, 200), (120, 160)), "image/png")),
               ("image", ("broken.png", b"nope", "image/png"))],
        headers=headers,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    report = response.json()
    scores = {s["source"]: s for s in report["scores"]}
    assert set(scores) == {"same.png", "other.png", "broken.png", result}
    assert scores["same.png"]["score"] > scores["other.png"]["score"] + 10
    assert scores["broken.png"]["score"] is None and scores["broken.png"]["error"]
    assert report["most_consistent"] == "same.png"
    nothing = api.client.post("/v1/evaluations", data={"character": "Alice"}, headers=headers)
    assert nothing.status_code == 422 and nothing.json()["field"] == "image"


def test_the_preset_catalog_is_read_again_when_presets_toml_changes(
    make_api: ApiFactory,
) -> None:
    """The server keeps the parsed catalogue while presets.toml is unchanged (a submit costs
    a stat, not a parse) and reads it again after any edit, even one within a clock tick."""
    import os

    api = make_api()
    home = api.services.settings.home
    path = home / "presets.toml"
    first = '[presets.aa]\nbackend = "openai"\nmodel = "m1"\n'
    path.write_text(first)
    old = time.time_ns() - 10_000_000_000  # an edit long ago: its catalogue may be kept
    os.utime(path, ns=(old, old))
    catalog = api.services.presets()
    assert api.services.presets() is catalog  # unchanged file: kept
    assert catalog.get("aa").model == "m1"
    path.write_text(first.replace("m1", "m2"))  # same size; its time says "just now"
    assert api.services.presets().get("aa").model == "m2"
    path.write_text(first.replace("m1", "m3"))  # again within the same tick: not kept
    assert api.services.presets().get("aa").model == "m3"
    os.utime(path, ns=(old + 1, old + 1))
    assert api.services.presets() is api.services.presets()  # settled: kept again
    path.unlink()
    assert "aa" not in {p.id for p in api.services.presets()}


def test_a_task_runs_again_with_the_same_settings(make_api: ApiFactory, generating: Path) -> None:
    """Re-run copies the stored request (seed included): the same pictures, a new task that
    names the first; only the owner's own tasks, and only kinds whose input is the request."""
    api = make_api()
    headers, bob = api.key("local"), api.key("bob")
    add_character(api, headers)
    body = {"preset": "tiny", "characters": ["alice"], "prompt": "on a bridge", "seed": 11}
    first = api.client.post("/v1/generations", json=body, headers=headers).json()
    done = api.wait(first["id"], headers)
    assert done["status"] == "succeeded", done

    again = api.client.post(f"/v1/tasks/{first['id']}/rerun", headers=headers)
    assert again.status_code == 202, again.text
    task = again.json()
    assert task["rerun_of"] == first["id"] and task["id"] != first["id"]
    assert task["kind"] == "generation" and task["input"] == done["input"]
    second = api.wait(task["id"], headers)
    assert second["status"] == "succeeded", second

    # The same seed and request: the same pixels (the files' metadata names their task).
    def pixels(task: dict[str, Any]) -> list[bytes]:
        found = []
        for output in task["outputs"]:
            data = api.client.get(output["url"], headers=headers).content
            with Image.open(io.BytesIO(data)) as image:
                found.append(image.convert("RGB").tobytes())
        return found

    assert pixels(second) == pixels(done)

    refused = api.client.post(f"/v1/tasks/{first['id']}/rerun", headers=bob)
    assert refused.status_code == 404  # another owner's task is not there for bob
    pull = api.services.jobs.create(kind="model_pull", input={"preset": "tiny"}, owner="local")
    api.services.jobs.cancel(pull.id, "local")  # never handed to the executor: only its row
    wrong = api.client.post(f"/v1/tasks/{pull.id}/rerun", headers=headers)
    assert wrong.status_code == 422 and "model_pull task cannot be re-run" in wrong.text


def test_a_task_a_worker_took_although_queueing_it_failed_is_answered_not_refused(
    make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand-over reported an error (a broker's confirm timed out) but a worker took the
    task: the client gets the running task, not a "could not queue" error for a task that
    goes on; a task no worker took is failed and refused as before."""
    from castbook.errors import StorageError

    api = make_api()
    services = api.services

    def taken_then_error(job: Job) -> None:
        services.jobs.start(job.id, "w")
        raise RuntimeError("the broker's confirm timed out")

    monkeypatch.setattr(services.executor, "submit", taken_then_error)
    taken = services.submit(services.jobs.create(kind="demo", input={}))
    assert taken.status.value == "running" and taken.worker == "w" and taken.error is None

    def refused(job: Job) -> None:
        raise RuntimeError("the broker is down")

    monkeypatch.setattr(services.executor, "submit", refused)
    job = services.jobs.create(kind="demo", input={})
    with pytest.raises(StorageError, match="broker is down"):
        services.submit(job)
    assert services.jobs.get(job.id).status.value == "failed"
