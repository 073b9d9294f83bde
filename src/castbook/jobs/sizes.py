"""Storage accounting without asking the store blob by blob.

The storage quota (every request that stores images) and ``castbook info`` add up the bytes
of the blobs some rows name. Asking the store for each size is a file ``stat`` on the folder
but a ``HEAD`` request on S3: 1 000 images meant 1 000 round trips per quota check. A blob is
named by its content, so its size never changes: :func:`blob_sizes` reads the sizes the
database has learned (``blob_sizes``), asks the store only for blobs it meets for the first
time (:meth:`~castbook.blobs.Blobs.sizes`: one listing for many), and records what it
learned for every later check.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from castbook.blobs import Blobs, is_blob_id
from castbook.db import BlobSizeRow, Database

__all__ = ["blob_sizes", "total_bytes"]

log = logging.getLogger(__name__)

_CHUNK = 500  # ids per IN (...): well under SQLite's and PostgreSQL's parameter limits


def blob_sizes(database: Database, blobs: Blobs, blob_ids: Collection[str]) -> dict[str, int]:
    """The size of each of ``blob_ids`` that is stored (a name that is not a blob id, or a
    blob missing from the store, is left out)."""
    wanted = sorted({blob_id for blob_id in blob_ids if is_blob_id(blob_id)})
    known: dict[str, int] = {}
    with database.session() as session:
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            query = select(BlobSizeRow.sha256, BlobSizeRow.byte_size).where(
                BlobSizeRow.sha256.in_(chunk)
            )
            known.update((sha, int(size)) for sha, size in session.execute(query))
    new = [blob_id for blob_id in wanted if blob_id not in known]
    if new:
        learned = blobs.sizes(new)
        _record(database, learned)
        known.update(learned)
    return known


def total_bytes(database: Database, blobs: Blobs, blob_ids: Collection[str]) -> int:
    return sum(blob_sizes(database, blobs, blob_ids).values())


def _record(database: Database, sizes: dict[str, int]) -> None:
    """Keep ``sizes``; a row another process wrote meanwhile holds the same size, so a
    clash is dropped, not an error. Recording only saves later requests: a database that
    cannot take the write now (locked, read-only for ``castbook info``) costs the count
    nothing, and the sizes are learned again next time."""
    if not sizes:
        return
    rows = [(sha, size) for sha, size in sorted(sizes.items())]
    try:
        with database.session() as session, session.begin():
            session.add_all(BlobSizeRow(sha256=sha, byte_size=size) for sha, size in rows)
        return
    except IntegrityError:
        pass
    except SQLAlchemyError as exc:
        log.debug("blob sizes not recorded: %s", exc)
        return
    for sha, size in rows:  # someone recorded some of them first: one at a time
        try:
            with database.session() as session, session.begin():
                if session.get(BlobSizeRow, sha) is None:
                    session.add(BlobSizeRow(sha256=sha, byte_size=size))
        except SQLAlchemyError:
            continue
