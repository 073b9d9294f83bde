"""The embedded executor's default: jobs run in a worker process, never in the server's.

``castbook serve`` answers HTTP in one process; generation, batch and story renders and
workflows run in a child process it starts (spawned, not forked: the server has threads),
which keeps its models loaded between jobs and runs up to ``workers`` of them at once. So a
busy generation never holds an HTTP request up, and a crash in native model code takes the
worker down, not the server.

The database is the queue. A child claims the oldest queued job with the guarded
``queued → running`` update every executor uses, so nothing can be lost between the server
and the child: a job the server accepted is in the table, whether or not the child heard of
it. The server rings a doorbell on submit (so a job starts at once, not at the next poll)
over a pipe whose end also tells the child when the server is gone. Jobs are held as
:mod:`castbook.jobs.leases` describes: the child's threads name themselves in the row and
heartbeat; the server restarts a child that died (its jobs are provably orphaned — their
holder's pid is gone — and recovered at once) and sweeps for orphans every half lease.

Stopping: the server asks the child to finish what runs and take nothing new; what still
runs when the grace is over is handed back to the queue (:meth:`ProcessExecutor.hand_back`)
and the child is stopped. A child whose server vanished (killed) finishes its running jobs,
records them, and exits.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from castbook.blobs import Blobs, open_blob_store
from castbook.db import Database
from castbook.jobs.executor import JobHandler, run_job, wait_for
from castbook.jobs.leases import heartbeat, recover_orphans, worker_name
from castbook.jobs.store import Job, JobStatus, JobStore
from castbook.settings import Settings, yield_cpu

__all__ = ["HandlersFactory", "ProcessExecutor"]

log = logging.getLogger("castbook.jobs")

# Builds the job kinds in the worker process (``castbook.tasks.handlers.handlers``): a
# module-level function, so the spawned child can import it by name.
HandlersFactory = Callable[[Settings, Database, Blobs], Mapping[str, JobHandler]]

_WAKE = "wake"
_STOP = "stop"
# How often an idle child looks at the table without a doorbell: only a safety net (a bell
# rung while every thread was busy, a job queued by another process on the same database).
_POLL_SECONDS = 1.0
# A child that keeps dying right after it starts is restarted less and less often.
_RESTART_BACKOFF = (0.5, 2.0, 10.0, 30.0)


@dataclass(frozen=True)
class _ChildSpec:
    settings: Settings
    factory: HandlersFactory
    threads: int
    heartbeat: float


class ProcessExecutor:
    """Runs queued jobs in one worker process with ``workers`` job threads."""

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        factory: HandlersFactory,
        *,
        workers: int = 1,
        max_attempts: int = 2,
        lease: float = 120.0,
    ) -> None:
        self.store = store
        self.workers = workers
        self.max_attempts = max_attempts
        self.lease = lease
        self._spec = _ChildSpec(settings, factory, workers, min(10.0, lease / 4))
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._bell: Connection | None = None
        self._bell_lock = threading.Lock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._restarts = 0

    # ---- the Executor protocol ------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self.recover()
        self._spawn()
        self._monitor = threading.Thread(
            target=self._watch, name="castbook-job-process-watch", daemon=True
        )
        self._monitor.start()

    def submit(self, job: Job) -> None:
        """The job is already in the table; wake the worker so it starts now."""
        del job
        self._ring(_WAKE)

    def shutdown(self, wait: bool = True) -> None:
        """Ask the worker to finish its running jobs and exit; with ``wait``, until it has."""
        self._stopping.set()
        self._ring(_STOP)
        process = self._process
        if wait and process is not None:
            process.join()
        if self._monitor is not None and wait:
            self._monitor.join(timeout=5)
        self._close_bell()

    def hand_back(self) -> list[str]:
        """Running jobs go back to the queue (the run not counted as an attempt) and the
        worker is stopped: for a stop that could not wait for them."""
        process = self._process
        if process is None or process.pid is None:
            return []
        handed = self.store.hand_back(f"{worker_name(process.pid, 'local')}:")
        self._stopping.set()
        if process.is_alive():
            process.kill()
            process.join(timeout=10)
        return handed

    def recover(self) -> tuple[list[str], list[str]]:
        """Re-queue or end the running jobs whose holder is gone (this server's dead worker,
        or anyone's whose heartbeat is older than the lease); then wake the worker."""
        return recover_orphans(
            self.store,
            queues=None,
            max_attempts=self.max_attempts,
            lease=self.lease,
            publish=lambda job: self._ring(_WAKE),
        )

    def wait(self, job_id: str, timeout: float, poll: float = 0.05) -> Job:
        """Block until the job finishes or ``timeout`` seconds pass; returns its latest state."""
        return wait_for(self.store, job_id, timeout, poll)

    @property
    def worker_pid(self) -> int | None:
        """The worker process's pid (None before start)."""
        return None if self._process is None else self._process.pid

    # ---- the worker process's life ----------------------------------------------------------

    def _spawn(self) -> None:
        ours, theirs = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child_main,
            args=(self._spec, ours),
            name="castbook-jobs",
            daemon=True,
        )
        process.start()
        ours.close()
        with self._bell_lock:
            old, self._bell, self._process = self._bell, theirs, process
        if old is not None:
            with contextlib.suppress(OSError):
                old.close()
        log.info("job worker process %d started (%d job thread(s))", process.pid, self.workers)

    def _watch(self) -> None:
        """Restart a worker that died and recover its jobs; sweep for orphans every half
        lease (jobs of other servers on this database whose holder is gone)."""
        next_sweep = time.monotonic() + max(1.0, self.lease / 2)
        started = time.monotonic()
        while not self._stopping.wait(0.2):
            process = self._process
            if process is not None and not process.is_alive() and not self._stopping.is_set():
                quick = time.monotonic() - started < 30
                self._restarts = self._restarts + 1 if quick else 1
                delay = _RESTART_BACKOFF[min(self._restarts, len(_RESTART_BACKOFF)) - 1]
                log.warning(
                    "job worker process %d exited with %s; its running tasks are recovered and "
                    "a new worker starts in %.1f s",
                    process.pid,
                    process.exitcode,
                    delay,
                )
                self._safely(self.recover)
                if self._stopping.wait(delay):
                    return
                self._safely(self._spawn)
                started = time.monotonic()
            if time.monotonic() >= next_sweep:
                self._safely(self.recover)
                next_sweep = time.monotonic() + max(1.0, self.lease / 2)

    @staticmethod
    def _safely(action: Callable[[], object]) -> None:
        try:
            action()
        except Exception:
            log.warning("the job worker's watcher failed a step; it tries again", exc_info=True)

    def _ring(self, message: str) -> None:
        with self._bell_lock:
            if self._bell is None:
                return
            # A dead worker's pipe: its replacement reads the table when it starts.
            with contextlib.suppress(OSError, ValueError):
                self._bell.send(message)

    def _close_bell(self) -> None:
        with self._bell_lock:
            if self._bell is not None:
                with contextlib.suppress(OSError):
                    self._bell.close()
                self._bell = None


