"""Which stored blobs the database still uses: the one reachability rule every collector
asks (the character library after a change, task retention, a finisher that lost its job).

A blob is in use while a reference image names it (its bytes or its thumbnail), a
character's LoRA names it (``character_loras``), a task
produced it (``job_outputs``) or a task's input names it (``job_inputs``: an init image, a
reference, an uploaded picture) — whatever the task's status. Identical bytes share one
blob, so a blob is deleted only when no row of any of these tables names it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from castbook.db.schema import CharacterLoraRow, JobInputRow, JobOutputRow, ReferenceImageRow

__all__ = ["referenced_blob_ids"]

_CHUNK = 500  # ids per IN (...): well under SQLite's and PostgreSQL's parameter limits


def referenced_blob_ids(
    session: Session,
    candidates: Iterable[str] | None = None,
    *,
    excluding_jobs: Collection[str] = (),
) -> set[str]:
    """The ids among ``candidates`` (all, when None) some row still names. Rows of the jobs
    in ``excluding_jobs`` do not count (what a prune would leave, asked before it runs)."""
    if candidates is None:
        return _referenced(session, None, excluding_jobs)
    wanted = sorted(set(candidates))
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        found |= _referenced(session, wanted[start : start + _CHUNK], excluding_jobs)
    return found


def _referenced(
    session: Session, chunk: list[str] | None, excluding_jobs: Collection[str]
) -> set[str]:
    found: set[str] = set()
    for column in (
        ReferenceImageRow.sha256,
        ReferenceImageRow.thumbnail_sha256,
        CharacterLoraRow.sha256,
    ):
        query = select(column).distinct()
        if chunk is not None:
            query = query.where(column.in_(chunk))
        found.update(session.scalars(query))
    for table in (JobOutputRow, JobInputRow):
        query = select(table.sha256).distinct()
        if chunk is not None:
            query = query.where(table.sha256.in_(chunk))
        found.update(session.scalars(_without(query, table, excluding_jobs)))
    return found


def _without(
    query: Select[tuple[str]], table: type[JobOutputRow] | type[JobInputRow], jobs: Collection[str]
) -> Select[tuple[str]]:
    if not jobs:
        return query
    job_ids = sorted(jobs)
    for start in range(0, len(job_ids), _CHUNK):
        query = query.where(table.job_id.not_in(job_ids[start : start + _CHUNK]))
    return query
