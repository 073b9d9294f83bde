"""Retention: finished tasks, their outputs and their input-only images go after
CASTBOOK_TASK_RETENTION (by a pass in the running server, or `castbook tasks prune`); nothing a
character, a kept task or a live task uses ever goes; a finisher that lost its job leaves no
orphan blob behind."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from castbook.api import ApiConfig, create_app
from castbook.blobs import BlobStore
from castbook.db import Database, JobInputRow, JobOutputRow, JobRow
from castbook.db.references import referenced_blob_ids
from castbook.errors import FieldError, GenerationCancelled, NotFoundError
from castbook.jobs import (
    Job,
    JobContext,
    JobOutput,
    JobStore,
    LocalExecutor,
    PartialResults,
    StoppedWithResults,
    retention,
    run_job,
)
from castbook.jobs.retention import BLOB_GRACE, holdings, prune
from castbook.library import CharacterLibrary, ImageInput
from castbook.settings import Settings, parse_duration
from tests.conftest import make_image_bytes
from tests.support.cli import castbook

DEADLINE_S = 60.0  # generous: the machine is shared
# These tests age blobs by setting their files' times, which only the folder allows (an S3
# object's Last-Modified cannot be set back); tests/test_blobs_s3_api.py prunes a bucket.
LIBRARY_STORES = ("folder",)


# ---- helpers ----------------------------------------------------------------------------------


def red() -> ImageInput:
    return ImageInput(make_image_bytes((220, 30, 30)), "red.png")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def age_blob(blobs: BlobStore, blob_id: str, seconds: float = 2 * BLOB_GRACE) -> None:
    """Make a blob look written ``seconds`` ago (what a real store's old blobs look like)."""
    then = time.time() - seconds
    os.utime(blobs.path(blob_id), (then, then))


def age_all(blobs: BlobStore) -> None:
    for blob_id in blobs:
        age_blob(blobs, blob_id)


def output(blob_id: str) -> JobOutput:
    return JobOutput(blob_id, "image", "image/png", 8, 8, seed=1)


def finished_task(
    store: JobStore,
    *,
    days_ago: float,
    outputs: Sequence[str] = (),
    input: dict[str, Any] | None = None,
    status: str = "succeeded",
) -> str:
    """A task that ended ``days_ago`` days ago with these output blobs."""
    job = store.create(kind="generation", input=input or {})
    store.start(job.id, "w")
    if status == "succeeded":
        store.succeed(job.id, [output(o) for o in outputs], {}, worker="w")
    elif status == "failed":
        partial = PartialResults([output(o) for o in outputs], {})
        store.fail(job.id, "boom", partial=partial, worker="w")
    else:
        store.cancel(job.id)
        store.mark_cancelled(job.id, worker="w")
    ended = datetime.now(UTC) - timedelta(days=days_ago)
    _set(store, job.id, finished_at=ended, created_at=ended, started_at=ended)
    return job.id


def _set(store: JobStore, job_id: str, **values: Any) -> None:
    with store.database.session() as session:
        session.execute(update(JobRow).where(JobRow.id == job_id).values(**values))
        session.commit()


def exists(store: JobStore, job_id: str) -> bool:
    try:
        store.get(job_id)
    except NotFoundError:
        return False
    return True


@pytest.fixture
def world(library: CharacterLibrary) -> World:
    return World(library, JobStore(library.database, library.blobs))


@dataclasses.dataclass
class World:
    library: CharacterLibrary
    store: JobStore

    @property
    def blobs(self) -> BlobStore:
        return self.library.blobs

    def put(self, data: bytes) -> str:
        return self.blobs.put(data)[0]


# ---- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("3600s", 3600)]
)
def test_durations_read_with_their_unit(raw: str, seconds: float) -> None:
    assert parse_duration("X", raw) == seconds
    assert Settings.from_env({"CASTBOOK_TASK_RETENTION": raw}).task_retention == seconds


@pytest.mark.parametrize("raw", ["30", "3 days", "-1d", "0d", "d", "1w", "1.5.0h"])
def test_a_bad_duration_names_the_setting_and_the_value(raw: str) -> None:
    with pytest.raises(FieldError) as caught:
        Settings.from_env({"CASTBOOK_TASK_RETENTION": raw})
    assert caught.value.field == "CASTBOOK_TASK_RETENTION"
    assert repr(raw) in str(caught.value)


