"""Who holds a running job, and what happens when its holder is gone.

Shared by both executors. A running job's row names its worker
(``<kind>:<host>:<pid>:<pid namespace>[:<thread>]``) and is touched every few seconds while it
runs (:func:`heartbeat`). Its holder is gone when that heartbeat is older than the lease, or
when it ran on this host and its process no longer exists (:func:`holder_alive`). Only then
is the job re-queued — or failed after ``max_attempts`` runs, or cancelled if that was asked
(:func:`recover_orphans`) — so any number of servers and workers may sweep at any time
without taking a job from a live holder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update

from castbook.db import JobRow
from castbook.errors import NotFoundError
from castbook.jobs.store import Job, JobStatus, JobStore

__all__ = [
    "current_worker_name",
    "heartbeat",
    "holder_alive",
    "recover_one",
    "recover_orphans",
    "worker_name",
]

log = logging.getLogger("castbook.jobs")


# ---- who holds a running job ------------------------------------------------------------


def _pid_namespace() -> str:
    # Containers sharing the host's name (host networking) still have their own pids.
    try:
        return f"ns{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return "ns0"


def worker_name(pid: int | None = None, kind: str = "celery") -> str:
    """How a worker process names itself in a job's ``worker`` column.

    ``<kind>:<host>:<pid>:<pid namespace>`` (kind: ``celery`` for ``castbook worker``,
    ``local`` for the threads of ``castbook serve``), plus the thread where threads run jobs.
    """
    return f"{kind}:{socket.gethostname()}:{pid or os.getpid()}:{_pid_namespace()}"


def current_worker_name(kind: str = "celery") -> str:
    name = worker_name(kind=kind)
    thread = threading.current_thread()
    if thread is not threading.main_thread():
        name += f":{thread.name}"
    return name[:200]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; it only waits to be reaped
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def holder_alive(job: Job, lease: float, now: datetime | None = None) -> bool:
    """Whether the worker a running job names may still be working on it.

    Gone when its heartbeat is older than ``lease`` seconds, or when it ran on this host in
    this pid namespace (see :func:`worker_name`) and that process no longer exists.
    """
    now = now or datetime.now(UTC)
    if (now - job.updated_at).total_seconds() > lease:
        return False
    parts = (job.worker or "").split(":", 4)
    if (
        len(parts) >= 4
        and parts[0] in ("celery", "local")
        and parts[1] == socket.gethostname()
        and parts[2].isdigit()
        and parts[3] == _pid_namespace()
    ):
        return _pid_alive(int(parts[2]))
    return True


def recover_one(store: JobStore, job: Job, max_attempts: int) -> JobStatus | None:
    """Re-queue, fail or cancel an orphaned running job; None when it changed meanwhile."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {"updated_at": now}
    if job.cancel_requested:
        status = JobStatus.CANCELLED
        values.update(finished_at=now, progress_message="cancelled")
    elif job.attempts < max_attempts:
        status = JobStatus.QUEUED
        values["progress_message"] = (
            f"re-queued after its worker {job.worker} stopped (attempt {job.attempts})"
        )
    else:
        status = JobStatus.FAILED
        values.update(
            finished_at=now,
            progress_message="failed",
            error=f"the worker running this task stopped {job.attempts} time(s); giving up",
            error_data={"type": "WorkerLost", "worker": job.worker, "attempts": job.attempts},
        )
    values["status"] = status.value
    with store.database.session() as session:
        # Compare-and-set on what we saw: a heartbeat or another reaper in between wins.
        changed = session.execute(
            update(JobRow)
            .where(
                JobRow.id == job.id,
                JobRow.status == JobStatus.RUNNING.value,
                JobRow.worker == job.worker,
                JobRow.attempts == job.attempts,
                JobRow.updated_at == job.updated_at,
            )
            .values(**values)
        ).rowcount
        session.commit()
    if not changed:
        return None
    log.warning("task %s: worker %s is gone; %s", job.id, job.worker, status.value)
    return status


def recover_orphans(
    store: JobStore,
    *,
    queues: Sequence[str] | None,
    max_attempts: int,
    lease: float,
    publish: Callable[[Job], None] | None = None,
) -> tuple[list[str], list[str]]:
    """Running jobs whose worker is gone: re-queue (and publish) them, or fail them.

    Unlike :meth:`JobStore.recover` this leaves jobs of live workers alone, so any number of
    workers and servers may call it at any time. Returns (re-queued ids, finished ids).
    """
    requeued: list[str] = []
    finished: list[str] = []
    for queue in queues if queues is not None else [None]:
        for job_id in store.ids_with_status(JobStatus.RUNNING, queue):
            try:
                job = store.get(job_id)
            except NotFoundError:
                continue
            if job.status != JobStatus.RUNNING or holder_alive(job, lease):
                continue
            outcome = recover_one(store, job, max_attempts)
            if outcome == JobStatus.QUEUED:
                requeued.append(job_id)
                if publish is not None:
                    try:
                        publish(store.get(job_id))
                    except Exception:
                        log.exception("task %s was re-queued but could not be published", job_id)
            elif outcome is not None:
                finished.append(job_id)
    return requeued, finished


@contextlib.contextmanager
def heartbeat(store: JobStore, job_id: str, worker: str, every: float) -> Iterator[None]:
    """Touch the running job's row every ``every`` seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                with store.database.session() as session:
                    session.execute(
                        update(JobRow)
                        .where(
                            JobRow.id == job_id,
                            JobRow.status == JobStatus.RUNNING.value,
                            JobRow.worker == worker,
                        )
                        .values(updated_at=datetime.now(UTC))
                    )
                    session.commit()
            except Exception:
                log.warning("task %s: heartbeat failed", job_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"castbook-heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
