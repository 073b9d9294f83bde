"""What one app instance works with: database, blob store, jobs, keys, executor, scorer."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import select

from castbook.api.auth import ApiKeys
from castbook.api.config import ApiConfig
from castbook.blobs import BlobStore
from castbook.db import CharacterRow, Database, JobOutputRow, JobRow, ReferenceImageRow
from castbook.errors import StorageError
from castbook.jobs import Executor, Job, JobStore
from castbook.library import CharacterLibrary
from castbook.settings import Settings

if TYPE_CHECKING:
    from castbook.evaluation import Scorer
    from castbook.generation import PresetCatalog

__all__ = ["AppServices", "Services"]


@dataclass
class Services:
    settings: Settings
    config: ApiConfig
    database: Database
    blobs: BlobStore
    jobs: JobStore
    keys: ApiKeys
    executor: Executor
    _scorer: Scorer | None = field(default=None, repr=False)
    _scorer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # The face model is not safe to share between threads; scoring calls take turns.
    scoring_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _extractor: Any = field(default=None, repr=False)

    def extractor(self) -> Any:
        """The Character Extractor; one per server, so key cool-downs are remembered."""
        with self._scorer_lock:
            if self._extractor is None:
                from castbook.extract import Extractor

                self._extractor = Extractor(self.settings.home)
            return self._extractor

    def library(self, owner: str) -> CharacterLibrary:
        return CharacterLibrary(self.database, self.blobs, owner=owner)

    def presets(self) -> PresetCatalog:
        # Read on every call: editing presets.toml takes effect without a restart.
        from castbook.generation import load_presets

        return load_presets(self.settings.home)

    def submit(self, job: Job) -> Job:
        """Hand a new job to the executor; a job that cannot be handed over is failed."""
        try:
            self.executor.submit(job)
        except Exception as exc:
            failed = self.jobs.fail(
                job.id, f"could not queue the task: {exc}", {"type": type(exc).__name__}
            )
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

    def scorer(self) -> Scorer:
        """One scorer per app, made on first use (loading the face model takes a moment)."""
        with self._scorer_lock:
            if self._scorer is None:
                from castbook.evaluation import Scorer
                from castbook.evaluation.faces import faces_available
                from castbook.evaluation.learned import configured_embedder

                self._scorer = Scorer(
                    faces=faces_available(), learned_embedder=configured_embedder()
                )
            return self._scorer

    def close(self) -> None:
        if self._scorer is not None:
            self._scorer.close()
        self.database.dispose()


async def _services(request: Request) -> Services:  # async: no thread hop per request
    return request.app.state.services


AppServices = Annotated[Services, Depends(_services)]
