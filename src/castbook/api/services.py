"""What one app instance works with: database, blob store, jobs, keys, executor, and the
evaluation workers."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import select

from castbook.api.auth import ApiKeys
from castbook.api.config import ApiConfig
from castbook.api.sse import TaskWatch
from castbook.blobs import Blobs
from castbook.db import CharacterRow, Database, JobOutputRow, JobRow, ReferenceImageRow
from castbook.errors import StorageError
from castbook.jobs import Executor, Job, JobStore
from castbook.library import CharacterLibrary
from castbook.settings import Settings

if TYPE_CHECKING:
    from castbook.evaluation.pool import EvaluationPool
    from castbook.generation import PresetCatalog

__all__ = ["AppServices", "Services"]

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    config: ApiConfig
    database: Database
    blobs: Blobs
    jobs: JobStore
    keys: ApiKeys
    executor: Executor
    _evaluations: EvaluationPool | None = field(default=None, repr=False)
    _made_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _extractor: Any = field(default=None, repr=False)
    _task_watch: TaskWatch | None = field(default=None, repr=False)
    _presets: tuple[Any, Any] | None = field(default=None, repr=False)  # (file stamp, catalog)
    # Set when the server is asked to stop (``castbook serve`` on SIGTERM/Ctrl+C, before the
    # HTTP server waits for open requests): event streams and ``/getImagetoImage``'s wait
    # end at once, so a client following a task never holds a stop up until the task ends.
    stopping: bool = False

    def task_watch(self) -> TaskWatch:
        """What every open task event stream of this app reads its task's state from."""
        if self._task_watch is None:
            self._task_watch = TaskWatch(
                self.jobs, self.config.events_poll_seconds, stopping=lambda: self.stopping
            )
        return self._task_watch

    def extractor(self) -> Any:
        """The Character Extractor; one per server, so key cool-downs are remembered."""
        with self._made_lock:
            if self._extractor is None:
                from castbook.extract import Extractor

                self._extractor = Extractor(self.settings.home)
            return self._extractor

    def library(self, owner: str) -> CharacterLibrary:
        return CharacterLibrary(self.database, self.blobs, owner=owner)

    def presets(self) -> PresetCatalog:
        """The catalogue, read again whenever presets.toml changed (its size, time or
        inode): an edit takes effect without a restart, and a submit costs one ``stat``
        rather than reading and parsing the file (a submit's thread waits for the
        interpreter lock after every system call, so each one shows in its latency)."""
        from castbook.generation.presets import PRESETS_FILE, load_presets

        home = self.settings.home
        try:
            info = os.stat(home / PRESETS_FILE) if home is not None else None
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino) if info else None
        except OSError:
            stamp = None
        cached = self._presets
        if cached is not None and cached[0] == stamp:
            return cached[1]
        catalog = load_presets(home)
        # A file changed in the last two seconds may change again within the clock tick
        # its time is taken from, keeping size and time: that one is not trusted yet.
        racy = stamp is not None and time.time_ns() - stamp[0] < 2_000_000_000
        self._presets = None if racy else (stamp, catalog)
        return catalog

    def submit(self, job: Job) -> Job:
        """Hand a new job to the executor; a job that cannot be handed over is failed."""
        try:
            self.executor.submit(job)
        except Exception as exc:
            # Only while still queued: the executor may have failed it already, or a worker
            # may have taken it although the hand-over reported an error.
            message = f"could not queue the task: {exc}"
            failed = self.jobs.fail_unstarted(job.id, message, {"type": type(exc).__name__})
            if failed.started_at is not None and failed.error != message:
                # A worker took it (and it was not failed here): the hand-over reached the
                # executor although it reported an error. The task runs, so the client gets
                # it, not a refusal for a task that goes on.
                log.warning("task %s was taken although queueing it failed: %s", job.id, exc)
                return failed
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"could not queue task {failed.id}: {exc}") from exc
        return job

    def output_of(self, owner: str, sha256: str) -> JobOutputRow | None:
        """The owner's job output with this blob id, if any of their jobs produced it."""
        with self.database.session() as session:
            return session.scalars(
                select(JobOutputRow)
                .join(JobRow, JobRow.id == JobOutputRow.job_id)
                .where(JobOutputRow.sha256 == sha256, JobRow.owner == owner)
                .limit(1)
            ).first()

    def owns_image(self, owner: str, sha256: str) -> bool:
        """Whether the owner may use this stored image: one of their characters' reference
        images or one of their tasks' results."""
        if self.output_of(owner, sha256) is not None:
            return True
        with self.database.session() as session:
            found = session.scalars(
                select(ReferenceImageRow.id)
                .join(CharacterRow, CharacterRow.id == ReferenceImageRow.character_id)
                .where(ReferenceImageRow.sha256 == sha256, CharacterRow.owner == owner)
                .limit(1)
            ).first()
        return found is not None

    def evaluations(self) -> EvaluationPool:
        """The worker processes that score evaluations, one pool per app, made on first use
        (each worker loads the face model once). Owners share them fairly; nothing here holds
        a lock across owners while scoring."""
        with self._made_lock:
            if self._evaluations is None:
                from castbook.evaluation.pool import EvaluationPool

                self._evaluations = EvaluationPool(self.settings.eval_workers)
            return self._evaluations

    def close_evaluations(self) -> None:
        """Stop the evaluation workers (queued evaluations are refused); safe to repeat."""
        with self._made_lock:
            pool, self._evaluations = self._evaluations, None
        if pool is not None:
            pool.close()

    def close(self) -> None:
        self.close_evaluations()
        self.database.dispose()


async def _services(request: Request) -> Services:  # async: no thread hop per request
    return request.app.state.services


AppServices = Annotated[Services, Depends(_services)]
