"""Retention: finished tasks, their outputs and the images only their inputs named are kept
for ``CASTBOOK_TASK_RETENTION``, then deleted; blobs nothing references are collected.

One pass (:func:`prune`) does two things:

1. deletes the tasks that ended (succeeded, failed, cancelled) before the cut-off, with
   their output and input rows. A queued or running task is never touched, whatever its age.
2. sweeps the blob store: a blob no row names (:func:`castbook.db.references.referenced_blob_ids`:
   reference images and their thumbnails, task outputs, task inputs — of every task still
   stored) is deleted. That takes the outputs and input-only uploads of the tasks step 1
   removed, and what a finisher that lost its job, or a worker killed between writing an
   output and recording it, left behind. Identical bytes share a blob, so a pruned task's
   output that equals a kept task's output or a character's reference image stays.

Writers store a blob before the row that names it is committed, and another server (or a
Celery worker) may be doing so right now. The sweep therefore deletes a blob only when it was
last written before its cut-off, which is the earlier of ``now - grace`` and ``grace`` before
the oldest running task started: every writer refreshes a blob it is about to name
(:meth:`Blobs.put` touches an existing one; :class:`JobStore` touches a task's inputs and
outputs before it commits them), and a running task writes its outputs after it started, so a
blob a concurrent commit is about to name is always newer than the cut-off. The
references are read *before* the blobs' times, so a reference committed after the read
comes with a time the sweep sees.

:class:`RetentionPass` runs a pass every ``CASTBOOK_PRUNE_INTERVAL`` inside ``castbook
serve``; ``castbook tasks prune`` runs one by hand; :func:`holdings` is what ``castbook info``
shows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from castbook.blobs import Blobs
from castbook.db import (
    BlobSizeRow,
    Database,
    JobInputRow,
    JobOutputRow,
    JobRow,
    ReferenceImageRow,
)
from castbook.db.references import referenced_blob_ids
from castbook.jobs.sizes import total_bytes
from castbook.jobs.store import TERMINAL, JobStatus
from castbook.settings import Settings

__all__ = [
    "BLOB_GRACE",
    "Holdings",
    "PruneReport",
    "RetentionPass",
    "describe_duration",
    "holdings",
    "prune",
]

log = logging.getLogger("castbook.jobs.retention")

# How recently written a blob must not be to be collected: far longer than any writer takes
# between storing a blob and committing the row that names it (milliseconds to seconds), and
# than the clocks of hosts sharing one blob store differ.
BLOB_GRACE = 600.0

_TERMINAL = sorted(status.value for status in TERMINAL)
_CHUNK = 500


@dataclass(frozen=True)
class PruneReport:
    """What one pass removed (or, with ``dry_run``, would remove)."""

    dry_run: bool
    cutoff: datetime | None  # tasks that ended before it go; None: no task goes
    tasks: int = 0
    outputs: int = 0  # output rows of those tasks
    blobs: int = 0  # files deleted from the blob store
    bytes: int = 0
    held_back: int = 0  # unreferenced blobs written too recently to delete yet
    task_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cutoff"] = self.cutoff.isoformat() if self.cutoff else None
        return data


def prune(
    database: Database,
    blobs: Blobs,
    *,
    older_than: float | None,
    dry_run: bool = False,
    now: datetime | None = None,
    grace: float = BLOB_GRACE,
) -> PruneReport:
    """Delete the tasks that ended more than ``older_than`` seconds ago (None: none), then
    every blob nothing references any more. ``dry_run`` deletes nothing and reports the
    same counts."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=older_than) if older_than is not None else None
    expired = _expired_tasks(database, cutoff)
    outputs = _count_outputs(database, expired)
    if expired and not dry_run:
        expired = _delete_tasks(database, expired, cutoff)
    swept, freed, held_back = _sweep(
        database, blobs, now=now, grace=grace, dry_run=dry_run, excluding=expired
    )
    report = PruneReport(
        dry_run=dry_run,
        cutoff=cutoff,
        tasks=len(expired),
        outputs=outputs,
        blobs=swept,
        bytes=freed,
        held_back=held_back,
        task_ids=sorted(expired),
    )
    if not dry_run and (report.tasks or report.blobs):
        log.info(
            "retention: deleted %d task(s) that ended before %s and %d blob(s) (%d bytes)",
            report.tasks,
            cutoff.isoformat() if cutoff else "-",
            report.blobs,
            report.bytes,
        )
    return report