# ---- inside the worker process ------------------------------------------------------------


def _child_main(spec: _ChildSpec, bell: Connection) -> None:
    # Ctrl+C reaches the whole process group; the server decides when its worker stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield_cpu()  # the server's HTTP process goes first when cores are short
    logging.basicConfig(
        level=logging.WARNING, format=f"castbook job worker {os.getpid()}: %(message)s"
    )
    database = Database(spec.settings.database_url)
    blobs = open_blob_store(spec.settings)
    store = JobStore(database, blobs)  # a finisher that lost its job tidies its outputs
    handlers = spec.factory(spec.settings, database, blobs)
    worker = _ChildWorker(store, handlers, spec)
    listener = threading.Thread(target=worker.listen, args=(bell,), daemon=True)
    listener.start()
    worker.run()
    database.dispose()


class _ChildWorker:
    """Job threads that claim queued rows, oldest first, until told to stop."""

    def __init__(
        self, store: JobStore, handlers: Mapping[str, JobHandler], spec: _ChildSpec
    ) -> None:
        self.store = store
        self.handlers = handlers
        self.spec = spec
        self.name = worker_name(kind="local")
        self.bell = threading.Semaphore(0)
        self.stopping = threading.Event()

    def listen(self, bell: Connection) -> None:
        """Doorbells from the server; its end closing (the server is gone) means stop."""
        while True:
            try:
                message = bell.recv()
            except (EOFError, OSError):
                message = _STOP
            if message == _STOP:
                self.stopping.set()
                for _ in range(self.spec.threads):
                    self.bell.release()
                return
            self.bell.release()

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._work, name=f"castbook-job-{index}")
            for index in range(self.spec.threads)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _work(self) -> None:
        worker = f"{self.name}:{threading.current_thread().name}"
        while not self.stopping.is_set():
            if not self._run_next(worker):
                self.bell.acquire(timeout=_POLL_SECONDS)

    def _run_next(self, worker: str) -> bool:
        """Claim and run the oldest queued job; False when there was none to take."""
        try:
            candidates = self.store.ids_with_status(JobStatus.QUEUED, limit=self.spec.threads + 1)
        except Exception:
            log.warning("reading the queue failed; trying again", exc_info=True)
            return False
        for job_id in candidates:
            if self.stopping.is_set():
                return True
            with heartbeat(self.store, job_id, worker, self.spec.heartbeat):
                if run_job(self.store, self.handlers, job_id, worker) is not None:
                    return True
        return False
