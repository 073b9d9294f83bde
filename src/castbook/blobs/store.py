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
import tempfile
from collections.abc import Iterator
from pathlib import Path

from castbook.blobs.base import BlobInfo, Blobs, blob_ids_in, is_blob_id
from castbook.errors import NotFoundError, StorageError

__all__ = ["BlobStore", "blob_ids_in", "is_blob_id"]


class BlobStore(Blobs):
    """The local folder: the embedded default, and what a single machine needs."""

    kind = "folder"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root)

    def local_path(self, blob_id: str) -> Path:
        return self.path(blob_id)

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

    def stat(self, blob_id: str) -> BlobInfo | None:
        try:
            info = self.path(blob_id).stat()
        except FileNotFoundError:
            return None
        return BlobInfo(info.st_size, info.st_mtime)

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

    def entries(self) -> Iterator[tuple[str, BlobInfo]]:
        for blob_id in self:
            info = self.stat(blob_id)
            if info is not None:  # deleted since the listing
                yield blob_id, info