@pytest.mark.parametrize("raw", ["off", "0", "never", "OFF", ""])
def test_retention_off_keeps_everything_and_is_the_default(raw: str) -> None:
    assert Settings.from_env({"CASTBOOK_TASK_RETENTION": raw}).task_retention is None


# ---- prune ------------------------------------------------------------------------------------


def test_prune_removes_old_finished_tasks_with_their_outputs_and_input_only_images(
    world: World,
) -> None:
    store, blobs = world.store, world.blobs
    old_out, old_input = world.put(b"old output"), world.put(b"uploaded init image")
    failed_out = world.put(b"partial output of a failed task")
    old = finished_task(store, days_ago=40, outputs=[old_out], input={"init_image": old_input})
    old_failed = finished_task(store, days_ago=35, outputs=[failed_out], status="failed")
    old_cancelled = finished_task(store, days_ago=31, status="cancelled")
    recent_out = world.put(b"recent output")
    recent = finished_task(store, days_ago=2, outputs=[recent_out])
    age_all(blobs)

    report = prune(store.database, blobs, older_than=parse_duration("x", "30d"))

    assert sorted(report.task_ids) == sorted([old, old_failed, old_cancelled])
    assert (report.tasks, report.outputs, report.blobs) == (3, 2, 3)
    assert report.bytes == sum(
        len(b) for b in (b"old output", b"uploaded init image", b"partial output of a failed task")
    )
    for job_id in (old, old_failed, old_cancelled):
        assert not exists(store, job_id)
    for blob_id in (old_out, old_input, failed_out):
        assert not blobs.exists(blob_id)
    assert exists(store, recent) and blobs.exists(recent_out)
    # A second pass finds nothing more.
    again = prune(store.database, blobs, older_than=parse_duration("x", "30d"))
    assert (again.tasks, again.blobs) == (0, 0)


def test_prune_keeps_what_characters_kept_tasks_and_live_tasks_use(world: World) -> None:
    store, blobs = world.store, world.blobs
    character = world.library.create({"name": "A"}, [red()])
    reference = character.images[0]
    shared_out = world.put(b"the same bytes twice")
    live_input = world.put(b"init image of a queued task")
    running_input = world.put(b"init image of a running task")
    # Old tasks whose outputs / inputs are also used elsewhere:
    finished_task(
        store,
        days_ago=90,
        outputs=[reference.sha256, shared_out],
        input={"references": [reference.sha256], "init_image": live_input},
    )
    finished_task(store, days_ago=90, input={"init_image": running_input})
    kept = finished_task(store, days_ago=1, outputs=[shared_out])
    queued = store.create(kind="generation", input={"init_image": live_input})
    running = store.create(kind="generation", input={"init_image": running_input})
    store.start(running.id, "w")
    # Live tasks never expire, however old they are.
    long_ago = datetime.now(UTC) - timedelta(days=365)
    _set(store, queued.id, created_at=long_ago)
    _set(store, running.id, created_at=long_ago, started_at=long_ago)
    age_all(blobs)

    report = prune(store.database, blobs, older_than=30 * 86400)

    assert report.tasks == 2
    assert report.blobs == 0
    for blob_id in (
        reference.sha256,
        reference.thumbnail_sha256,
        shared_out,
        live_input,
        running_input,
    ):
        assert blobs.exists(blob_id), blob_id
    assert exists(store, kept) and exists(store, queued.id) and exists(store, running.id)
    assert world.library.image_bytes(reference) == red().data


def test_a_dry_run_deletes_nothing_and_reports_what_a_prune_deletes(world: World) -> None:
    store, blobs = world.store, world.blobs
    out, upload = world.put(b"an output"), world.put(b"an upload")
    shared = world.put(b"shared")
    finished_task(store, days_ago=10, outputs=[out, shared], input={"image": upload})
    finished_task(store, days_ago=1, outputs=[shared])
    leftover = world.put(b"written and never recorded (a killed worker)")
    age_all(blobs)
    before = sorted(blobs)

    dry = prune(store.database, blobs, older_than=7 * 86400, dry_run=True)

    assert sorted(blobs) == before
    assert len(store.list("local", limit=10)) == 2
    real = prune(store.database, blobs, older_than=7 * 86400)
    assert dry.dry_run and not real.dry_run
    assert (dry.tasks, dry.outputs, dry.blobs, dry.bytes, dry.task_ids) == (
        real.tasks,
        real.outputs,
        real.blobs,
        real.bytes,
        real.task_ids,
    )
    assert (real.tasks, real.outputs, real.blobs) == (1, 2, 3)
    assert sorted(blobs) == [shared]
    assert not blobs.exists(leftover)