def _expired_tasks(database: Database, cutoff: datetime | None) -> list[str]:
    if cutoff is None:
        return []
    with database.session() as session:
        return list(
            session.scalars(
                select(JobRow.id).where(JobRow.status.in_(_TERMINAL), JobRow.finished_at < cutoff)
            )
        )


def _count_outputs(database: Database, job_ids: list[str]) -> int:
    total = 0
    with database.session() as session:
        for chunk in _chunks(job_ids):
            total += (
                session.scalar(
                    select(func.count())
                    .select_from(JobOutputRow)
                    .where(JobOutputRow.job_id.in_(chunk))
                )
                or 0
            )
    return total


def _delete_tasks(database: Database, job_ids: list[str], cutoff: datetime | None) -> list[str]:
    """Delete the tasks (still guarded: ended before the cut-off) with their output and input
    rows, in one transaction per chunk. Returns those this call deleted (another server may
    have taken some already)."""
    deleted: list[str] = []
    with database.session() as session:
        for chunk in _chunks(job_ids):
            still_expired = select(JobRow.id).where(
                JobRow.id.in_(chunk), JobRow.status.in_(_TERMINAL), JobRow.finished_at < cutoff
            )
            # ON DELETE CASCADE would do this too; said here so no database setting matters.
            for child in (JobOutputRow, JobInputRow):
                session.execute(
                    delete(child).where(child.job_id.in_(still_expired)),
                    execution_options={"synchronize_session": False},
                )
            gone = (
                session.execute(
                    delete(JobRow).where(JobRow.id.in_(still_expired)).returning(JobRow.id),
                    execution_options={"synchronize_session": False},
                )
                .scalars()
                .all()
            )
            session.commit()
            deleted.extend(gone)
    return deleted


def _blob_cutoff(database: Database, now: datetime, grace: float) -> float:
    """The Unix time before which an unreferenced blob may go (see the module's docstring)."""
    cutoff = now.timestamp() - grace
    with database.session() as session:
        oldest_running = session.scalar(
            select(func.min(JobRow.started_at)).where(JobRow.status == JobStatus.RUNNING.value)
        )
    if oldest_running is not None:
        cutoff = min(cutoff, _aware(oldest_running).timestamp() - grace)
    return cutoff


def _sweep(
    database: Database,
    blobs: Blobs,
    *,
    now: datetime,
    grace: float,
    dry_run: bool,
    excluding: Collection[str],
) -> tuple[int, int, int]:
    """Delete the blobs no row names, written before the cut-off. Returns (blobs, bytes,
    held back). The references are read first, then each blob's time (the order matters)."""
    cutoff = _blob_cutoff(database, now, grace)
    with database.session() as session:
        referenced = referenced_blob_ids(session, None, excluding_jobs=excluding if dry_run else ())
    swept = freed = held_back = 0
    deleted: list[str] = []
    for blob_id, info in blobs.entries():  # one listing, not a look-up per blob
        if blob_id in referenced:
            continue
        if info.st_mtime >= cutoff:
            held_back += 1
            continue
        size = info.st_size if dry_run else blobs.delete_if_older(blob_id, cutoff)
        if size is not None:
            swept += 1
            freed += size
            deleted.append(blob_id)
    if not dry_run:
        _forget_sizes(database, deleted)
    return swept, freed, held_back


def _forget_sizes(database: Database, blob_ids: list[str]) -> None:
    """Drop the recorded sizes of deleted blobs (``castbook.jobs.sizes``), so the table does
    not grow with every blob ever stored. A size is true for as long as the name exists, so a
    row dropped while the same bytes are stored again is only learned once more."""
    for chunk in _chunks(sorted(blob_ids)):
        with database.session() as session, session.begin():
            session.execute(delete(BlobSizeRow).where(BlobSizeRow.sha256.in_(chunk)))


