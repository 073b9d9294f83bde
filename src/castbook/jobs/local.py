"""The embedded executor: a bounded pool of threads inside ``castbook serve``.

On start it recovers jobs a previous process left running (re-queued up to
``max_attempts``, then failed with the reason) and picks up everything still queued, so a
killed server never leaves a task hanging.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections.abc import Mapping

from castbook.jobs.executor import JobHandler, run_job
from castbook.jobs.store import Job, JobStatus, JobStore

__all__ = ["LocalExecutor"]

_STOP = object()


class LocalExecutor:
    def __init__(
        self,
        store: JobStore,
        handlers: Mapping[str, JobHandler],
        *,
        workers: int = 1,
        max_attempts: int = 2,
    ) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self.workers = workers
        self.max_attempts = max_attempts
        self.name = f"local:{socket.gethostname()}:{os.getpid()}"
        self._queue: queue.Queue[object] = queue.Queue()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.store.recover(max_attempts=self.max_attempts)
        for job_id in self.store.ids_with_status(JobStatus.QUEUED):
            self._queue.put(job_id)
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"castbook-job-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, job: Job) -> None:
        self._queue.put(job.id)

    def shutdown(self, wait: bool = True) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join()
        self._threads.clear()

    def wait(self, job_id: str, timeout: float, poll: float = 0.05) -> Job:
        """Block until the job finishes or ``timeout`` seconds pass; returns its latest state."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.store.get(job_id)
            if job.done or time.monotonic() >= deadline:
                return job
            time.sleep(poll)

    def _work(self) -> None:
        worker = f"{self.name}:{threading.current_thread().name}"
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            run_job(self.store, self.handlers, str(item), worker)
