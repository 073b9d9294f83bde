"""What the storage quota's check and ``castbook info`` cost on an S3 bucket: a request per
blob (before) against the sizes the database learned once (after).

    .venv/bin/python benchmarks/storage_accounting.py [--count 1000] [--rounds 5]
        [--url s3://bucket/prefix --endpoint URL]   # a real S3/MinIO instead of moto

One owner holds ``--count`` task results in a bucket (small objects: what is measured is the
number of requests, which does not depend on an object's size). Each check is timed and its
HTTP requests to the store counted (botocore's ``before-send`` event: every request sent,
retries included):

- ``before``: the quota's old sum, a ``HEAD`` per blob (``Blobs.stat``), as the quota
  and ``castbook info`` did;
- ``after, first``: :func:`castbook.api.quotas.stored_bytes` on an empty ``blob_sizes``
  table: the sizes come from one listing and are recorded;
- ``after``: the same check again (every later check), ``--rounds`` times;
- ``castbook info``'s task holdings (``holdings``), after.

Every check's total is compared with the bytes written: ``wrong`` counts checks whose total
differs. Without ``--url`` the bucket lives in a moto S3 server on 127.0.0.1 (a Python
process: its latencies are moto's on this machine, the request counts are S3's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from castbook.api.quotas import owner_blob_ids, stored_bytes  # noqa: E402
from castbook.blobs import Blobs  # noqa: E402
from castbook.db import Database  # noqa: E402
from castbook.jobs import JobOutput, JobStore  # noqa: E402
from castbook.jobs.retention import holdings  # noqa: E402
from castbook.settings import Settings  # noqa: E402


def per_blob_heads(database: Database, blobs: Blobs, owner: str) -> int:
    """The quota's sum before: a look-up per blob."""
    total = 0
    for blob_id in owner_blob_ids(database, owner):
        info = blobs.stat(blob_id)
        if info is not None:
            total += info.st_size
    return total


class Requests:
    def __init__(self, store: Blobs) -> None:
        self.count = 0
        store.client().meta.events.register("before-send.s3", self._sent)

    def _sent(self, **_: object) -> None:
        self.count += 1


def measure(label: str, check: Callable[[], int], expected: int, requests: Requests) -> dict:
    before = requests.count
    started = time.perf_counter()
    try:
        total = check()
        error = None
    except Exception as exc:  # counted and shown
        total, error = None, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    return {
        "label": label,
        "seconds": seconds,
        "requests": requests.count - before,
        "wrong": int(total != expected),
        "error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--url")
    parser.add_argument("--endpoint")
    args = parser.parse_args()

    from castbook.blobs.s3 import S3BlobStore

    tmp = Path(tempfile.mkdtemp(prefix="castbook-accounting-"))
    server = None
    if args.url:
        url, endpoint = args.url, args.endpoint
    else:
        from tests.support.s3_server import start_s3

        server = start_s3(tmp)
        url, endpoint = server.new_bucket(), server.endpoint
    try:
        store = S3BlobStore(url, endpoint=endpoint)
        items = [os.urandom(args.size) for _ in range(args.count)]
        started = time.perf_counter()
        ids = [store.put(data)[0] for data in items]
        print(
            f"stored {len(ids)} objects of {args.size} B in {url} in "
            f"{time.perf_counter() - started:.1f} s"
        )
        expected = sum(map(len, items))

        database = Database(f"sqlite:///{tmp / 'castbook.db'}")
        jobs = JobStore(database)
        job = jobs.create(kind="generation", input={}, owner="ann")
        jobs.start(job.id, "bench")
        outputs = [JobOutput(sha, "image", "image/png", 8, 8, n) for n, sha in enumerate(ids)]
        jobs.succeed(job.id, outputs, {})
        settings = Settings.for_home(tmp / "home")

        requests = Requests(store)
        rows = [
            measure(
                "before (HEAD per blob)",
                lambda: per_blob_heads(database, store, "ann"),
                expected,
                requests,
            )
        ]
        rows.append(
            measure(
                "after, first check (listing)",
                lambda: stored_bytes(database, store, "ann"),
                expected,
                requests,
            )
        )
        later = [
            measure(
                "after, later check",
                lambda: stored_bytes(database, store, "ann"),
                expected,
                requests,
            )
            for _ in range(args.rounds)
        ]
        info = measure(
            "castbook info holdings, after",
            lambda: holdings(database, store, settings).output_bytes,
            expected,
            requests,
        )
        print(
            f"\n{'check':<32} {'runs':>4} {'requests':>9} {'ms (mean)':>10} {'wrong':>6} "
            f"{'errors':>6}"
        )
        for label, group in (
            (rows[0]["label"], [rows[0]]),
            (rows[1]["label"], [rows[1]]),
            ("after, later checks", later),
            (info["label"], [info]),
        ):
            print(
                f"{label:<32} {len(group):>4} "
                f"{statistics.fmean(r['requests'] for r in group):>9.0f} "
                f"{1000 * statistics.fmean(r['seconds'] for r in group):>10.1f} "
                f"{sum(r['wrong'] for r in group):>6} "
                f"{sum(r['error'] is not None for r in group):>6}"
            )
            for row in group:
                if row["error"]:
                    print(f"  error: {row['error']}")
        database.dispose()
    finally:
        if server is not None:
            server.stop()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{os.cpu_count()} cores, load average {load}")


if __name__ == "__main__":
    main()
