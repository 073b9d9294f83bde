"""What every job executor promises, as tests: the local executor (threads in the server)
and the Celery executor (``castbook worker`` processes through Redis) inherit
:class:`ExecutorContract` and provide a ``harness`` fixture.

A harness has a job ``store``, the ``blobs`` its workers store outputs in (a folder, or an S3
bucket the workers reach without the server's folder), ``create(kind, input)`` (the row
only), ``hand_over(job)`` (give it to the executor), ``submit`` (both), ``start()``
(workers take jobs from then on; calling it again does nothing) and ``wait(job_id)`` (until
the job ended, with a generous deadline). Its CASTBOOK_HOME has two presets: ``tiny`` (a
tiny SD 1.5 on disk) and ``missing`` (a model folder that does not exist).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from castbook.blobs import Blobs, open_blob_store
from castbook.db import Database
from castbook.generation import parse_request
from castbook.jobs import Job, JobStatus, JobStore, LocalExecutor
from castbook.jobs.processes import ProcessExecutor
from castbook.settings import Settings
from castbook.tasks import generation_job_input

__all__ = ["EmbeddedHarness", "ExecutorContract", "Harness", "contract_presets"]


def contract_presets(model: Path, missing: Path) -> str:
    """presets.toml for a harness's CASTBOOK_HOME."""
    return (
        f'[presets.tiny]\nbackend = "diffusers"\nmodel = "{model}"\n'
        'defaults = { width = 256, height = 256, steps = 2 }\noptions = { family = "sd15" }\n'
        f'[presets.missing]\nbackend = "diffusers"\nmodel = "{missing}"\n'
        'options = { family = "sd15" }\n'
    )


class Harness(Protocol):
    store: JobStore
    blobs: Blobs

    def create(self, kind: str, input: dict[str, Any]) -> Job: ...

    def hand_over(self, job: Job) -> None: ...

    def submit(self, kind: str, input: dict[str, Any]) -> Job: ...

    def start(self) -> None: ...

    def wait(self, job_id: str) -> Job: ...


# The ``tiny`` preset's defaults: a job row stores its request resolved against its preset
# (workers trust it), so a row built here must carry them or the worker draws 512x512.
TINY_DEFAULTS = {"width": 256, "height": 256, "steps": 2}


def generation(preset: str, seed: int = 3) -> dict[str, Any]:
    request = parse_request({"prompt": "a lighthouse at dusk", "seed": seed, **TINY_DEFAULTS})
    return generation_job_input(request, preset)


class ExecutorContract:
    """Inherit and provide a ``harness`` fixture (see the module's docstring)."""

    def test_a_job_runs_once_and_keeps_its_outputs(self, harness: Harness) -> None:
        harness.start()
        job = harness.submit("generation", generation("tiny"))
        done = harness.wait(job.id)
        assert done.status is JobStatus.SUCCEEDED, done.error
        assert done.attempts == 1 and done.worker
        assert len(done.outputs) == 1 and done.outputs[0].seed == 3
        # The result is in the store the server reads, whole (a bucket's read is checked).
        png = harness.blobs.get(done.outputs[0].sha256)
        assert png.startswith(b"\x89PNG")

    def test_a_failing_job_fails_once_with_its_reason(self, harness: Harness) -> None:
        harness.start()
        job = harness.submit("generation", generation("missing"))
        done = harness.wait(job.id)
        assert done.status is JobStatus.FAILED and done.attempts == 1
        assert "preset 'missing' cannot run yet" in (done.error or "")
        assert done.error_data == {"type": "ModelNotAvailableError"}

    def test_an_unknown_kind_fails_with_a_reason(self, harness: Harness) -> None:
        harness.start()
        done = harness.wait(harness.submit("no_such_kind", {}).id)
        assert done.status is JobStatus.FAILED
        assert "no handler for tasks of kind 'no_such_kind'" in (done.error or "")

    def test_a_job_cancelled_while_queued_never_runs(self, harness: Harness) -> None:
        harness.start()
        cancelled = harness.create("generation", generation("tiny", seed=1))
        harness.store.cancel(cancelled.id)
        harness.hand_over(cancelled)  # its message still reaches a worker
        later = harness.submit("generation", generation("tiny", seed=2))
        # Jobs are taken in order: once the later one ran, the cancelled one was passed over.
        assert harness.wait(later.id).status is JobStatus.SUCCEEDED
        skipped = harness.store.get(cancelled.id)
        assert skipped.status is JobStatus.CANCELLED
        assert skipped.attempts == 0 and skipped.started_at is None and not skipped.outputs


JOB_DEADLINE = 300  # seconds; generous for a loaded machine


class EmbeddedHarness:
    """The executor ``castbook serve`` runs itself on a tiny model (tasks.handlers): its job
    threads in this process, or (``processes``) its worker process."""

    def __init__(
        self,
        home: Path,
        model: Path,
        *,
        processes: bool = False,
        on_store: Callable[[Settings], Settings] = lambda settings: settings,
    ) -> None:
        from castbook.tasks import handlers

        home.mkdir(parents=True)
        (home / "presets.toml").write_text(contract_presets(model, home / "no-model"))
        settings = on_store(Settings.for_home(home))  # the folder, or a bucket
        self.database = Database(settings.database_url)
        self.blobs = open_blob_store(settings)
        self.store = JobStore(self.database, self.blobs)
        self.executor: LocalExecutor | ProcessExecutor
        if processes:
            self.executor = ProcessExecutor(self.store, settings, handlers)
        else:
            self.executor = LocalExecutor(self.store, handlers(settings, self.database, self.blobs))
        self.started = False

    def create(self, kind: str, input: dict) -> Job:
        return self.store.create(kind=kind, input=input)

    def hand_over(self, job: Job) -> None:
        self.executor.submit(job)

    def submit(self, kind: str, input: dict) -> Job:
        job = self.create(kind, input)
        self.hand_over(job)
        return job

    def start(self) -> None:
        if not self.started:
            self.executor.start()
            self.started = True

    def wait(self, job_id: str) -> Job:
        job = self.executor.wait(job_id, timeout=JOB_DEADLINE)
        assert job.done, f"task {job_id} is still {job.status.value} after {JOB_DEADLINE}s"
        return job

    def close(self) -> None:
        if self.started:
            self.executor.shutdown()
        self.database.dispose()