def test_blobs_written_recently_are_left_for_a_later_pass(world: World) -> None:
    """A writer stores a blob before it commits the row that names it: a pass running in
    between must not take it."""
    store, blobs = world.store, world.blobs
    fresh = world.put(b"just written, row not committed yet")
    report = prune(store.database, blobs, older_than=None)
    assert blobs.exists(fresh) and report.held_back == 1 and report.blobs == 0
    # Storing an existing blob again refreshes it too (the bytes are shared).
    age_blob(blobs, fresh)
    world.put(b"just written, row not committed yet")
    assert prune(store.database, blobs, older_than=None).held_back == 1
    assert blobs.exists(fresh)
    age_blob(blobs, fresh)
    assert prune(store.database, blobs, older_than=None).blobs == 1
    assert not blobs.exists(fresh)


def test_a_running_tasks_outputs_survive_until_it_records_them(world: World) -> None:
    """A long task writes its first outputs long before it commits them: the sweep keeps
    every blob written since the oldest running task started."""
    store, blobs = world.store, world.blobs
    job = store.create(kind="batch_render", input={})
    store.start(job.id, "w")
    three_hours_ago = datetime.now(UTC) - timedelta(hours=3)
    _set(store, job.id, started_at=three_hours_ago)
    early = world.put(b"variant 1, written two hours ago")
    age_blob(blobs, early, 2 * 3600)
    older = world.put(b"written before the task started")
    age_blob(blobs, older, 4 * 3600)

    report = prune(store.database, blobs, older_than=86400)

    assert blobs.exists(early) and report.held_back == 1
    assert not blobs.exists(older) and report.blobs == 1
    store.succeed(job.id, [output(early)], {}, worker="w")
    assert blobs.exists(early)
    assert prune(store.database, blobs, older_than=86400).blobs == 0


