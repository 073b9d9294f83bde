"""Quotas per API key (castbook.api.quotas): the request rate, queued tasks, stored bytes.

Each limit is driven over through the real app (KeyGate, QuotaGate, the routes) and must
answer 429 with Retry-After and a message naming the limit and its value, then clear; one
key's flood never limits another key. Tasks are queued into an executor that holds them
(nothing runs), so the queue only drains when the test cancels tasks.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from castbook.api import ApiConfig, create_app
from castbook.api.quotas import (
    QUEUED_RETRY_SECONDS,
    Quotas,
    RateLimiter,
    queues_task,
    stored_bytes,
    stores_images,
)
from castbook.errors import FieldError
from castbook.jobs import Job
from castbook.settings import Settings
from tests.support.api import Api, alice_png

DEADLINE = 30.0  # seconds; generous for a loaded machine, never a fixed wait


class HoldingExecutor:
    """Accepts tasks and runs none of them: they stay queued until cancelled."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    def start(self) -> None:
        pass

    def submit(self, job: Job) -> None:
        self.submitted.append(job.id)

    def shutdown(self, wait: bool = True) -> None:
        pass


@pytest.fixture
def quota_api(api_settings: Callable[..., Settings]) -> Iterator[Callable[..., Api]]:
    opened: list[TestClient] = []

    def make(**limits: Any) -> Api:
        # Uploads would run the lookalike check, which starts the evaluation workers (a face
        # model each: a minute of a loaded CPU per test); quotas are not about it.
        settings = replace(api_settings(), identify_on_add=False, **limits)
        app = create_app(settings, executor=HoldingExecutor(), config=ApiConfig())
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        return Api(client, app.state.services)

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def bearer(plain: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plain}"}


def until(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.02)


# ---- the request rate ------------------------------------------------------------------------


