"""The gallery: every image and video of an owner's finished tasks, filtered and paged by
index (``GET /v1/results``, ``GET /v1/results.zip``).

A task's outputs are written with the task when it ends, by whichever executor ran it; what
each was made with lies in the task's result, in the shape of its kind. The gallery reads
that out once per task — with a ``describe`` function the caller gives (the job kinds'
:func:`castbook.tasks.gallery.describe_outputs`; this package knows no kind) — into
``gallery_items`` the first time the owner's gallery is read after the task ended. So tasks
that ended before the gallery existed, or on a Celery worker, are listed all the same, and
no executor had to change. Items go with their task (retention, deletion).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, exists, func, select
from sqlalchemy.exc import IntegrityError

from castbook.db import Database, GalleryCharacterRow, GalleryItemRow, JobOutputRow, JobRow
from castbook.jobs.store import TERMINAL, JobOutput, _jobs_with_outputs

__all__ = ["GalleryFilter", "GalleryItem", "GalleryPage", "ResultGallery"]

_ITEMS = GalleryItemRow.__table__
_CHARACTERS = GalleryCharacterRow.__table__
_JOBS = JobRow.__table__
_OUTPUTS = JobOutputRow.__table__
# A task's row is committed a moment after its finished_at is taken, by a worker whose clock
# may differ from the others' (Celery workers on other hosts): tasks that finished up to this
# long before the newest indexed one are looked at again, so none is skipped. Looking costs
# one indexed query over the tasks of that hour.
_SETTLE = timedelta(hours=1)
_INDEX_BATCH = 200


class Described(Protocol):
    """What ``describe`` returns per output (:class:`castbook.tasks.gallery.OutputDescription`)."""

    shown: bool
    prompt: str | None
    negative_prompt: str | None
    preset: str | None
    score: float | None
    characters: tuple[str, ...]
    node: str | None
    workflow: str | None


Describe = Callable[[Any], Sequence[Described]]


@dataclass(frozen=True)
class GalleryFilter:
    """Which results: all given conditions hold. ``character`` is a name as tasks give it;
    ``workflow`` a saved workflow's id."""

    character: str | None = None
    workflow: str | None = None
    min_score: float | None = None
    kind: str | None = None  # "image" | "video"


@dataclass(frozen=True)
class GalleryItem:
    id: int
    task: str
    task_kind: str
    position: int
    sha256: str
    kind: str
    media_type: str
    width: int
    height: int
    seed: int | None
    finished_at: datetime
    workflow: str | None
    node: str | None
    preset: str | None
    prompt: str | None
    negative_prompt: str | None
    score: float | None
    characters: tuple[str, ...]


@dataclass(frozen=True)
class GalleryPage:
    items: list[GalleryItem]
    next_cursor: int | None  # the last item's id: the next page starts below it
    total: int


