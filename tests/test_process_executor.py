"""The local executor's default: jobs run in a worker process the server starts.

The contract every executor keeps (tests/support/executor_contract.py), then what only a
worker process brings: the server's process runs no job, a worker that dies is replaced and
its job recovered, and a stop hands running jobs back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from castbook.db import Database
from castbook.jobs import Job, JobStatus, JobStore
from castbook.jobs.processes import ProcessExecutor
from castbook.settings import Settings
from tests.conftest import BOTH_STORES, on_blob_store
from tests.support.executor_contract import EmbeddedHarness, ExecutorContract
from tests.support.job_kinds import gated_handlers, open_gate, started_pids
from tests.support.s3_server import S3Server

DEADLINE = 300.0  # seconds: generous for a loaded machine (a worker imports torch first)


def _until(condition: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module", params=BOTH_STORES)
def shared_harness(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_models: dict[str, Path],
) -> Iterator[EmbeddedHarness]:
    """One worker process per blob store: on ``s3`` the worker opens the bucket from the
    settings it is given, and takes its inputs and puts its results there."""
    bucket = None
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        bucket = (server.new_bucket(), server.endpoint)
    home = tmp_path_factory.mktemp("process-contract") / "home"
    harness = EmbeddedHarness(
        home,
        tiny_models["sd15"],
        processes=True,
        on_store=lambda settings: on_blob_store(settings, bucket),
    )
    yield harness
    harness.close()


class TestProcessExecutor(ExecutorContract):
    """The contract against one worker process for the module (one per blob store), as a
    server keeps one.

    Each contract test waits for its own jobs to end, so none depends on a fresh process;
    a new one per test cost a start (torch, diffusers, the tiny model) each. What a fresh
    worker process brings (replacement, recovery, stopping) is tested below, each test
    with its own executor."""

    @pytest.fixture
    def harness(self, shared_harness: EmbeddedHarness) -> EmbeddedHarness:
        return shared_harness


# ---- what a worker process brings ---------------------------------------------------------


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[ProcessExecutor, JobStore]]:
    settings = Settings.for_home(tmp_path / "home")
    (tmp_path / "home").mkdir()
    database = Database(settings.database_url)
    store = JobStore(database)
    executor = ProcessExecutor(store, settings, gated_handlers, max_attempts=2, lease=60)
    yield executor, store
    executor.shutdown(wait=False)
    if executor.worker_pid:
        _kill(executor.worker_pid)
    database.dispose()


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _submit(executor: ProcessExecutor, store: JobStore, folder: Path) -> Job:
    job = store.create(kind="gated", input={"dir": str(folder)})
    executor.submit(job)
    return job


def _gate(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def test_jobs_run_in_the_worker_process_not_the_servers(
    gated: tuple[ProcessExecutor, JobStore], tmp_path: Path
) -> None:
    executor, store = gated
    folder = _gate(tmp_path, "one")
    open_gate(folder)
    executor.start()
    job = _submit(executor, store, folder)
    done = executor.wait(job.id, timeout=DEADLINE)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert done.result["pid"] == executor.worker_pid != os.getpid()
    assert done.worker.startswith("local:") and f":{executor.worker_pid}:" in done.worker


def test_a_job_queued_without_a_doorbell_still_runs(
    gated: tuple[ProcessExecutor, JobStore], tmp_path: Path
) -> None:
    """The table is the queue: a row another process inserted (no submit here) is found."""
    executor, store = gated
    folder = _gate(tmp_path, "quiet")
    open_gate(folder)
    job = store.create(kind="gated", input={"dir": str(folder)})
    executor.start()
    assert executor.wait(job.id, timeout=DEADLINE).status is JobStatus.SUCCEEDED


def test_a_killed_worker_is_replaced_and_its_job_runs_again(
    gated: tuple[ProcessExecutor, JobStore], tmp_path: Path
) -> None:
    executor, store = gated
    folder = _gate(tmp_path, "killed")
    executor.start()
    job = _submit(executor, store, folder)
    first = _until(lambda: started_pids(folder).get(1), "the first attempt to start")
    _kill(first)
    second = _until(lambda: started_pids(folder).get(2), "the job to run again")
    assert second != first and second == executor.worker_pid
    open_gate(folder)
    done = executor.wait(job.id, timeout=DEADLINE)
    assert done.status is JobStatus.SUCCEEDED and done.attempts == 2
    assert done.result["pid"] == second


def test_a_job_that_kills_every_worker_fails_with_worker_lost(
    gated: tuple[ProcessExecutor, JobStore], tmp_path: Path
) -> None:
    executor, store = gated
    folder = _gate(tmp_path, "cursed")
    executor.start()
    job = _submit(executor, store, folder)
    for attempt in (1, 2):
        _kill(_until(lambda a=attempt: started_pids(folder).get(a), f"attempt {attempt}"))
    failed = _until(
        lambda: (j := store.get(job.id)).done and j, "the job to fail after two attempts"
    )
    assert failed.status is JobStatus.FAILED
    assert failed.error_data["type"] == "WorkerLost" and failed.error_data["attempts"] == 2
    # The next worker still takes new work.
    later = _gate(tmp_path, "later")
    open_gate(later)
    fresh = _submit(executor, store, later)
    assert executor.wait(fresh.id, timeout=DEADLINE).status is JobStatus.SUCCEEDED


def test_a_stop_that_cannot_wait_hands_running_jobs_back(
    gated: tuple[ProcessExecutor, JobStore], tmp_path: Path
) -> None:
    executor, store = gated
    folder = _gate(tmp_path, "stop")
    executor.start()
    job = _submit(executor, store, folder)
    pid = _until(lambda: started_pids(folder).get(1), "the job to start")
    assert executor.hand_back() == [job.id]
    back = store.get(job.id)
    assert back.status is JobStatus.QUEUED and back.attempts == 0
    _until(lambda: not _alive(pid), "the worker to stop")


def test_a_stop_lets_running_jobs_finish(
    gated: tuple[ProcessExecutor, JobStore], tmp_path: Path
) -> None:
    executor, store = gated
    folder = _gate(tmp_path, "finish")
    executor.start()
    job = _submit(executor, store, folder)
    _until(lambda: started_pids(folder).get(1), "the job to start")
    waiting = store.create(kind="gated", input={"dir": str(folder)})
    stopper = threading.Thread(target=executor.shutdown)
    stopper.start()
    open_gate(folder)
    stopper.join(timeout=DEADLINE)
    assert not stopper.is_alive()
    assert store.get(job.id).status is JobStatus.SUCCEEDED
    # A worker told to stop takes nothing new.
    assert store.get(waiting.id).status is JobStatus.QUEUED


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False