def test_a_key_over_its_rate_gets_429_and_the_limit_clears(
    quota_api: Callable[..., Api],
) -> None:
    # One token per 4 s: the fourth request is refused unless the four take over 4 s (at
    # 2 per second, as before, half a second of a loaded machine refilled one mid-burst).
    api = quota_api(rate_limit=0.25, rate_burst=3)
    _, plain = api.services.keys.create("busy", "ann")
    answers = [api.client.get("/v1/tasks", headers=bearer(plain)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]  # the burst
    refused = api.client.get("/v1/tasks", headers=bearer(plain))
    assert refused.status_code == 429
    body = refused.json()
    assert body["type"] == "QuotaExceeded" and body["limit"] == "rate"
    assert "rate limit of 0.25 requests/s" in body["error"] and "for this key" in body["error"]
    assert re.search(r"retry in (0\.[1-9]|[1-9])", body["error"]), body["error"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 4  # a token comes back within 4 s
    # Refused requests take no token: the key gets through again once one has refilled.
    until(
        lambda: api.client.get("/v1/tasks", headers=bearer(plain)).status_code == 200,
        "the rate limit to clear",
    )


def test_one_keys_flood_does_not_limit_another_key(quota_api: Callable[..., Api]) -> None:
    # One token per 100 s: the burst's two, then nothing however slowly the 20 requests run.
    api = quota_api(rate_limit=0.01, rate_burst=2)
    _, flooding = api.services.keys.create("flood", "ann")
    _, quiet = api.services.keys.create("quiet", "ann")  # the same owner, even
    codes = [api.client.get("/v1/tasks", headers=bearer(flooding)).status_code for _ in range(20)]
    assert codes[:2] == [200, 200] and codes.count(429) == 18
    assert api.client.get("/v1/tasks", headers=bearer(quiet)).status_code == 200
    assert api.client.get("/v1/tasks", headers=bearer(quiet)).status_code == 200


def test_open_paths_and_bad_keys_take_no_token(quota_api: Callable[..., Api]) -> None:
    # One token per 100 s: at one per second, ten slow requests on a loaded machine would
    # refill the token they took, and the test would pass though they took one.
    api = quota_api(rate_limit=0.01, rate_burst=1)
    _, plain = api.services.keys.create("k", "ann")
    for _ in range(5):
        assert api.client.get("/health").status_code == 200
        assert api.client.get("/v1/tasks", headers=bearer("cb_nope")).status_code == 401
    assert api.client.get("/v1/tasks", headers=bearer(plain)).status_code == 200


def test_the_compat_endpoints_answer_429_in_their_own_shape(
    quota_api: Callable[..., Api],
) -> None:
    api = quota_api(rate_limit=1.0, rate_burst=1)
    _, plain = api.services.keys.create("k", "ann")

    def over_the_limit() -> Any:
        # Two requests back to back: the second finds no token, unless a busy machine took
        # over a second between them (a token refilled); then the next pair is tried.
        api.client.post("/getImage", json={"task_id": "x"}, headers=bearer(plain))
        answer = api.client.post("/getImage", json={"task_id": "x"}, headers=bearer(plain))
        return answer if answer.status_code == 429 else None

    refused = until(over_the_limit, "a request over the rate limit")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    body = refused.json()
    assert body["output"] == [] and body["task_id"] is None and "time_required" in body
    assert "rate limit of 1 requests/s" in body["error"]
    assert body["error_data"]["limit"] == "rate"


def test_a_keys_own_rate_overrides_the_servers(quota_api: Callable[..., Api]) -> None:
    api = quota_api(rate_limit=1.0, rate_burst=1)
    _, roomy = api.services.keys.create("roomy", "ann", rate_limit=0)  # 0: no limit
    # One token per 100 s, so the third request is refused however slowly the three run.
    _, tight = api.services.keys.create("tight", "bob", rate_limit=0.01, rate_burst=2)
    assert all(
        api.client.get("/v1/tasks", headers=bearer(roomy)).status_code == 200 for _ in range(10)
    )
    codes = [api.client.get("/v1/tasks", headers=bearer(tight)).status_code for _ in range(3)]
    assert codes[:2] == [200, 200] and codes[2] == 429


def test_the_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.take("k", 10, 2) for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("k", 10, 2) == pytest.approx(0.1)
    now[0] += 0.05
    assert limiter.take("k", 10, 2) == pytest.approx(0.05)
    now[0] += 60  # a long pause refills no more than the burst
    assert [limiter.take("k", 10, 2) for _ in range(3)][2] > 0
    assert limiter.take("other", 10, 2) == 0.0
    assert limiter.take("k", 0, 1) == 0.0  # rate 0: no limit


# ---- queued tasks ----------------------------------------------------------------------------


def test_queued_tasks_over_the_limit_get_429_until_some_end(
    quota_api: Callable[..., Api],
) -> None:
    api = quota_api(max_queued_tasks=2)
    _, ann = api.services.keys.create("ann's", "ann")
    _, bob = api.services.keys.create("bob's", "bob")
    held = [api.services.jobs.create(kind="generation", input={}, owner="ann") for _ in range(2)]
    refused = api.client.post("/v1/generations", json={"prompt": "x"}, headers=bearer(ann))
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == str(QUEUED_RETRY_SECONDS)
    body = refused.json()
    assert body["limit"] == "queued_tasks"
    assert body["error"].startswith("at most 2 queued tasks per owner")
    assert "'ann' has 2 queued or running" in body["error"]
    # Every route that queues a task is held to it, the compat one in its own shape.
    for path in ("/v1/batch-renders", "/v1/stories", "/v1/workflows/run", "/getImagetoImage"):
        answer = api.client.post(path, json={}, headers=bearer(ann))
        assert answer.status_code == 429, path
    assert api.client.post("/getImagetoImage", json={}, headers=bearer(ann)).json()["output"] == []
    # Reading and cancelling are not queueing: they still work.
    assert api.client.get("/v1/tasks", headers=bearer(ann)).status_code == 200
    # Another owner has a queue of their own (an invalid body: 422 from the route itself).
    assert api.client.post("/v1/generations", json={}, headers=bearer(bob)).status_code == 422
    cancelled = api.client.post(f"/v1/tasks/{held[0].id}/cancel", headers=bearer(ann))
    assert cancelled.json()["status"] == "cancelled"
    assert api.client.post("/v1/generations", json={}, headers=bearer(ann)).status_code == 422


def test_running_tasks_count_too(quota_api: Callable[..., Api]) -> None:
    api = quota_api()
    _, ann = api.services.keys.create("ann's", "ann", max_queued=1)
    job = api.services.jobs.create(kind="generation", input={}, owner="ann")
    assert api.services.jobs.start(job.id, "worker-1") is not None
    assert api.client.post("/v1/generations", json={}, headers=bearer(ann)).status_code == 429
    api.services.jobs.fail(job.id, "stopped by the test")
    assert api.client.post("/v1/generations", json={}, headers=bearer(ann)).status_code == 422


def test_every_route_that_queues_a_task_is_classified(quota_api: Callable[..., Api]) -> None:
    """A new route answering 202 (a queued task) must be known to the queued-task limit."""
    schema = quota_api().client.app.openapi()  # type: ignore[attr-defined]
    accepted = [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "202" in operation.get("responses", {})
    ]
    assert len(accepted) >= 5
    for method, path in accepted:
        assert queues_task(method, path), f"{method} {path} is not held to the queued-task limit"
        assert stores_images(method, path)
    assert queues_task("POST", "/getImagetoImage")
    assert not queues_task("GET", "/v1/generations")
    assert not queues_task("POST", "/v1/tasks/abc/cancel")
    assert not stores_images("POST", "/v1/characters/abc")
    assert stores_images("POST", "/v1/characters/abc/images")


# ---- stored bytes ----------------------------------------------------------------------------


def upload(api: Api, plain: str, character: str) -> int:
    return api.client.post(
        f"/v1/characters/{character}/images",
        files=[("image", ("alice.png", alice_png(), "image/png"))],
        headers=bearer(plain),
    ).status_code


def test_storage_over_the_limit_gets_429_until_images_are_deleted(
    quota_api: Callable[..., Api],
) -> None:
    image_size = len(alice_png())
    api = quota_api(max_storage_mb=1.0)  # the server's; ann's key is tighter
    _, ann = api.services.keys.create("ann's", "ann", max_storage_bytes=image_size)
    _, bob = api.services.keys.create("bob's", "bob", max_storage_bytes=image_size)
    for plain, name in ((ann, "Ann"), (bob, "Bob")):
        made = api.client.post("/v1/characters", json={"name": name}, headers=bearer(plain))
        assert made.status_code == 201  # no images: not held to the storage limit
    assert upload(api, ann, "Ann") == 201
    used = stored_bytes(api.services.database, api.services.blobs, "ann")
    assert used >= image_size  # the image and its thumbnail
    refused = api.client.post(
        "/v1/characters/Ann/images",
        files=[("image", ("again.png", alice_png(), "image/png"))],
        headers=bearer(ann),
    )
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    body = refused.json()
    assert body["limit"] == "storage"
    assert body["error"].startswith(f"storage limit of {image_size} bytes per owner reached")
    assert f"'ann' holds {used} bytes" in body["error"]
    # A new task stores its inputs and results: held too. Imports as well.
    assert api.client.post("/v1/generations", json={}, headers=bearer(ann)).status_code == 429
    assert api.client.post("/v1/characters/import", headers=bearer(ann)).status_code == 429
    # Bob holds the same image bytes but has his own account of them.
    assert upload(api, bob, "Bob") == 201
    # Deleting what holds the bytes clears it; the refused upload changed nothing.
    character = api.client.get("/v1/characters/Ann", headers=bearer(ann)).json()
    assert len(character["images"]) == 1
    assert api.client.delete("/v1/characters/Ann", headers=bearer(ann)).status_code == 204
    assert stored_bytes(api.services.database, api.services.blobs, "ann") == 0
    assert api.client.post("/v1/characters", json={"name": "Ann"}, headers=bearer(ann)).is_success
    assert upload(api, ann, "Ann") == 201


def test_task_inputs_and_results_count_as_the_owners_storage(
    quota_api: Callable[..., Api],
) -> None:
    from castbook.jobs import JobOutput

    api = quota_api()
    services = api.services
    given, _ = services.blobs.put(b"an uploaded init image" * 10)
    made, _ = services.blobs.put(b"a result" * 100)
    job = services.jobs.create(kind="generation", input={"init_image": given}, owner="ann")
    services.jobs.start(job.id, "w")
    output = JobOutput(sha256=made, kind="image", media_type="image/png", width=1, height=1)
    services.jobs.succeed(job.id, [output], {})
    assert stored_bytes(services.database, services.blobs, "ann") == 220 + 800
    assert stored_bytes(services.database, services.blobs, "bob") == 0


# ---- settings and the keys command -----------------------------------------------------------


def test_settings_name_a_bad_limit() -> None:
    with pytest.raises(FieldError, match="CASTBOOK_RATE_LIMIT: must be 0"):
        Settings.from_env({"CASTBOOK_RATE_LIMIT": "-1"})
    with pytest.raises(FieldError, match="CASTBOOK_MAX_QUEUED_TASKS: must be a whole number"):
        Settings.from_env({"CASTBOOK_MAX_QUEUED_TASKS": "many"})
    with pytest.raises(FieldError, match="CASTBOOK_RATE_BURST: must be at least 1"):
        Settings.from_env({"CASTBOOK_RATE_BURST": "0"})
    settings = Settings.from_env({"CASTBOOK_MAX_STORAGE_MB": "2", "CASTBOOK_RATE_LIMIT": "0"})
    quotas = Quotas.from_settings(settings)
    assert quotas == Quotas(rate=0, burst=100, max_queued=1000, max_storage_bytes=2 * 1024**2)


def test_keys_carry_their_quotas_from_the_command_line(castbook_home: Path) -> None:
    from castbook.cli.serve import keys_app

    runner = CliRunner()
    made = runner.invoke(
        keys_app,
        ["create", "--name", "ci", "--rate", "5", "--burst", "10", "--max-queued", "3", "--json"],
    )
    assert made.exit_code == 0, made.output
    key = json.loads(made.stdout)
    assert key["limits"] == {
        "rate_limit": 5.0,
        "rate_burst": 10,
        "max_queued": 3,
        "max_storage_bytes": None,
    }
    changed = runner.invoke(
        keys_app, ["limits", key["id"][:8], "--max-storage-mb", "1.5", "--json"]
    )
    assert changed.exit_code == 0, changed.output
    assert json.loads(changed.stdout)["limits"] == {
        "rate_limit": None,
        "rate_burst": None,
        "max_queued": None,
        "max_storage_bytes": 1572864,
    }
    assert "quotas" in runner.invoke(keys_app, ["list"]).stdout  # a column when a key has some
    refused = runner.invoke(keys_app, ["create", "--name", "x", "--max-queued", "-1"])
    assert refused.exit_code != 0


@pytest.mark.parametrize("raw", ["inf", "Infinity", "1e999"])
def test_a_limit_that_is_not_finite_is_named(raw: str) -> None:
    """``castbook serve`` rounds CASTBOOK_STOP_GRACE for uvicorn's grace: infinity passed as
    positive and the server died at start with an OverflowError instead of naming it."""
    for name in ("CASTBOOK_STOP_GRACE", "CASTBOOK_API_MAX_BODY_MB"):
        with pytest.raises(FieldError, match=f"{name}: must be a finite number") as caught:
            Settings.from_env({name: raw})
        assert caught.value.field == name and repr(raw) in str(caught.value)
