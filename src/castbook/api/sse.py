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
proxies keep the connection open. When the server is stopping, a stream of a task that has
not ended ends without ``done`` (the HTTP server would otherwise wait for it, and so for the
task, before stopping its jobs); the client reconnects to a server, or asks for the task.

Every open stream of an app shares one :class:`TaskWatch`: one query per ``poll`` reads the
status and progress of all watched tasks, so a stream costs the server next to nothing
between events, far less than a client polling ``GET /v1/tasks/{id}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool

from castbook.jobs import TERMINAL, Job, JobStore
from castbook.jobs.store import ProgressState

__all__ = ["TaskWatch", "format_event", "task_events"]


class TaskWatch:
    """The latest status and progress of every task an open stream follows, read for all of
    them at once, at most once per ``poll`` seconds (whoever asks first after that reads)."""

    def __init__(
        self, jobs: JobStore, poll: float, *, stopping: Callable[[], bool] = lambda: False
    ) -> None:
        self.jobs = jobs
        self.poll = poll
        self.stopping = stopping  # true once the server stops: open streams end
        self._watched: Counter[str] = Counter()
        self._states: dict[str, ProgressState] = {}
        self._read_at = float("-inf")
        self._lock: asyncio.Lock | None = None
        self.reads = 0  # how many queries all streams together cost (tests look)

    @contextmanager
    def watching(self, job_id: str) -> Iterator[None]:
        self._watched[job_id] += 1
        try:
            yield
        finally:
            self._watched[job_id] -= 1
            if self._watched[job_id] <= 0:
                del self._watched[job_id]
                self._states.pop(job_id, None)

    async def state(self, job_id: str) -> ProgressState | None:
        """The task's state as of at most ``poll`` seconds ago (None: the row is gone)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            stale = time.monotonic() - self._read_at >= self.poll
            if stale or job_id not in self._states:
                watched = sorted(self._watched) or [job_id]
                self._states = await run_in_threadpool(self.jobs.progress_states, watched)
                self._read_at = time.monotonic()
                self.reads += 1
        return self._states.get(job_id)


def format_event(event: str, data: Any, event_id: int | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    lines.extend(f"data: {line}" for line in payload.splitlines() or [""])
    return "\n".join(lines) + "\n\n"


def _progress(job_id: str, state: ProgressState) -> dict[str, Any]:
    status, step, total, message = state
    return {
        "id": job_id,
        "status": status.value,
        "step": step,
        "total": total,
        "message": message,
        "text": f"{status.value} {step}/{total}" if total else status.value,
    }


async def task_events(
    watch: TaskWatch,
    job_id: str,
    owner: str,
    describe: Callable[[Job], dict[str, Any]],
    *,
    keepalive: float,
) -> AsyncIterator[str]:
    """The event stream of one task; ends after the ``done`` event.

    ``describe`` turns the finished job into the ``done`` event's data.
    """
    last: ProgressState | None = None
    counter = 0
    quiet_since = time.monotonic()
    yield "retry: 2000\n\n"
    with watch.watching(job_id):
        while True:
            state = await watch.state(job_id)
            if state is None:  # deleted meanwhile (retention, another server): say so, end
                gone = {"id": job_id, "error": f"task {job_id} no longer exists"}
                yield format_event("gone", gone, counter + 1)
                return
            if state != last:
                last = state
                counter += 1
                yield format_event("progress", _progress(job_id, state), counter)
                quiet_since = time.monotonic()
            if state.status in TERMINAL:
                job = await run_in_threadpool(watch.jobs.get, job_id, owner)
                counter += 1
                yield format_event("done", describe(job), counter)
                return
            if watch.stopping():
                return
            if time.monotonic() - quiet_since >= keepalive:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
            await anyio.sleep(watch.poll)
