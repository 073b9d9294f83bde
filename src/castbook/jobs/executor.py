"""What executors share: the handler signature, the per-job context, running one job."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from castbook.errors import CastbookError, FieldError, GenerationCancelled
from castbook.jobs.store import Job, JobOutput, JobStore, PartialResults

__all__ = [
    "Executor",
    "JobContext",
    "JobHandler",
    "StoppedWithResults",
    "run_job",
    "wait_for",
]

log = logging.getLogger("castbook.jobs")


@dataclass
class JobContext:
    """Given to a handler: report progress (which is also where cancellation arrives)."""

    job: Job
    store: JobStore

    def progress(self, step: int, total: int, message: str = "") -> None:
        # Guarded by the worker that claimed the job: one that lost it stops here too (its
        # ending, guarded as well, then records nothing).
        if self.store.progress(self.job.id, step, total, message, worker=self.job.worker):
            raise GenerationCancelled(
                f"task {self.job.id} was cancelled (or is no longer held by {self.job.worker})"
            )


# A handler does the work of one kind of job and returns its outputs and a result summary.
JobHandler = Callable[[Job, JobContext], tuple[list[JobOutput], dict[str, Any]]]


class StoppedWithResults(Exception):
    """Raised by a handler that stopped part-way (``cause``: the error, or a cancel) with
    results worth keeping: the job ends failed (or cancelled) with those outputs and result."""

    def __init__(
        self, cause: CastbookError, partial: PartialResults, where: dict[str, str] | None = None
    ) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.partial = partial
        self.where = where or {}  # where it stopped (a workflow's node), for error_data


class Executor(Protocol):
    """Runs queued jobs somewhere: threads in this process, or Celery workers."""

    def start(self) -> None: ...

    def submit(self, job: Job) -> None: ...

    def shutdown(self, wait: bool = True) -> None: ...


def _error_data(exc: CastbookError) -> dict[str, Any]:
    """What a client needs to show the error next to its cause: its type and, for a
    FieldError, the field it names."""
    data: dict[str, Any] = {"type": type(exc).__name__}
    if isinstance(exc, FieldError):
        data["field"] = exc.field
    return data


def run_job(
    store: JobStore, handlers: Mapping[str, JobHandler], job_id: str, worker: str
) -> Job | None:
    """Claim and run one queued job, recording how it ended. None if it was not queued."""
    job = store.start(job_id, worker)
    if job is None:
        return None
    final = _run_claimed(store, handlers, job, worker)
    if final.done and final.worker == worker:
        # One line per recorded ending: a job that ends twice shows in the logs (the fault
        # suite, tests/test_chaos.py, counts them); a finisher that lost its job writes none.
        log.info(
            "task %s ended %s on %s (attempt %d)",
            final.id,
            final.status.value,
            worker,
            final.attempts,
        )
    return final


def _run_claimed(store: JobStore, handlers: Mapping[str, JobHandler], job: Job, worker: str) -> Job:
    handler = handlers.get(job.kind)
    if handler is None:
        return store.fail(
            job.id, f"no handler for tasks of kind {job.kind!r} on {worker}", worker=worker
        )
    # Every ending names this worker: one that lost the job meanwhile (its lease ran out and
    # another worker took it) changes nothing.
    try:
        outputs, result = handler(job, JobContext(job, store))
    except StoppedWithResults as stopped:
        if isinstance(stopped.cause, GenerationCancelled):
            return store.mark_cancelled(job.id, stopped.partial, worker=worker)
        error_data = {**_error_data(stopped.cause), **stopped.where}
        return store.fail(job.id, str(stopped.cause), error_data, stopped.partial, worker=worker)
    except GenerationCancelled:
        return store.mark_cancelled(job.id, worker=worker)
    except CastbookError as exc:
        return store.fail(job.id, str(exc), _error_data(exc), worker=worker)
    except Exception as exc:  # a bug or a library failure: keep the job honest, log the rest
        log.error("task %s failed:\n%s", job.id, traceback.format_exc())
        return store.fail(
            job.id,
            f"internal error: {type(exc).__name__}: {exc}",
            {"type": type(exc).__name__},
            worker=worker,
        )
    return store.succeed(job.id, outputs, result, worker=worker)


def wait_for(store: JobStore, job_id: str, timeout: float, poll: float = 0.05) -> Job:
    """Block until the job finishes or ``timeout`` seconds pass; returns its latest state."""
    deadline = time.monotonic() + timeout
    while True:
        job = store.get(job_id)
        if job.done or time.monotonic() >= deadline:
            return job
        time.sleep(poll)