def test_a_task_accepted_during_a_pass_keeps_the_old_result_it_names(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client submits an old result by id while a pass runs: the pass read the references
    before the new task was committed, but the task refreshed the blob first, so the pass
    sees it as new and leaves it."""
    store, blobs = world.store, world.blobs
    out = world.put(b"an old result the user submits again by id")
    finished_task(store, days_ago=60, outputs=[out])
    age_all(blobs)
    accepted: list[str] = []

    def references_then_a_commit(*args: Any, **kwargs: Any) -> set[str]:
        snapshot = referenced_blob_ids(*args, **kwargs)
        accepted.append(store.create(kind="generation", input={"init_image": out}).id)
        return snapshot

    monkeypatch.setattr(retention, "referenced_blob_ids", references_then_a_commit)
    report = prune(store.database, blobs, older_than=30 * 86400)

    assert report.tasks == 1 and accepted and report.held_back == 1
    assert blobs.exists(out)


def test_a_task_finishing_during_a_pass_keeps_its_outputs(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second server's task finishes while this pass runs, with bytes that are already
    stored, unreferenced and old (a pruned task's output, made again from the same seed)."""
    store, blobs = world.store, world.blobs
    same = world.put(b"a result made twice from one seed")
    finished_task(store, days_ago=60, outputs=[same])
    age_all(blobs)
    job = store.create(kind="generation", input={})
    store.start(job.id, "other-server")
    finished: list[Job] = []

    def references_then_a_commit(*args: Any, **kwargs: Any) -> set[str]:
        snapshot = referenced_blob_ids(*args, **kwargs)
        made = world.put(b"a result made twice from one seed")  # what the handler does
        finished.append(store.succeed(job.id, [output(made)], {}, worker="other-server"))
        return snapshot

    monkeypatch.setattr(retention, "referenced_blob_ids", references_then_a_commit)
    report = prune(store.database, blobs, older_than=30 * 86400)

    assert report.tasks == 1 and finished[0].status == "succeeded"
    assert blobs.exists(same)


def test_holdings_say_what_is_kept_and_when_it_expires(world: World) -> None:
    store, blobs = world.store, world.blobs
    character = world.library.create({"name": "A"}, [red()])
    out = world.put(b"12345")
    upload = world.put(b"1234567")
    finished_task(
        store,
        days_ago=3,
        outputs=[out],
        input={"image": upload, "ref": character.images[0].sha256},
    )
    finished_task(store, days_ago=40)
    store.create(kind="generation", input={})
    settings = dataclasses.replace(Settings.for_home(Path("/unused")), task_retention=30 * 86400.0)

    held = holdings(store.database, blobs, settings)

    assert held.tasks == {
        "queued": 1,
        "running": 0,
        "succeeded": 2,
        "failed": 0,
        "cancelled": 0,
    }
    assert (held.outputs, held.output_blobs, held.output_bytes) == (1, 1, 5)
    assert (held.input_only_blobs, held.input_only_bytes) == (1, 7)
    assert held.retention == "30d" and held.expired == 1
    assert held.oldest_finished is not None
    assert held.next_expiry is not None
    expected = datetime.now(UTC) + timedelta(days=27)
    assert abs((held.next_expiry - expected).total_seconds()) < 300


# ---- a finisher that lost its job -----------------------------------------------------------


def _lose(store: JobStore, job: Job) -> None:
    """What a second server does when this worker's lease ran out: re-queue and take it."""
    assert store.hand_back(job.worker or "") == [job.id]
    assert store.start(job.id, "the-new-holder") is not None


@pytest.mark.parametrize("ending", ["succeed", "fail", "cancel"])
def test_a_finisher_that_lost_its_job_leaves_no_orphan_blob(world: World, ending: str) -> None:
    store, blobs = world.store, world.blobs
    character = world.library.create({"name": "A"}, [red()])
    kept_elsewhere = world.put(b"also another task's output")
    finished_task(store, days_ago=0, outputs=[kept_elsewhere])
    written: list[str] = []

    def handler(job: Job, context: JobContext) -> tuple[list[JobOutput], dict[str, Any]]:
        mine = world.put(b"only this finisher made these bytes")
        same_as_other = world.put(b"also another task's output")
        same_as_reference = world.put(red().data)
        written.extend([mine, same_as_other, same_as_reference])
        _lose(store, job)
        outputs = [output(sha) for sha in written]
        if ending == "fail":
            cause = FieldError("x", "broke after the first variant")
            raise StoppedWithResults(cause, PartialResults(outputs, {}))
        if ending == "cancel":
            raise StoppedWithResults(GenerationCancelled("stop"), PartialResults(outputs, {}))
        return outputs, {}

    job = store.create(kind="k", input={})
    ended = run_job(store, {"k": handler}, job.id, "the-old-holder")

    assert ended is not None
    assert ended.status == "running" and ended.worker == "the-new-holder"
    mine, same_as_other, same_as_reference = written
    assert not blobs.exists(mine)
    assert blobs.exists(same_as_other)
    assert same_as_reference == character.images[0].sha256
    assert blobs.exists(same_as_reference)
    # The new holder, making the same bytes, records them: nothing is missing.
    again = world.put(b"only this finisher made these bytes")
    final = store.succeed(job.id, [output(again)], {}, worker="the-new-holder")
    assert final.status == "succeeded" and blobs.exists(again)


def test_a_lost_finisher_keeps_bytes_the_new_holder_already_recorded(world: World) -> None:
    """The new holder re-ran the job from the same seed and finished first: the identical
    blob is its output now, and stays."""
    store, blobs = world.store, world.blobs
    job = store.create(kind="k", input={})
    store.start(job.id, "old")
    same = world.put(b"deterministic result")
    _lose(store, store.get(job.id))
    store.succeed(job.id, [output(same)], {}, worker="the-new-holder")
    late = store.succeed(job.id, [output(same)], {}, worker="old")
    assert late.worker == "the-new-holder" and late.status == "succeeded"
    assert blobs.exists(same)


# ---- in the running server and on the command line --------------------------------------------


def test_the_server_prunes_expired_tasks_periodically(home: Path) -> None:
    settings = dataclasses.replace(
        Settings.for_home(home), task_retention=86400.0, prune_interval=0.2
    )
    database = Database(settings.database_url)
    blobs = BlobStore(settings.blob_dir)
    store = JobStore(database, blobs)
    out = blobs.put(b"yesterday's result")[0]
    old = finished_task(store, days_ago=2, outputs=[out])
    fresh = finished_task(store, days_ago=0.5, outputs=[blobs.put(b"today's")[0]])
    age_all(blobs)
    executor = LocalExecutor(JobStore(database, blobs), {}, workers=1)
    app = create_app(settings, executor=executor, config=ApiConfig(job_workers=1))
    with TestClient(app):
        deadline = time.monotonic() + DEADLINE_S
        # A pass deletes the task first, then sweeps its blobs: wait for both.
        while (exists(store, old) or blobs.exists(out)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not exists(store, old), "the server's retention pass never ran"
        assert not blobs.exists(out), "the pass deleted the task but never swept its output"
        assert exists(store, fresh)
        passes = app.state.retention.passes
        deadline = time.monotonic() + DEADLINE_S
        while app.state.retention.passes < passes + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.retention.passes >= passes + 2  # it keeps running
    assert app.state.retention._thread is None  # stopped with the app
    database.dispose()


def test_tasks_prune_and_info_on_the_command_line(castbook_home: Path) -> None:
    settings = Settings.from_env()
    database = Database(settings.database_url)
    blobs = BlobStore(settings.blob_dir)
    store = JobStore(database, blobs)
    out = blobs.put(b"an old result")[0]
    old = finished_task(store, days_ago=45, outputs=[out])
    finished_task(store, days_ago=1, outputs=[blobs.put(b"a newer one")[0]])
    age_all(blobs)

    code, stdout, _ = castbook("info", "--json")
    assert code == 0
    tasks = json.loads(stdout)["tasks"]
    assert tasks["tasks"]["succeeded"] == 2 and tasks["retention"] == "off"
    assert tasks["output_bytes"] == len(b"an old result") + len(b"a newer one")
    code, stdout, _ = castbook("info")
    assert "task retention: off" in stdout and "2 succeeded" in stdout

    code, stdout, _ = castbook("tasks", "prune", "--older-than", "30d", "--dry-run")
    assert code == 0, stdout
    assert "would delete 1 task(s)" in stdout and "would delete 1 blob(s)" in stdout
    assert exists(store, old) and blobs.exists(out)

    code, stdout, _ = castbook("tasks", "prune", "--older-than", "30d", "--json")
    assert code == 0
    report = json.loads(stdout)
    assert (report["tasks"], report["blobs"], report["task_ids"]) == (1, 1, [old])
    assert not exists(store, old) and not blobs.exists(out)


@pytest.mark.parametrize("bad", ["30", "thirty days", "0s"])
def test_tasks_prune_refuses_a_bad_duration(castbook_home: Path, bad: str) -> None:
    code, _, stderr = castbook("tasks", "prune", "--older-than", bad)
    assert code == 1
    assert "--older-than" in stderr and repr(bad) in stderr


def test_passes_racing_finishing_tasks_never_take_a_recorded_blob(world: World) -> None:
    """Several finishers (another server's threads) store shared bytes and record them while
    passes prune as hard as they can (every task older than 50 ms, a 0.3 s margin): every
    task still stored has every blob it names."""
    store, blobs = world.store, world.blobs
    stop = threading.Event()
    errors: list[BaseException] = []
    finished: list[str] = []

    def finisher(n: int) -> None:
        try:
            i = 0
            while not stop.is_set():
                i += 1
                upload = world.put(f"upload {n}-{i % 3}".encode())
                job = store.create(kind="k", input={"image": upload})
                store.start(job.id, f"w{n}")
                made = [world.put(f"result {i % 4}".encode()), world.put(f"own {n}-{i}".encode())]
                time.sleep(0.4)  # longer than the margin: only "since it started" protects
                store.succeed(job.id, [output(m) for m in made], {}, worker=f"w{n}")
                finished.append(job.id)
        except BaseException as exc:
            errors.append(exc)

    def pruner() -> None:
        try:
            while not stop.is_set():
                prune(store.database, blobs, older_than=0.05, grace=0.3)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=finisher, args=(n,)) for n in range(3)]
    threads.append(threading.Thread(target=pruner))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + DEADLINE_S
    while len(finished) < 30 and time.monotonic() < deadline and not errors:
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert not errors, errors
    assert len(finished) >= 30
    with store.database.session() as session:
        named = set(session.scalars(select(JobOutputRow.sha256)))
        named |= set(session.scalars(select(JobInputRow.sha256)))
    missing = sorted(blob_id for blob_id in named if not blobs.exists(blob_id))
    assert not missing, f"{len(missing)} recorded blob(s) were deleted"
