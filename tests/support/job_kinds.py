"""Job kinds for executor tests that run in another process (the local executor's worker
process, a Celery worker): module-level, so a spawned process imports them by name.

``gated`` writes ``<dir>/started-<attempt>`` with its pid when it starts, then waits (calling
progress, where cancellation arrives) until ``<dir>/open`` exists, and returns its pid. A
test decides when it ends by creating the file: no timing involved.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from castbook.blobs import BlobStore
from castbook.db import Database
from castbook.jobs import Job, JobContext, JobHandler, JobOutput
from castbook.settings import Settings

__all__ = ["gated_handlers", "open_gate", "started_pids"]

# Far beyond any test's wait: a gate nobody opens ends the job instead of hanging a worker.
_GATE_LIMIT = 600.0


def _gated(job: Job, context: JobContext) -> tuple[list[JobOutput], dict[str, Any]]:
    folder = Path(job.input["dir"])
    (folder / f"started-{job.attempts}").write_text(str(os.getpid()))
    deadline = time.monotonic() + _GATE_LIMIT
    while not (folder / "open").exists() and time.monotonic() < deadline:
        context.progress(0, 1, "waiting for the gate")
        time.sleep(0.02)
    return [], {"pid": os.getpid()}


def gated_handlers(
    settings: Settings, database: Database, blobs: BlobStore
) -> Mapping[str, JobHandler]:
    del settings, database, blobs
    return {"gated": _gated}


def open_gate(folder: Path) -> None:
    (folder / "open").write_text("")


def started_pids(folder: Path) -> dict[int, int]:
    """attempt → pid of the process that started it."""
    return {
        int(path.name.split("-", 1)[1]): int(path.read_text() or 0)
        for path in folder.glob("started-*")
    }