# ---- what is held ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Holdings:
    """What the database and the blob store hold for tasks (``castbook info``)."""

    tasks: dict[str, int]  # by status
    outputs: int  # output rows
    output_blobs: int
    output_bytes: int
    input_only_blobs: int  # named only by task inputs (uploads, data: images)
    input_only_bytes: int
    oldest_finished: datetime | None
    retention: str
    prune_interval: str
    expired: int  # finished tasks a pass would delete now
    next_expiry: datetime | None  # when the oldest kept finished task expires

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("oldest_finished", "next_expiry"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


def holdings(
    database: Database, blobs: Blobs, settings: Settings, now: datetime | None = None
) -> Holdings:
    now = now or datetime.now(UTC)
    with database.session() as session:
        by_status = dict(
            session.execute(select(JobRow.status, func.count()).group_by(JobRow.status)).all()
        )
        outputs = session.scalar(select(func.count()).select_from(JobOutputRow)) or 0
        output_ids = set(session.scalars(select(JobOutputRow.sha256).distinct()))
        input_ids = set(session.scalars(select(JobInputRow.sha256).distinct()))
        input_only = _not_references(session, input_ids - output_ids)
        oldest = session.scalar(
            select(func.min(JobRow.finished_at)).where(JobRow.status.in_(_TERMINAL))
        )
    retention = settings.task_retention
    expired = 0
    next_expiry = None
    if retention is not None:
        cutoff = now - timedelta(seconds=retention)
        expired = len(_expired_tasks(database, cutoff))
        with database.session() as session:
            oldest_kept = session.scalar(
                select(func.min(JobRow.finished_at)).where(
                    JobRow.status.in_(_TERMINAL), JobRow.finished_at >= cutoff
                )
            )
        if oldest_kept is not None:
            next_expiry = _aware(oldest_kept) + timedelta(seconds=retention)
    return Holdings(
        tasks={status.value: by_status.get(status.value, 0) for status in JobStatus},
        outputs=outputs,
        output_blobs=len(output_ids),
        output_bytes=total_bytes(database, blobs, output_ids),
        input_only_blobs=len(input_only),
        input_only_bytes=total_bytes(database, blobs, input_only),
        oldest_finished=_aware(oldest) if oldest is not None else None,
        retention=describe_duration(retention),
        prune_interval=describe_duration(settings.prune_interval),
        expired=expired,
        next_expiry=next_expiry,
    )


def _not_references(session: Session, blob_ids: set[str]) -> set[str]:
    """Those of ``blob_ids`` no character uses (as an image or its thumbnail)."""
    used: set[str] = set()
    candidates = sorted(blob_ids)
    for chunk in _chunks(candidates):
        for column in (ReferenceImageRow.sha256, ReferenceImageRow.thumbnail_sha256):
            used.update(session.scalars(select(column).where(column.in_(chunk))))
    return blob_ids - used


def describe_duration(seconds: float | None) -> str:
    """``30d``, ``12h``, ``90m``, ``45s``; ``off`` for None (keep forever)."""
    if seconds is None:
        return "off"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# ---- the pass inside castbook serve -----------------------------------------------------------


class RetentionPass:
    """A daemon thread that runs :func:`prune` when started and every ``interval`` seconds
    until stopped. With retention off it still collects blobs nothing references."""

    def __init__(
        self,
        database: Database,
        blobs: Blobs,
        *,
        retention: float | None,
        interval: float,
        grace: float = BLOB_GRACE,
    ) -> None:
        self.database = database
        self.blobs = blobs
        self.retention = retention
        self.interval = interval
        self.grace = grace
        self.passes = 0  # completed passes (tests and logs)
        self.last: PruneReport | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, database: Database, blobs: Blobs) -> RetentionPass:
        return cls(
            database,
            blobs,
            retention=settings.task_retention,
            interval=settings.prune_interval,
        )

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="castbook-retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to stop and wait for a pass in progress (bounded)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def run_once(self) -> PruneReport:
        report = prune(self.database, self.blobs, older_than=self.retention, grace=self.grace)
        self.last = report
        self.passes += 1
        return report

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a database or disk hiccup: log it, try again next time
                log.exception("retention pass failed; the next one runs in %.0f s", self.interval)
            if self._stop.wait(self.interval):
                return


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[start : start + _CHUNK] for start in range(0, len(items), _CHUNK)]
