"""How long a retention pass and `castbook info`'s task summary take on a large store.

    .venv/bin/python benchmarks/prune.py [--tasks 10000] [--expired 0.5] [--database URL]

Fills a temporary CASTBOOK_HOME (SQLite unless ``--database``) with ``--tasks`` finished
tasks, each with two outputs of its own and one input-only upload (three blobs a task, a few
hundred bytes each, written an hour ago), ``--expired`` of them ended 40 days ago and the
rest yesterday, then times: the task summary (:func:`holdings`), a dry-run pass and the real
pass with a 30-day retention, and a second pass with nothing left to do. Prints the counts
each reported. Touches nothing outside the temporary folder (and the given database).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from castbook.blobs import BlobStore  # noqa: E402
from castbook.db import Database, JobInputRow, JobOutputRow, JobRow  # noqa: E402
from castbook.jobs.retention import holdings, prune  # noqa: E402
from castbook.settings import Settings  # noqa: E402

MAX_TASKS = 200_000  # bounds the set-up


def fill(database: Database, blobs: BlobStore, tasks: int, expired: float) -> None:
    now = datetime.now(UTC)
    hour_ago = time.time() - 3600
    with database.session() as session:
        for n in range(tasks):
            ended = now - (timedelta(days=40) if n < tasks * expired else timedelta(days=1))
            ids = []
            for part in ("out-a", "out-b", "upload"):
                blob_id = blobs.put(f"{part} {n} {uuid.uuid4().hex}".encode() * 8)[0]
                os.utime(blobs.path(blob_id), (hour_ago, hour_ago))
                ids.append(blob_id)
            job_id = uuid.uuid4().hex
            row = JobRow(
                id=job_id,
                owner="local",
                kind="generation",
                queue="default",
                status="succeeded",
                input={"init_image": ids[2]},
                result={},
                progress_step=1,
                progress_total=1,
                progress_message="done",
                attempts=1,
                cancel_requested=False,
                created_at=ended,
                started_at=ended,
                finished_at=ended,
                updated_at=ended,
            )
            row.outputs = [
                JobOutputRow(
                    position=i,
                    sha256=s,
                    kind="image",
                    media_type="image/png",
                    width=8,
                    height=8,
                    seed=1,
                )
                for i, s in enumerate(ids[:2])
            ]
            row.inputs = [JobInputRow(sha256=ids[2])]
            session.add(row)
            if n % 1000 == 999:
                session.commit()
        session.commit()


def timed(label: str, call):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = call()
    print(f"{label:<28} {time.perf_counter() - start:8.2f} s")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--expired", type=float, default=0.5)
    parser.add_argument("--database", default=None)
    args = parser.parse_args()
    tasks = max(1, min(args.tasks, MAX_TASKS))
    with tempfile.TemporaryDirectory(prefix="castbook-prune-") as tmp:
        settings = Settings.for_home(tmp, args.database)
        database = Database(settings.database_url)
        blobs = BlobStore(settings.blob_dir)
        print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {database.safe_url}")
        timed(f"fill {tasks} tasks", lambda: fill(database, blobs, tasks, args.expired))
        month = 30 * 86400
        settings = Settings(**{**settings.__dict__, "task_retention": float(month)})
        held = timed("holdings (castbook info)", lambda: holdings(database, blobs, settings))
        print(
            f"  {held.tasks['succeeded']} tasks, {held.output_blobs} output blobs, "
            f"{held.input_only_blobs} input-only, {held.expired} expired"
        )
        dry = timed(
            "prune --dry-run", lambda: prune(database, blobs, older_than=month, dry_run=True)
        )
        real = timed("prune", lambda: prune(database, blobs, older_than=month))
        again = timed(
            "prune again (nothing to do)", lambda: prune(database, blobs, older_than=month)
        )
        for name, report in (("dry run", dry), ("prune", real), ("again", again)):
            print(
                f"  {name}: {report.tasks} tasks, {report.outputs} outputs, "
                f"{report.blobs} blobs, {report.bytes} bytes"
            )
        database.dispose()


if __name__ == "__main__":
    main()
