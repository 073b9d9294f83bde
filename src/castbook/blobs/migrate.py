"""Copy every blob of one store to another (``castbook blobs migrate``): a local folder to a
bucket when a deployment grows past one machine, or a bucket back to a folder.

Resumable: the target is listed first and what it already holds is not sent again, so a run
cut off half-way is simply run again. Verified: every blob read from the source is hashed
(bytes that are not their name are reported and not copied), every upload carries its
checksum, and at the end of each blob the target's copy is read back and hashed — a blob
counts as migrated only when the target serves the right bytes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from castbook.blobs.base import Blobs
from castbook.errors import CastbookError

__all__ = ["MigrateReport", "migrate"]


@dataclass
class MigrateReport:
    total: int = 0  # blobs in the source
    done: int = 0  # looked at so far
    copied: int = 0  # sent to the target by this run
    present: int = 0  # already in the target (an earlier run, or the same bytes)
    verified: int = 0  # read back from the target with the right hash
    bytes: int = 0  # of the blobs looked at
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)  # blob id → why

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def migrate(
    source: Blobs,
    target: Blobs,
    *,
    verify: bool = True,
    progress: Callable[[MigrateReport], None] | None = None,
    every: float = 1.0,
) -> MigrateReport:
    """Copy what ``target`` lacks from ``source`` and check every blob there. ``progress``
    is called about every ``every`` seconds and once at the end."""
    started = time.monotonic()
    have = {blob_id: info.st_size for blob_id, info in target.entries()}
    wanted = list(source.entries())
    report = MigrateReport(total=len(wanted))
    shown = started
    for blob_id, info in wanted:
        try:
            _one(source, target, blob_id, have.get(blob_id), report, verify=verify)
        except CastbookError as exc:
            report.failed[blob_id] = str(exc)
        report.done += 1
        report.bytes += info.st_size
        now = time.monotonic()
        report.seconds = now - started
        if progress is not None and now - shown >= every:
            progress(report)
            shown = now
    report.seconds = time.monotonic() - started
    if progress is not None:
        progress(report)
    return report


def _one(
    source: Blobs,
    target: Blobs,
    blob_id: str,
    target_size: int | None,
    report: MigrateReport,
    *,
    verify: bool,
) -> None:
    if target_size is None:
        data = source.get(blob_id)
        if _digest(data) != blob_id:  # checked before the put: it would store a stray blob
            raise CastbookError(
                f"the source's bytes for {blob_id} hash to {_digest(data)[:16]}…; the source "
                "copy is corrupt, nothing was migrated for it"
            )
        target.put(data)
        report.copied += 1
    else:
        report.present += 1
    if verify:
        if _digest(target.get(blob_id)) != blob_id:
            raise CastbookError(f"the target's copy of {blob_id} is corrupt")
        report.verified += 1


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
