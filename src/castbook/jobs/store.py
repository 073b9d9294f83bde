"""Job records: the database row is the source of truth for status, progress and results.

Status moves ``queued → running → succeeded | failed | cancelled``. Every transition is a
short write transaction guarded by the current status, so two executors can never both
start the same job, and a job is never left "running" by a process that died: ``recover``
re-queues it (bounded attempts) or fails it with the reason.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import SimpleNamespace
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from castbook.blobs import Blobs, blob_ids_in
from castbook.db import Database, JobInputRow, JobOutputRow, JobRow
from castbook.db.references import referenced_blob_ids
from castbook.errors import NotFoundError
from castbook.settings import DEFAULT_OWNER

__all__ = [
    "TERMINAL",
    "Job",
    "JobOutput",
    "JobStatus",
    "JobStore",
    "PartialResults",
    "ProgressState",
]

log = logging.getLogger("castbook.jobs")


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


@dataclass(frozen=True)
class JobOutput:
    """A result file of a job; ``sha256`` names its blob."""

    sha256: str
    kind: str  # "image" | "video"
    media_type: str
    width: int
    height: int
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.sha256,
            "kind": self.kind,
            "media_type": self.media_type,
            "width": self.width,
            "height": self.height,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Job:
    id: str
    owner: str
    kind: str
    queue: str
    status: JobStatus
    input: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    error_data: dict[str, Any] | None
    progress_step: int
    progress_total: int
    progress_message: str
    attempts: int
    cancel_requested: bool
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    outputs: tuple[JobOutput, ...] = ()

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def seconds(self) -> float | None:
        """Run time so far (or in all, once finished)."""
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(UTC)
        return round((end - self.started_at).total_seconds(), 3)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "queue": self.queue,
            "status": self.status.value,
            "progress": {
                "step": self.progress_step,
                "total": self.progress_total,
                "message": self.progress_message,
            },
            "input": self.input,
            "result": self.result,
            "outputs": [output.to_json() for output in self.outputs],
            "error": self.error,
            "error_data": self.error_data,
            "attempts": self.attempts,
            "cancel_requested": self.cancel_requested,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "seconds": self.seconds,
        }


class ProgressState(NamedTuple):
    """The part of a job an event stream follows."""

    status: JobStatus
    step: int
    total: int
    message: str


def _now() -> datetime:
    return datetime.now(UTC)


class JobStore:
    """The job rows. With ``blobs`` (the store handlers write outputs to) it also keeps that
    store tidy: a blob a row is about to name is touched first, so a collector running
    meanwhile leaves it alone, and a finisher that lost its job deletes the outputs it wrote
    that nothing references."""

    def __init__(self, database: Database, blobs: Blobs | None = None) -> None:
        self.database = database
        self.blobs = blobs

    # ---- creating and reading -----------------------------------------------------------

    def create(
        self,
        *,
        kind: str,
        input: dict[str, Any],
        owner: str = DEFAULT_OWNER,
        queue: str = "default",
    ) -> Job:
        now = _now()
        values = {
            "id": uuid.uuid4().hex,
            "owner": owner,
            "kind": kind,
            "queue": queue,
            "status": JobStatus.QUEUED.value,
            "input": input,
            "progress_step": 0,
            "progress_total": 0,
            "progress_message": "queued",
            "attempts": 0,
            "cancel_requested": False,
            "created_at": now,
            "updated_at": now,
        }
        # The stored images the input names stay alive while the job exists (see
        # CharacterLibrary's garbage collection), whoever deletes what meanwhile.
        inputs = sorted(blob_ids_in(input))
        self._touch(inputs, what="input")
        # Core inserts in one transaction: a submit holds SQLite's write lock for as short a
        # time as it can, and costs a third of the CPU of the ORM's unit of work.
        with self.database.write_lock, self.database.engine.begin() as connection:
            connection.execute(_JOBS.insert(), values)
            if inputs:
                connection.execute(
                    _INPUTS.insert(), [{"job_id": values["id"], "sha256": sha} for sha in inputs]
                )
        unset = dict.fromkeys(("result", "error", "error_data", "worker", "started_at"))
        return _job_from_row(SimpleNamespace(**values, **unset, finished_at=None), ())

    def get(self, job_id: str, owner: str | None = None) -> Job:
        """The job; a job of another owner is reported as missing, never as forbidden."""
        # Polling a task is the API's hottest request: one prepared Core query with the
        # outputs joined, no ORM identity map or unit of work (a fifth of the CPU).
        with self.database.engine.connect() as connection:
            rows = connection.execute(_JOB_WITH_OUTPUTS, {"job_id": job_id}).all()
        if not rows or (owner is not None and rows[0].owner != owner):
            raise NotFoundError(f"no task {job_id!r}")
        return _job_from_row(rows[0], [_output_from_row(r) for r in rows if r.output_sha256])

    def list(
        self,
        owner: str,
        *,
        limit: int = 50,
        status: str | None = None,
        kind: str | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[Job]:
        """The owner's jobs, newest first (ties by id). ``after`` (the ``created_at`` and id
        of the previous page's last job) starts after it, so pages neither skip nor repeat a
        job when new ones arrive, or that one is deleted, meanwhile."""
        query = select(_JOBS).where(_JOBS.c.owner == owner)
        if status is not None:
            query = query.where(_JOBS.c.status == status)
        if kind is not None:
            query = query.where(_JOBS.c.kind == kind)
        if after is not None:
            created, job_id = after
            query = query.where(
                (_JOBS.c.created_at < created)
                | ((_JOBS.c.created_at == created) & (_JOBS.c.id < job_id))
            )
        query = query.order_by(_JOBS.c.created_at.desc(), _JOBS.c.id.desc()).limit(limit)
        with self.database.engine.connect() as connection:
            rows = connection.execute(query).all()
            return _jobs_with_outputs(connection, rows)

    def progress_states(self, job_ids: Sequence[str]) -> dict[str, ProgressState]:
        """Status and progress of many jobs in one read (what event streams watch)."""
        states: dict[str, ProgressState] = {}
        with self.database.session() as session:
            for start in range(0, len(job_ids), 500):
                rows = session.execute(
                    select(
                        JobRow.id,
                        JobRow.status,
                        JobRow.progress_step,
                        JobRow.progress_total,
                        JobRow.progress_message,
                    ).where(JobRow.id.in_(job_ids[start : start + 500]))
                )
                for job_id, status, step, total, message in rows:
                    states[job_id] = ProgressState(JobStatus(status), step, total, message or "")
        return states

    def ids_with_status(
        self, status: JobStatus, queue: str | None = None, *, limit: int | None = None
    ) -> list[str]:
        """Ids of the jobs with this status, oldest first (at most ``limit``)."""
        query = select(JobRow.id).where(JobRow.status == status.value)
        if queue is not None:
            query = query.where(JobRow.queue == queue)
        query = query.order_by(JobRow.created_at, JobRow.id).limit(limit)
        with self.database.session() as session:
            return list(session.scalars(query))

    # ---- transitions (each guarded by the status it expects) --------------------------------

    def start(self, job_id: str, worker: str) -> Job | None:
        """queued → running; None when the job is no longer queued (cancelled, taken)."""
        now = _now()
        with self.database.session() as session:
            changed = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == JobStatus.QUEUED.value)
                .values(
                    status=JobStatus.RUNNING.value,
                    attempts=JobRow.attempts + 1,
                    worker=worker,
                    started_at=now,
                    updated_at=now,
                    progress_message="running",
                )
            ).rowcount
            session.commit()
        return self.get(job_id) if changed else None

    def progress(
        self, job_id: str, step: int, total: int, message: str = "", *, worker: str | None = None
    ) -> bool:
        """Record progress; returns True when the job should stop: the user asked to cancel
        it, or (with ``worker``) that worker no longer holds it — its lease ran out and the job
        was re-queued or taken over, or it was handed back — so a run nobody will record
        stops at its next step instead of computing to the end beside the new one, and never
        writes its steps over the new holder's."""
        held = [JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value]
        if worker is not None:
            held.append(JobRow.worker == worker)
        with self.database.session() as session:
            changed = session.execute(
                update(JobRow)
                .where(*held)
                .values(
                    progress_step=step,
                    progress_total=total,
                    progress_message=message,
                    updated_at=_now(),
                )
            ).rowcount
            session.commit()
            if worker is not None and not changed:
                return True
            return bool(session.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id)))

    def succeed(
        self,
        job_id: str,
        outputs: Sequence[JobOutput],
        result: dict[str, Any] | None = None,
        *,
        worker: str | None = None,
    ) -> Job:
        """Record success. With ``worker``, only while that worker still holds the job: a
        finisher whose job was re-queued (its lease ran out) or ended meanwhile changes
        nothing, so one job never ends twice (and deletes the outputs it wrote that nothing
        references: see :meth:`_drop_orphans`)."""
        called = time.time()
        with self.database.session() as session:
            row = self._held_row(session, job_id, worker)
            if row is None:
                session.rollback()
                self._drop_orphans(job_id, outputs, called)
                return self.get(job_id)
            self._touch((o.sha256 for o in outputs), what="output")
            row.status = JobStatus.SUCCEEDED.value
            row.result = result or {}
            row.finished_at = row.updated_at = _now()
            row.progress_step = row.progress_total or row.progress_step
            row.progress_message = "done"
            row.outputs = _output_rows(outputs)
            session.commit()
        return self.get(job_id)

    def fail(
        self,
        job_id: str,
        error: str,
        error_data: dict[str, Any] | None = None,
        partial: PartialResults | None = None,
        *,
        worker: str | None = None,
    ) -> Job:
        """Record the failure, with what the job made before it failed (``partial``)."""
        return self._finish(
            job_id,
            JobStatus.FAILED,
            error=error,
            error_data=error_data,
            partial=partial,
            worker=worker,
        )

    def fail_unstarted(
        self, job_id: str, error: str, error_data: dict[str, Any] | None = None
    ) -> Job:
        """queued → failed, for a job that could not be handed to its executor; a job that
        left ``queued`` meanwhile (a worker took it after all, or it ended) is left alone."""
        self._end_queued(job_id, JobStatus.FAILED, error=error, error_data=error_data)
        return self.get(job_id)

    def cancel(self, job_id: str, owner: str | None = None) -> Job:
        """Cancel: a queued job at once, a running one at its next step."""
        job = self.get(job_id, owner)
        if job.status == JobStatus.QUEUED:
            self._end_queued(job_id, JobStatus.CANCELLED, cancel_requested=True)
        elif job.status == JobStatus.RUNNING:
            with self.database.session() as session:
                session.execute(
                    update(JobRow).where(JobRow.id == job_id).values(cancel_requested=True)
                )
                session.commit()
        return self.get(job_id)

    def _end_queued(self, job_id: str, status: JobStatus, **values: Any) -> None:
        """queued → ``status`` (with ``values``), only while the job is still queued."""
        now = _now()
        with self.database.session() as session:
            session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == JobStatus.QUEUED.value)
                .values(
                    status=status.value,
                    finished_at=now,
                    updated_at=now,
                    progress_message=status.value,
                    **values,
                )
            )
            session.commit()

    def mark_cancelled(
        self, job_id: str, partial: PartialResults | None = None, *, worker: str | None = None
    ) -> Job:
        return self._finish(job_id, JobStatus.CANCELLED, error=None, partial=partial, worker=worker)

    def hand_back(self, worker_prefix: str) -> list[str]:
        """Running jobs whose worker name starts with ``worker_prefix`` (one process's
        threads) back to ``queued``, the run not counted as an attempt. Returns their ids."""
        with self.database.session() as session:
            rows = session.execute(
                update(JobRow)
                .where(
                    JobRow.status == JobStatus.RUNNING.value,
                    JobRow.worker.startswith(worker_prefix, autoescape=True),
                )
                .values(
                    status=JobStatus.QUEUED.value,
                    attempts=JobRow.attempts - 1,
                    progress_message="handed back to the queue when the server stopped",
                    updated_at=_now(),
                )
                .returning(JobRow.id)
            ).all()
            session.commit()
        return [row[0] for row in rows]

    def recover(
        self, *, max_attempts: int, queue: str | None = None
    ) -> tuple[list[str], list[str]]:
        """Every "running" job: re-queue, or fail after max_attempts — without asking whether
        its holder is alive. Only for a database no live process uses; the executors use
        :func:`castbook.jobs.leases.recover_orphans`, which leaves live holders alone."""
        requeued: list[str] = []
        failed: list[str] = []
        with self.database.session() as session:
            query = select(JobRow).where(JobRow.status == JobStatus.RUNNING.value)
            if queue is not None:
                query = query.where(JobRow.queue == queue)
            for row in session.scalars(query):
                row.updated_at = _now()
                if row.cancel_requested:
                    row.status = JobStatus.CANCELLED.value
                    row.finished_at = row.updated_at
                    failed.append(row.id)
                elif row.attempts < max_attempts:
                    row.status = JobStatus.QUEUED.value
                    row.progress_message = (
                        f"re-queued after the worker stopped (attempt {row.attempts})"
                    )
                    requeued.append(row.id)
                else:
                    row.status = JobStatus.FAILED.value
                    row.error = (
                        f"the worker running this task stopped {row.attempts} time(s); giving up"
                    )
                    # The same answer the Celery executor gives (leases.recover_one).
                    row.error_data = {
                        "type": "WorkerLost",
                        "worker": row.worker,
                        "attempts": row.attempts,
                    }
                    row.finished_at = row.updated_at
                    failed.append(row.id)
            session.commit()
        return requeued, failed

    @staticmethod
    def _held_row(session: Session, job_id: str, worker: str | None) -> JobRow | None:
        """The job's row, locked; None when ``worker`` is given and no longer holds it."""
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is None:
            raise NotFoundError(f"no task {job_id!r}")
        if worker is not None and (row.status != JobStatus.RUNNING.value or row.worker != worker):
            log.warning(
                "task %s: %s no longer holds it (%s, held by %s); its result is dropped",
                job_id,
                worker,
                row.status,
                row.worker,
            )
            return None
        return row

    def _touch(self, blob_ids: Iterable[str], *, what: str) -> None:
        """Refresh the blobs a row is about to name, so a collector whose snapshot of the
        references predates the commit sees them as new and leaves them alone."""
        if self.blobs is None:
            return
        for blob_id in blob_ids:
            # An input may hold any 64-hex text; only a missing *output* is a fault.
            if not self.blobs.touch(blob_id) and what == "output":
                log.warning("output blob %s is missing from %s", blob_id, self.blobs.location)

    def _drop_orphans(self, job_id: str, outputs: Sequence[JobOutput], called: float) -> None:
        """A finisher that lost its job wrote ``outputs`` for nothing: delete those no row
        references. Identical bytes share a blob, so one that another task produced (the
        new holder re-running this very job makes the same bytes from the same seed) or a
        reference image uses stays; so does one written again after this call began (a
        writer about to commit a reference to it)."""
        if self.blobs is None or not outputs:
            return
        shas = {o.sha256 for o in outputs}
        with self.database.session() as session:
            unreferenced = shas - referenced_blob_ids(session, shas)
        dropped = [sha for sha in sorted(unreferenced) if self.blobs.delete_if_older(sha, called)]
        if dropped:
            log.warning(
                "task %s: deleted %d output(s) its lost finisher wrote that nothing uses",
                job_id,
                len(dropped),
            )

    def _finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None,
        error_data: dict[str, Any] | None = None,
        partial: PartialResults | None = None,
        worker: str | None = None,
    ) -> Job:
        called = time.time()
        with self.database.session() as session:
            row = self._held_row(session, job_id, worker)
            if row is None:
                session.rollback()
                if partial is not None:
                    self._drop_orphans(job_id, partial.outputs, called)
                return self.get(job_id)
            if partial is not None:
                self._touch((o.sha256 for o in partial.outputs), what="output")
            row.status = status.value
            row.error = error
            row.error_data = error_data
            if partial is not None:
                row.result = partial.result
                row.outputs = _output_rows(partial.outputs)
            row.finished_at = row.updated_at = _now()
            row.progress_message = status.value
            session.commit()
        return self.get(job_id)


