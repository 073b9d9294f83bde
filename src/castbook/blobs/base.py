"""What every blob store does, whether a local folder or an S3-compatible bucket.

A blob is named by the sha256 of its bytes, so a name never changes meaning: writing the
same bytes twice stores them once, and a reader can check what it got. The rooms above take
a :class:`Blobs` and never ask which kind it is; :func:`castbook.blobs.open_blob_store`
picks one from the settings.

A blob's *modification time* is part of the contract: a writer about to commit a row that
names a blob refreshes it first (:meth:`Blobs.touch`, or :meth:`Blobs.put` of bytes already
there), and collectors delete only blobs last written before their cut-off (see
:mod:`castbook.jobs.retention`). Both stores keep that rule: the folder with the file's
mtime, the bucket with the object's ``Last-Modified`` (a touch copies the object onto itself
on the server, which moves it without sending the bytes again).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import NamedTuple

__all__ = ["BlobInfo", "Blobs", "blob_ids_in", "is_blob_id"]

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


class BlobInfo(NamedTuple):
    """A blob's size and when it was last written (a Unix time). The fields are named as
    :class:`os.stat_result`'s, so code written against the folder's ``stat`` reads either."""

    st_size: int
    st_mtime: float


class Blobs(ABC):
    """A content-addressed store of immutable byte strings."""

    #: ``"folder"`` or ``"s3"``: what ``castbook info`` and the logs call it.
    kind: str

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the blobs are, for people: a folder path or ``s3://bucket/prefix``."""

    @abstractmethod
    def exists(self, blob_id: str) -> bool: ...

    @abstractmethod
    def put(self, data: bytes) -> tuple[str, bool]:
        """Store ``data``; return its id and whether this call created it. Bytes already
        there are not written again, only refreshed (:meth:`touch`); a write that fails
        half-way leaves nothing under the blob's name."""

    @abstractmethod
    def get(self, blob_id: str) -> bytes:
        """The blob's bytes; :class:`~castbook.errors.NotFoundError` when it is missing."""

    @abstractmethod
    def touch(self, blob_id: str) -> bool:
        """Mark the blob as just written (a reference to it is about to be committed); False
        when it is missing."""

    @abstractmethod
    def stat(self, blob_id: str) -> BlobInfo | None:
        """Its size and modification time; None when it is missing."""

    @abstractmethod
    def delete(self, blob_id: str) -> bool:
        """Delete it; False when it was not there."""

    @abstractmethod
    def entries(self) -> Iterator[tuple[str, BlobInfo]]:
        """Every stored blob with its size and time, in id order."""

    @abstractmethod
    def local_path(self, blob_id: str) -> Path:
        """A file on this machine holding the blob's bytes, for code that opens paths
        (a file response, ffmpeg). The folder's own file, or a copy in the local cache."""

    def presigned_url(
        self, blob_id: str, seconds: float, *, media_type: str, filename: str
    ) -> str | None:
        """A URL anyone may GET the blob from for ``seconds``; None where the store has no
        such thing (the folder)."""
        return None

    def __iter__(self) -> Iterator[str]:
        for blob_id, _ in self.entries():
            yield blob_id

    def delete_if_older(self, blob_id: str, cutoff: float) -> int | None:
        """Delete the blob when it was last written before ``cutoff`` (a Unix time); its size
        when deleted, None when it is missing or newer (a writer may be about to use it)."""
        info = self.stat(blob_id)
        if info is None or info.st_mtime >= cutoff:
            return None
        return info.st_size if self.delete(blob_id) else None

    def sizes(self, blob_ids: Collection[str]) -> dict[str, int]:
        """The sizes of those of ``blob_ids`` that are stored (a name that is not a blob id,
        or a blob missing, is left out). Each is asked for here; a store where that costs a
        request per blob answers many from one listing (:class:`~castbook.blobs.s3.S3BlobStore`).
        Callers that ask again and again keep what they learn: a blob's size never changes
        (``castbook.jobs.sizes``)."""
        found: dict[str, int] = {}
        for blob_id in blob_ids:
            if not is_blob_id(blob_id):
                continue
            info = self.stat(blob_id)
            if info is not None:
                found[blob_id] = info.st_size
        return found

    def usage(self) -> tuple[int, int]:
        """How many blobs the store holds and their bytes."""
        count = total = 0
        for _, info in self.entries():
            count += 1
            total += info.st_size
        return count, total