class ResultGallery:
    """One owner's indexed results (SQLite or PostgreSQL)."""

    def __init__(self, database: Database, owner: str, describe: Describe) -> None:
        self.database = database
        self.owner = owner
        self.describe = describe

    # ---- indexing -------------------------------------------------------------------------

    def index(self) -> int:
        """Index the owner's finished tasks whose outputs are not listed yet; how many items
        were added. Cheap when nothing is new: one indexed read."""
        added = 0
        while True:
            jobs = self._unindexed_jobs()
            if not jobs:
                return added
            added += self._insert(jobs)
            if len(jobs) < _INDEX_BATCH:
                return added

    def _unindexed_jobs(self) -> list[Any]:
        with self.database.engine.connect() as connection:
            newest = connection.scalar(
                select(func.max(_ITEMS.c.finished_at)).where(_ITEMS.c.owner == self.owner)
            )
            not_listed = ~exists().where(
                and_(_ITEMS.c.job_id == _OUTPUTS.c.job_id, _ITEMS.c.position == _OUTPUTS.c.position)
            )
            unlisted = exists().where(and_(_OUTPUTS.c.job_id == _JOBS.c.id, not_listed))
            query = select(_JOBS).where(
                _JOBS.c.owner == self.owner,
                _JOBS.c.status.in_([status.value for status in TERMINAL]),
                _JOBS.c.finished_at.is_not(None),
                unlisted,
            )
            if newest is not None:
                query = query.where(_JOBS.c.finished_at >= newest - _SETTLE)
            query = query.order_by(_JOBS.c.finished_at, _JOBS.c.id).limit(_INDEX_BATCH)
            return _jobs_with_outputs(connection, connection.execute(query).all())

    def _insert(self, jobs: Sequence[Any]) -> int:
        """A batch of tasks in one transaction; if another request indexed one of them
        meanwhile, each task on its own (skipping what is there)."""
        try:
            with self.database.engine.begin() as connection:
                return self._write(connection, jobs, listed=set())
        except IntegrityError:
            added = 0
            for job in jobs:
                try:
                    with self.database.engine.begin() as connection:
                        listed = set(
                            connection.execute(
                                select(_ITEMS.c.job_id, _ITEMS.c.position).where(
                                    _ITEMS.c.job_id == job.id
                                )
                            ).tuples()
                        )
                        added += self._write(connection, [job], listed=listed)
                except IntegrityError:
                    continue  # indexed by another request meanwhile
            return added

    def _write(self, connection: Any, jobs: Sequence[Any], *, listed: set[Any]) -> int:
        items: list[dict[str, Any]] = []
        names: list[dict[str, Any]] = []
        for job in jobs:
            described = self.describe(job)
            for position, (output, about) in enumerate(zip(job.outputs, described, strict=True)):
                if (job.id, position) in listed:
                    continue
                items.append(_row(job, position, output, about))
                names += [
                    {"job_id": job.id, "position": position, "name": name, "owner": job.owner}
                    for name in dict.fromkeys(n[:100] for n in about.characters)
                ]
        if items:
            connection.execute(_ITEMS.insert(), items)
        if names:
            connection.execute(_CHARACTERS.insert(), names)
        return len(items)

    # ---- reading --------------------------------------------------------------------------

    def page(
        self, where: GalleryFilter, *, cursor: int | None = None, limit: int = 60
    ) -> GalleryPage:
        """Newest first; ``cursor`` is the previous page's ``next_cursor``."""
        query = self._query(where)
        with self.database.engine.connect() as connection:
            total = connection.scalar(
                select(func.count()).select_from(query.with_only_columns(_ITEMS.c.id).subquery())
            )
            if cursor is not None:
                query = query.where(_ITEMS.c.id < cursor)
            rows = connection.execute(query.order_by(_ITEMS.c.id.desc()).limit(limit + 1)).all()
        items = [_item(row) for row in rows[:limit]]
        more = len(rows) > limit
        return GalleryPage(items, items[-1].id if more and items else None, total or 0)

    def all(self, where: GalleryFilter, *, batch: int = 200) -> Iterator[GalleryItem]:
        """Every matching item, newest first, read a batch at a time (no connection is held
        between batches: a zip of thousands streams for minutes)."""
        cursor: int | None = None
        while True:
            page = self.page(where, cursor=cursor, limit=batch)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def _query(self, where: GalleryFilter) -> Any:
        query = select(_ITEMS).where(_ITEMS.c.owner == self.owner, _ITEMS.c.shown.is_(True))
        if where.workflow is not None:
            query = query.where(_ITEMS.c.workflow == where.workflow)
        if where.min_score is not None:
            query = query.where(_ITEMS.c.score >= where.min_score)
        if where.kind is not None:
            query = query.where(_ITEMS.c.kind == where.kind)
        if where.character is not None:
            query = query.where(
                exists().where(
                    _CHARACTERS.c.owner == self.owner,
                    _CHARACTERS.c.name == where.character,
                    _CHARACTERS.c.job_id == _ITEMS.c.job_id,
                    _CHARACTERS.c.position == _ITEMS.c.position,
                )
            )
        return query


def _row(job: Any, position: int, output: JobOutput, about: Described) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "position": position,
        "owner": job.owner,
        "finished_at": job.finished_at,
        "task_kind": job.kind,
        "sha256": output.sha256,
        "kind": output.kind,
        "media_type": output.media_type,
        "width": output.width,
        "height": output.height,
        "seed": output.seed,
        "shown": about.shown,
        "workflow": (about.workflow or "")[:32] or None,
        "node": (about.node or "")[:100] or None,
        "preset": (about.preset or "")[:100] or None,
        "prompt": about.prompt,
        "negative_prompt": about.negative_prompt,
        "score": about.score,
        "characters": list(about.characters),
    }


def _item(row: Any) -> GalleryItem:
    return GalleryItem(
        id=row.id,
        task=row.job_id,
        task_kind=row.task_kind,
        position=row.position,
        sha256=row.sha256,
        kind=row.kind,
        media_type=row.media_type,
        width=row.width,
        height=row.height,
        seed=row.seed,
        finished_at=row.finished_at,
        workflow=row.workflow,
        node=row.node,
        preset=row.preset,
        prompt=row.prompt,
        negative_prompt=row.negative_prompt,
        score=row.score,
        characters=tuple(row.characters or ()),
    )