@dataclass(frozen=True)
class PartialResults:
    """What a job made before it failed or was cancelled: kept with the job (the outputs'
    blobs stay alive, and the user sees them) instead of being lost with the error."""

    outputs: Sequence[JobOutput]
    result: dict[str, Any]


def _output_rows(outputs: Sequence[JobOutput]) -> list[JobOutputRow]:
    return [
        JobOutputRow(
            position=i,
            sha256=o.sha256,
            kind=o.kind,
            media_type=o.media_type,
            width=o.width,
            height=o.height,
            seed=o.seed,
        )
        for i, o in enumerate(outputs)
    ]


_JOBS = JobRow.__table__
_OUTPUTS = JobOutputRow.__table__
_INPUTS = JobInputRow.__table__
_OUTPUT_COLUMNS = (
    _OUTPUTS.c.job_id.label("output_job_id"),
    _OUTPUTS.c.sha256.label("output_sha256"),
    _OUTPUTS.c.kind.label("output_kind"),
    _OUTPUTS.c.media_type.label("output_media_type"),
    _OUTPUTS.c.width.label("output_width"),
    _OUTPUTS.c.height.label("output_height"),
    _OUTPUTS.c.seed.label("output_seed"),
)

_JOB_WITH_OUTPUTS = (
    select(_JOBS, *_OUTPUT_COLUMNS)
    .outerjoin(_OUTPUTS, _OUTPUTS.c.job_id == _JOBS.c.id)
    .where(_JOBS.c.id == bindparam("job_id"))
    .order_by(_OUTPUTS.c.position)
)


