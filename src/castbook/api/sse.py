"""Server-sent events for one task: its status and step progress as they change, then the end.

::

    event: progress
    id: 3
    data: {"id": "…", "status": "running", "step": 3, "total": 4, "message": "",
           "text": "running 3/4"}

    event: done
    id: 5
    data: {…the whole task, as GET /v1/tasks/{id} answers…}

The job row is the source of truth, so the stream reads it (every ``poll`` seconds) rather
than listening to an executor: it works the same for the local executor and for Celery
workers on other machines. Steps that start and finish between two reads are not seen; the
last state always is. A comment line is sent every ``keepalive`` seconds of silence so
proxies keep the connection open.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool

from castbook.jobs import Job, JobStore

__all__ = ["format_event", "progress_text", "task_events"]


def progress_text(job: Job) -> str:
    """``running 3/4``, ``queued``, ``succeeded 4/4`` …"""
    if job.progress_total:
        return f"{job.status.value} {job.progress_step}/{job.progress_total}"
    return job.status.value


def format_event(event: str, data: Any, event_id: int | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    lines.extend(f"data: {line}" for line in payload.splitlines() or [""])
    return "\n".join(lines) + "\n\n"


def _progress(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status.value,
        "step": job.progress_step,
        "total": job.progress_total,
        "message": job.progress_message,
        "text": progress_text(job),
    }


async def task_events(
    jobs: JobStore,
    job_id: str,
    owner: str,
    describe: Callable[[Job], dict[str, Any]],
    *,
    poll: float,
    keepalive: float,
) -> AsyncIterator[str]:
    """The event stream of one task; ends after the ``done`` event.

    ``describe`` turns the finished job into the ``done`` event's data.
    """
    last: tuple[object, ...] | None = None
    counter = 0
    quiet_since = time.monotonic()
    yield "retry: 2000\n\n"
    while True:
        job = await run_in_threadpool(jobs.get, job_id, owner)
        state = (job.status, job.progress_step, job.progress_total, job.progress_message)
        if state != last:
            last = state
            counter += 1
            yield format_event("progress", _progress(job), counter)
            quiet_since = time.monotonic()
        if job.done:
            counter += 1
            yield format_event("done", describe(job), counter)
            return
        if time.monotonic() - quiet_since >= keepalive:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        await anyio.sleep(poll)
