"""Jobs: guarded transitions, crash recovery, and the local executor running real work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from castbook.blobs import BlobStore
from castbook.db import Database
from castbook.errors import FieldError, GenerationCancelled, GenerationError, NotFoundError
from castbook.jobs import (
    JobContext,
    JobOutput,
    JobStatus,
    JobStore,
    LocalExecutor,
    PartialResults,
    StoppedWithResults,
    run_job,
)
from castbook.jobs.leases import worker_name
from tests.conftest import on_blob_store
from tests.support.executor_contract import EmbeddedHarness, ExecutorContract


@pytest.fixture
def store(database_url: str) -> JobStore:
    return JobStore(Database(database_url))


def test_jobs_belong_to_their_owner(store: JobStore) -> None:
    job = store.create(kind="demo", input={"x": 1}, owner="alice")
    assert store.get(job.id, "alice").input == {"x": 1}
    with pytest.raises(NotFoundError):
        store.get(job.id, "bob")
    assert [j.id for j in store.list("alice")] == [job.id]
    assert store.list("bob") == []
    assert job.status == JobStatus.QUEUED and job.to_json()["progress"]["message"] == "queued"


def test_a_job_starts_once(store: JobStore) -> None:
    job = store.create(kind="demo", input={})
    first = store.start(job.id, "w1")
    assert first is not None and first.status == JobStatus.RUNNING and first.attempts == 1
    assert store.start(job.id, "w2") is None


def handlers_that(outcome: str):
    def handler(job, context: JobContext):
        context.progress(1, 3, "working")
        if outcome == "bad-input":
            raise FieldError("steps", "must be between 1 and 50")
        if outcome == "crash":
            raise RuntimeError("boom")
        context.progress(3, 3, "done")
        return [JobOutput("a" * 64, "image", "image/png", 8, 8, 1)], {"seed": 1}

    return {"demo": handler}


def test_run_job_records_success_failure_and_crashes(store: JobStore) -> None:
    ok = run_job(store, handlers_that("ok"), store.create(kind="demo", input={}).id, "w")
    assert ok.status == JobStatus.SUCCEEDED and ok.result == {"seed": 1}
    assert ok.outputs[0].sha256 == "a" * 64 and ok.progress_step == 3
    bad = run_job(store, handlers_that("bad-input"), store.create(kind="demo", input={}).id, "w")
    assert bad.status == JobStatus.FAILED and bad.error == "steps: must be between 1 and 50"
    assert bad.error_data == {"type": "FieldError", "field": "steps"}
    crash = run_job(store, handlers_that("crash"), store.create(kind="demo", input={}).id, "w")
    assert crash.status == JobStatus.FAILED and "internal error: RuntimeError: boom" in crash.error
    unknown = run_job(store, handlers_that("ok"), store.create(kind="other", input={}).id, "w")
    assert unknown.status == JobStatus.FAILED and "no handler" in unknown.error


def test_a_job_that_stops_part_way_keeps_what_it_made(store: JobStore) -> None:
    made = [JobOutput("b" * 64, "image", "image/png", 8, 8, 2)]

    def stopping(cause: Exception):
        def handler(job, context: JobContext):
            raise StoppedWithResults(cause, PartialResults(made, {"nodes": {"a": "succeeded"}}))

        return {"demo": handler}

    failed = run_job(
        store,
        stopping(GenerationError("the model ran out of memory")),
        store.create(kind="demo", input={}).id,
        "w",
    )
    assert failed.status == JobStatus.FAILED and failed.error == "the model ran out of memory"
    assert failed.error_data == {"type": "GenerationError"}
    assert failed.result == {"nodes": {"a": "succeeded"}}
    assert [o.sha256 for o in failed.outputs] == ["b" * 64]

    cancelled = run_job(
        store,
        stopping(GenerationCancelled("cancelled")),
        store.create(kind="demo", input={}).id,
        "w",
    )
    assert cancelled.status == JobStatus.CANCELLED and cancelled.error is None
    assert [o.sha256 for o in cancelled.outputs] == ["b" * 64]
    assert cancelled.result == {"nodes": {"a": "succeeded"}}


def test_cancelling(store: JobStore) -> None:
    queued = store.create(kind="demo", input={})
    assert store.cancel(queued.id).status == JobStatus.CANCELLED
    assert run_job(store, handlers_that("ok"), queued.id, "w") is None  # never started

    running = store.create(kind="demo", input={})
    store.start(running.id, "w")
    assert store.cancel(running.id).cancel_requested
    assert store.progress(running.id, 1, 2) is True

    def handler(job, context):
        store.cancel(job.id)
        context.progress(1, 2)
        raise AssertionError("the progress call should have cancelled the job")

    job = store.create(kind="demo", input={})
    assert run_job(store, {"demo": handler}, job.id, "w").status == JobStatus.CANCELLED


def test_a_job_that_could_not_be_handed_over_fails_only_while_still_queued(
    store: JobStore,
) -> None:
    queued = store.create(kind="demo", input={})
    failed = store.fail_unstarted(queued.id, "could not queue the task: broker down")
    assert failed.status == JobStatus.FAILED and "broker down" in (failed.error or "")
    # Said twice (the executor, then the API), the first reason stays.
    assert store.fail_unstarted(queued.id, "could not queue task: again").error == failed.error
    # A worker took it although the hand-over reported an error: its run is not cut short.
    taken = store.create(kind="demo", input={})
    store.start(taken.id, "w")
    assert store.fail_unstarted(taken.id, "could not queue the task").status == JobStatus.RUNNING
    assert store.succeed(taken.id, [], {"ok": True}, worker="w").status == JobStatus.SUCCEEDED


def test_a_worker_that_lost_its_job_stops_at_its_next_step(store: JobStore) -> None:
    """Its lease ran out (a stall) and another worker took the job over: the first one's
    next progress report stops it, writes nothing over the new holder's progress, and its
    ending records nothing."""
    steps_run: list[int] = []

    def handler(job, context):
        for step in range(1, 6):
            if step == 3:  # meanwhile: re-queued by a sweep and claimed by another worker
                store.hand_back("stalled")
                store.start(job.id, "new-holder")
                store.progress(job.id, 1, 9, "the new run", worker="new-holder")
            context.progress(step, 5)
            steps_run.append(step)
        return [], {"ran": steps_run}

    job = store.create(kind="demo", input={})
    final = run_job(store, {"demo": handler}, job.id, "stalled")
    assert steps_run == [1, 2]  # it stopped at step 3's report
    assert final.status == JobStatus.RUNNING and final.worker == "new-holder"
    assert (final.progress_step, final.progress_total) == (1, 9)
    assert store.succeed(job.id, [], {"ok": True}, worker="new-holder").status == (
        JobStatus.SUCCEEDED
    )


def test_recover_requeues_then_gives_up(store: JobStore) -> None:
    job = store.create(kind="demo", input={})
    store.start(job.id, "dead-worker")
    assert store.recover(max_attempts=2) == ([job.id], [])
    assert store.get(job.id).status == JobStatus.QUEUED
    store.start(job.id, "dead-again")
    assert store.recover(max_attempts=2) == ([], [job.id])
    failed = store.get(job.id)
    assert failed.status == JobStatus.FAILED and "stopped 2 time(s)" in failed.error
    # As the Celery executor says it, so a client reads one shape whichever runs the task.
    assert failed.error_data == {"type": "WorkerLost", "worker": "dead-again", "attempts": 2}


def test_recover_finishes_a_cancel_the_dead_worker_never_saw(store: JobStore) -> None:
    job = store.create(kind="demo", input={})
    store.start(job.id, "w")
    store.cancel(job.id)
    store.recover(max_attempts=3)
    assert store.get(job.id).status == JobStatus.CANCELLED


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_local_executor_picks_up_queued_and_recovered_jobs(store: JobStore) -> None:
    waiting = store.create(kind="demo", input={})
    orphan = store.create(kind="demo", input={})
    store.start(orphan.id, worker_name(dead_pid(), kind="local") + ":castbook-job-0")
    executor = LocalExecutor(store, handlers_that("ok"), workers=2)
    executor.start()
    try:
        fresh = store.create(kind="demo", input={})
        executor.submit(fresh)
        for job in (waiting, orphan, fresh):
            assert executor.wait(job.id, timeout=120).status == JobStatus.SUCCEEDED
        assert store.get(orphan.id).attempts == 2
    finally:
        executor.shutdown()


def test_a_second_server_leaves_a_live_holders_job_alone(store: JobStore) -> None:
    # Another `castbook serve` on the same data, alive (this very process) and beating.
    held = store.create(kind="demo", input={})
    store.start(held.id, worker_name(kind="local") + ":castbook-job-0")
    executor = LocalExecutor(store, handlers_that("ok"), workers=1)
    executor.start()
    try:
        fresh = store.create(kind="demo", input={})
        executor.submit(fresh)
        assert executor.wait(fresh.id, timeout=120).status == JobStatus.SUCCEEDED
        assert executor.recover() == ([], [])
    finally:
        executor.shutdown()
    still = store.get(held.id)
    assert still.status == JobStatus.RUNNING and still.attempts == 1


def test_a_holder_silent_past_its_lease_loses_the_job(store: JobStore) -> None:
    # A holder on another machine (no pid to check) whose heartbeat stopped: after the lease
    # the sweep re-queues the job and this executor runs it.
    job = store.create(kind="demo", input={})
    store.start(job.id, "local:another-host:4242:ns1:castbook-job-0")
    executor = LocalExecutor(store, handlers_that("ok"), workers=1, lease=1.0)
    executor.start()
    try:
        done = executor.wait(job.id, timeout=120)
    finally:
        executor.shutdown()
    assert done.status == JobStatus.SUCCEEDED and done.attempts == 2


def test_a_finisher_that_lost_its_job_changes_nothing(store: JobStore) -> None:
    job = store.create(kind="demo", input={})
    store.start(job.id, "first")
    store.recover(max_attempts=3)  # its lease ran out: re-queued ...
    store.start(job.id, "second")  # ... and taken by another worker
    late = store.succeed(job.id, [], {"by": "first"}, worker="first")
    assert late.status == JobStatus.RUNNING and late.worker == "second"
    failed = store.fail(job.id, "boom", worker="first")
    assert failed.status == JobStatus.RUNNING
    done = store.succeed(job.id, [], {"by": "second"}, worker="second")
    assert done.status == JobStatus.SUCCEEDED and done.result == {"by": "second"}
    assert store.succeed(job.id, [], {"by": "second again"}, worker="second").result == {
        "by": "second"
    }


def test_generation_jobs_run_on_a_local_model(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    from castbook.generation import load_presets, read_parameters, resolve_request
    from castbook.library import CharacterLibrary, ImageInput
    from castbook.settings import Settings
    from castbook.tasks import GenerationJobs, generation_job_input
    from tests.conftest import make_image_bytes
    from tests.support.tiny_diffusers import IP_ADAPTER_WEIGHT, make_tiny_ip_adapter, make_tiny_sd15

    home = tmp_path / "home"
    home.mkdir()
    model, adapter = make_tiny_sd15(tmp_path / "sd15"), make_tiny_ip_adapter(tmp_path / "ip")
    (home / "presets.toml").write_text(
        f'[presets.tiny]\nbackend = "diffusers"\nmodel = "{model}"\n'
        "defaults = { width = 256, height = 256, steps = 2 }\n"
        f'[presets.tiny.options]\nfamily = "sd15"\nip_adapter = "{adapter}"\n'
        f'ip_adapter_subfolder = ""\nip_adapter_weight = "{IP_ADAPTER_WEIGHT}"\n'
    )
    settings = Settings.for_home(home)
    database, blobs = Database(settings.database_url), BlobStore(settings.blob_dir)
    library = CharacterLibrary(database, blobs, owner="alice")
    library.create(
        {"name": "Alice", "style_prompt": "long black hair"},
        [ImageInput(make_image_bytes((200, 30, 30)), "a.png")],
    )
    store = JobStore(database)
    # Resolved against the preset (256x256, 2 steps), as a submission stores it.
    request = resolve_request(
        {"prompt": "at a cafe", "characters": ["Alice"], "batch": 2, "seed": 3},
        load_presets(home).get("tiny"),
    )
    job = store.create(
        kind="generation", input=generation_job_input(request, "tiny"), owner="alice"
    )
    executor = LocalExecutor(store, {"generation": GenerationJobs(settings, database, blobs)})
    executor.start()
    try:
        done = executor.wait(job.id, timeout=300)  # generous: a loaded machine is slow
    finally:
        executor.shutdown()
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert done.result["prompt"] == "long black hair, at a cafe" and done.result["seed"] == 3
    assert [o.kind for o in done.outputs] == ["image", "image"]
    assert [o.seed for o in done.outputs] == [3, 4]
    png = tmp_path / "out.png"
    png.write_bytes(blobs.get(done.outputs[0].sha256))
    assert read_parameters(png)["characters"] == ["Alice"]
    # A character of another owner is not visible to this owner's job.
    other = store.create(
        kind="generation", input=generation_job_input(request, "tiny"), owner="bob"
    )
    executor = LocalExecutor(store, {"generation": GenerationJobs(settings, database, blobs)})
    executor.start()
    try:
        failed = executor.wait(other.id, timeout=300)
    finally:
        executor.shutdown()
    assert failed.status == JobStatus.FAILED and "no character named 'Alice'" in failed.error


# ---- the executor contract: the local executor ------------------------------------------------


class TestLocalExecutor(ExecutorContract):
    @pytest.fixture
    def harness(self, tmp_path: Path, tiny_models: dict[str, Path], blob_bucket):
        harness = EmbeddedHarness(
            tmp_path / "home",
            tiny_models["sd15"],
            on_store=lambda settings: on_blob_store(settings, blob_bucket),
        )
        yield harness
        harness.close()


def test_this_process_s_sqlite_writers_queue_on_one_lock(store: JobStore) -> None:
    """On SQLite a submit waits on the database's write lock (woken the moment it is free)
    rather than on SQLite's busy wait, which sleeps in growing steps: held here, a create
    waits for it; released, it goes through. PostgreSQL locks rows and queues nothing in the
    process. Either way, many threads creating at once all get their job."""
    import contextlib
    import threading
    from concurrent.futures import ThreadPoolExecutor

    lock = store.database.write_lock
    if store.database.dialect == "sqlite":
        assert isinstance(lock, type(threading.Lock()))
        made: list[str] = []
        with lock:
            writer = threading.Thread(
                target=lambda: made.append(store.create(kind="k", input={}).id)
            )
            writer.start()
            writer.join(timeout=0.5)
            assert writer.is_alive() and not made  # it waits for the lock
        writer.join(timeout=60)
        assert len(made) == 1
    else:
        assert isinstance(lock, contextlib.nullcontext)
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda n: store.create(kind="k", input={"n": n}).id, range(40)))
    assert len(set(ids)) == 40 and all(store.get(i).input["n"] == n for n, i in enumerate(ids))
