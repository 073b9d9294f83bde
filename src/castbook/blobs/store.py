"""A folder of immutable files named by the sha256 of their bytes.

Writes go to a temporary file in the same folder and are renamed into place, so a reader
never sees half a blob and a crash never leaves a truncated one under a real name.

A blob's modification time says when a writer last stored (or touched) it: a writer about to
record a reference to a blob refreshes it first, and collectors delete only blobs older than
their cut-off, so a blob written for a row not yet committed is never taken from under it
(see :mod:`castbook.jobs.retention`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from castbook.errors import NotFoundError, StorageError

__all__ = ["BlobStore", "blob_ids_in", "is_blob_id"]

_BLOB_ID = re.compile(r"[0-9a-f]{64}")


def is_blob_id(value: str) -> bool:
    return bool(_BLOB_ID.fullmatch(value))


def blob_ids_in(value: object) -> set[str]:
    """Every blob id a JSON value names, at any depth (a job's input: an init image, the
    references, a batch's or a workflow's images)."""
    if isinstance(value, str):
        return {value} if is_blob_id(value) else set()
    if isinstance(value, dict):
        items = list(value.values())
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return set()
    found: set[str] = set()
    for item in items:
        found |= blob_ids_in(item)
    return found


class BlobStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, blob_id: str) -> Path:
        if not is_blob_id(blob_id):
            # Ids reach file paths; refuse anything that is not a plain hex digest.
            raise NotFoundError(f"{blob_id!r} is not a blob id (64 lowercase hex digits)")
        return self.root / blob_id[:2] / blob_id

    def exists(self, blob_id: str) -> bool:
        return self.path(blob_id).is_file()

    def put(self, data: bytes) -> tuple[str, bool]:
        """Store ``data``; return its id and whether this call created the file."""
        blob_id = hashlib.sha256(data).hexdigest()
        target = self.path(blob_id)
        if self.touch(blob_id):  # already there: fresh again, for collectors running now
            return blob_id, False
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp_name, target)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(f"could not write to the blob store at {self.root}: {exc}") from exc
        return blob_id, True

    def get(self, blob_id: str) -> bytes:
        try:
            return self.path(blob_id).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"blob {blob_id} is missing from {self.root}; "
                "the store was changed outside castbook"
            ) from None

    def touch(self, blob_id: str) -> bool:
        """Mark the blob as just written (a reference to it is about to be committed); False
        when it is missing."""
        try:
            os.utime(self.path(blob_id))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"could not touch blob {blob_id} in {self.root}: {exc}") from exc
        return True

    def stat(self, blob_id: str) -> os.stat_result | None:
        """Its size and modification time; None when it is missing."""
        try:
            return self.path(blob_id).stat()
        except FileNotFoundError:
            return None

    def delete_if_older(self, blob_id: str, cutoff: float) -> int | None:
        """Delete the blob when it was last written before ``cutoff`` (a Unix time); its size
        when deleted, None when it is missing or newer (a writer may be about to use it)."""
        info = self.stat(blob_id)
        if info is None or info.st_mtime >= cutoff:
            return None
        return info.st_size if self.delete(blob_id) else None

    def delete(self, blob_id: str) -> bool:
        path = self.path(blob_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        with contextlib.suppress(OSError):  # other blobs still share the folder
            path.parent.rmdir()
        return True

    def __iter__(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for shard in sorted(self.root.iterdir()):
            if shard.is_dir():
                for entry in sorted(shard.iterdir()):
                    if is_blob_id(entry.name):
                        yield entry.name
