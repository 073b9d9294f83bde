"""The embedded executor in threads: a bounded pool of job threads in this process.

``castbook serve`` runs jobs in a worker process by default (:mod:`castbook.jobs.processes`);
this one is for ``CASTBOOK_LOCAL_JOBS=thread``, for embedding castbook in a program and for
tests that hand in their own handlers.

Running jobs are held as the Celery workers hold theirs (:mod:`castbook.jobs.leases`): the
row names this process's thread and is touched while the job runs. On start, and every half
lease after, it recovers jobs whose holder is provably gone — its process no longer exists
on this host, or its heartbeat is older than the lease — (re-queued up to ``max_attempts``,
then failed with the reason) and picks up everything still queued. So a killed server never
leaves a task hanging, and a second ``castbook serve`` on the same data never takes a job
the first one is still running.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping

from castbook.jobs.executor import JobHandler, run_job, wait_for
from castbook.jobs.leases import heartbeat, recover_orphans, worker_name
from castbook.jobs.store import Job, JobStatus, JobStore

__all__ = ["LocalExecutor"]

_STOP = object()
log = logging.getLogger("castbook.jobs")


class LocalExecutor:
    def __init__(
        self,
        store: JobStore,
        handlers: Mapping[str, JobHandler],
        *,
        workers: int = 1,
        max_attempts: int = 2,
        lease: float = 120.0,
    ) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self.workers = workers
        self.max_attempts = max_attempts
        self.lease = lease
        self.heartbeat = min(10.0, lease / 4)
        self.name = worker_name(kind="local")
        self._queue: queue.Queue[object] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def start(self) -> None:
        self._stopping.clear()
        self.recover()
        for job_id in self.store.ids_with_status(JobStatus.QUEUED):
            self._queue.put(job_id)
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"castbook-job-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        sweeper = threading.Thread(target=self._sweep, name="castbook-job-sweep", daemon=True)
        sweeper.start()
        self._sweeper = sweeper

    def recover(self) -> tuple[list[str], list[str]]:
        """Re-queue (here) or end the running jobs whose holder is gone; live ones stay."""
        return recover_orphans(
            self.store,
            queues=None,
            max_attempts=self.max_attempts,
            lease=self.lease,
            publish=lambda job: self._queue.put(job.id),
        )

    def _sweep(self) -> None:
        while not self._stopping.wait(max(1.0, self.lease / 2)):
            try:
                self.recover()
            except Exception:
                log.warning("checking for orphaned tasks failed", exc_info=True)

    def submit(self, job: Job) -> None:
        self._queue.put(job.id)

    def hand_back(self) -> list[str]:
        """Running jobs this process holds go back to the queue, the run not counted as an
        attempt: for a stop that could not wait for them. Their threads, if they finish
        before the process exits, record nothing (the ending is guarded by the holder)."""
        return self.store.hand_back(f"{self.name}:")

    def shutdown(self, wait: bool = True) -> None:
        self._stopping.set()
        for _ in self._threads:
            self._queue.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join()
        self._threads.clear()

    def wait(self, job_id: str, timeout: float, poll: float = 0.05) -> Job:
        """Block until the job finishes or ``timeout`` seconds pass; returns its latest state."""
        return wait_for(self.store, job_id, timeout, poll)

    def _work(self) -> None:
        worker = f"{self.name}:{threading.current_thread().name}"
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            with heartbeat(self.store, str(item), worker, self.heartbeat):
                run_job(self.store, self.handlers, str(item), worker)
