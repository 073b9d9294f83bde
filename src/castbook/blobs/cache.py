"""A bounded folder of blobs fetched from an object store, so a warm worker reads references
from its own disk instead of the network.

Several processes on one machine (a server's worker processes, Celery's prefork children)
share one cache folder, so nothing here keeps state another process must agree with:

- a file is written to a temporary name in the cache folder and renamed into place
  (``os.replace``), so a reader sees a whole blob or none, and two processes fetching the
  same blob at once both succeed (the later rename replaces identical bytes);
- a file's modification time is its last use; eviction deletes the least recently used
  files until the folder is back under its size, and takes a file another process deleted
  first in its stride;
- a file used in the last :data:`PROTECT_SECONDS` is not evicted, so a path just handed to a
  caller (a file response, ffmpeg) is still there when the caller opens it. A reader that
  already has the file open keeps reading it after an eviction (POSIX unlink semantics).

Files in the cache were checked against their sha256 when fetched; reads from it are not
hashed again (the cache is this machine's own disk, like the local blob folder).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

from castbook.blobs.base import is_blob_id
from castbook.errors import NotFoundError

__all__ = ["PROTECT_SECONDS", "BlobCache"]

PROTECT_SECONDS = 30.0
# A hit refreshes the file's time only when it is older than this: one utime per blob per
# minute is enough for LRU order and keeps hot reads at the cost of a plain file read.
_REFRESH_AFTER = 60.0
# How often a process re-measures the folder, since other processes add to it too.
_RESCAN_EVERY = 30.0
_TMP_PREFIX = ".tmp-"


class BlobCache:
    """A least-recently-used cache of blobs in ``root``, at most ``max_bytes`` (give or take
    what other processes add between two scans, and files in use right now). ``max_bytes``
    0 keeps nothing longer than :data:`PROTECT_SECONDS`: :meth:`add` still gives a path."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        max_bytes: int,
        *,
        protect_seconds: float = PROTECT_SECONDS,
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max(0, int(max_bytes))
        self.protect_seconds = protect_seconds
        self._lock = threading.Lock()
        self._estimate: int | None = None  # bytes in the folder, as this process believes
        self._scanned_at = 0.0

    def path(self, blob_id: str) -> Path:
        if not is_blob_id(blob_id):
            raise NotFoundError(f"{blob_id!r} is not a blob id (64 lowercase hex digits)")
        return self.root / blob_id[:2] / blob_id

    def read(self, blob_id: str) -> bytes | None:
        """The cached bytes, or None when the blob is not cached (or was evicted meanwhile)."""
        path = self.path(blob_id)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
                used = os.fstat(handle.fileno()).st_mtime
        except FileNotFoundError:
            return None
        if time.time() - used > _REFRESH_AFTER:
            self._mark_used(path)
        return data

    def hit(self, blob_id: str) -> Path | None:
        """The cached file's path, marked as used now; None when it is not cached."""
        path = self.path(blob_id)
        return path if self._mark_used(path) else None

    def add(self, blob_id: str, data: bytes) -> Path:
        """Keep ``data`` (already checked to be ``blob_id``'s bytes); its path."""
        path = self.path(blob_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        self._grew(len(data))
        return path

    def evict(self) -> int:
        """Bring the folder under its size now; the bytes left."""
        with self._lock:
            self._estimate = self._evict()
            self._scanned_at = time.monotonic()
            return self._estimate

    def discard(self, blob_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(blob_id).unlink()

    def size(self) -> int:
        """The bytes in the folder now (a scan)."""
        return sum(size for _, size, _ in self._files())

    # ---- eviction -----------------------------------------------------------------------

    def _grew(self, added: int) -> None:
        with self._lock:
            now = time.monotonic()
            if self._estimate is None or now - self._scanned_at > _RESCAN_EVERY:
                self._estimate = None
            else:
                self._estimate += added
            if self._estimate is not None and self._estimate <= self.max_bytes:
                return
            self._estimate = self._evict()
            self._scanned_at = now

    def _evict(self) -> int:
        """Delete the least recently used files until the folder fits; the bytes left."""
        files = self._files()
        total = sum(size for _, size, _ in files)
        if total <= self.max_bytes:
            return total
        fresh_after = time.time() - self.protect_seconds
        for path, size, used in sorted(files, key=lambda item: item[2]):
            if total <= self.max_bytes:
                break
            if used >= fresh_after:
                break  # the rest were used even more recently: in use, keep them
            with contextlib.suppress(FileNotFoundError):  # another process evicted it first
                path.unlink()
            total -= size
        return total

    def _files(self) -> list[tuple[Path, int, float]]:
        """(path, size, last use) of every cached blob; leftovers of a writer that died are
        removed on the way."""
        found: list[tuple[Path, int, float]] = []
        if not self.root.is_dir():
            return found
        stale = time.time() - 3600
        for shard in os.scandir(self.root):
            if not shard.is_dir():
                continue
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(shard.path):
                    try:
                        info = entry.stat()
                    except FileNotFoundError:
                        continue
                    if entry.name.startswith(_TMP_PREFIX):
                        if info.st_mtime < stale:
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(entry.path)
                        continue
                    found.append((Path(entry.path), info.st_size, info.st_mtime))
        return found

    @staticmethod
    def _mark_used(path: Path) -> bool:
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        return True