def _output_from_row(row: Any) -> JobOutput:
    return JobOutput(
        row.output_sha256,
        row.output_kind,
        row.output_media_type,
        row.output_width,
        row.output_height,
        row.output_seed,
    )


def _jobs_with_outputs(connection: Any, rows: Sequence[Any]) -> list[Job]:
    """Jobs from rows of the jobs table, their outputs read in one more query for all of
    them, not one per job."""
    outputs: dict[str, list[JobOutput]] = {row.id: [] for row in rows}
    if outputs:
        for output in connection.execute(
            select(*_OUTPUT_COLUMNS)
            .where(_OUTPUTS.c.job_id.in_(outputs))
            .order_by(_OUTPUTS.c.job_id, _OUTPUTS.c.position)
        ):
            outputs[output.output_job_id].append(_output_from_row(output))
    return [_job_from_row(row, outputs[row.id]) for row in rows]


def _job_from_row(row: Any, outputs: Sequence[JobOutput]) -> Job:
    """A job from a mapped row or a Core row of the jobs table (same attribute names)."""
    return Job(
        id=row.id,
        owner=row.owner,
        kind=row.kind,
        queue=row.queue,
        status=JobStatus(row.status),
        input=row.input,
        result=row.result,
        error=row.error,
        error_data=row.error_data,
        progress_step=row.progress_step,
        progress_total=row.progress_total,
        progress_message=row.progress_message,
        attempts=row.attempts,
        cancel_requested=row.cancel_requested,
        worker=row.worker,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        updated_at=row.updated_at,
        outputs=tuple(outputs),
    )
