"""Put and get throughput and latency of the blob stores: the local folder, an S3 bucket read
straight from the server, and the same bucket read through a worker's cache.

    .venv/bin/python benchmarks/blob_store.py [--count 1000] [--size 300000]
        [--url s3://bucket/prefix --endpoint URL]   # a real S3/MinIO instead of moto

Each store takes the same ``--count`` images of ``--size`` random bytes (reference-sized PNGs
do not compress either), one operation at a time, in this process: put every image, then
read every image twice (``get 1``: a cold worker; ``get 2``: a warm one). Without ``--url``
the bucket lives in a moto S3 server started on 127.0.0.1 (a Python process speaking the
S3 wire protocol: its figures are moto's speed on this machine, not AWS's).

Prints, per store and phase: operations, errors (exceptions and wrong bytes: every read is
compared with what was written), MB/s, operations/s, p50 and p99 latency in ms; then the
goal — a warm worker's reads from its cache within 1.2× of the local folder's (mean time
per read) — and the core count and load average.
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

from castbook.blobs import Blobs, BlobStore  # noqa: E402
from castbook.blobs.cache import BlobCache  # noqa: E402


def timed(items: list[bytes], ids: list[str], op: Callable[[int], bytes | None]) -> dict:
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    for n in range(len(items)):
        begun = time.perf_counter()
        try:
            got = op(n)
            if got is not None and got != items[n]:
                errors += 1
        except Exception as exc:  # counted, and the run goes on
            errors += 1
            if errors <= 3:
                print(f"  error: {type(exc).__name__}: {exc}", file=sys.stderr)
        latencies.append(time.perf_counter() - begun)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "ops": len(items),
        "errors": errors,
        "seconds": elapsed,
        "mb_s": sum(map(len, items)) / 1e6 / elapsed,
        "ops_s": len(items) / elapsed,
        "mean_ms": 1000 * statistics.fmean(latencies),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def run_store(name: str, store: Blobs, items: list[bytes], ids: list[str]) -> dict[str, dict]:
    results = {}

    def put(n: int) -> None:
        blob_id, _ = store.put(items[n])
        if blob_id != ids[n]:
            raise ValueError("put returned the wrong id")

    results["put"] = timed(items, ids, put)
    cache = getattr(store, "cache", None)
    if cache is not None:
        for blob_id in ids:  # a worker that did not write them: nothing cached yet
            cache.discard(blob_id)
    results["get 1"] = timed(items, ids, lambda n: store.get(ids[n]))
    results["get 2"] = timed(items, ids, lambda n: store.get(ids[n]))
    for phase, row in results.items():
        print(
            f"{name:<22} {phase:<6} {row['ops']:>5} {row['errors']:>6} {row['mb_s']:>8.1f} "
            f"{row['ops_s']:>8.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}",
            flush=True,
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=300_000)
    parser.add_argument("--url", help="an existing bucket, s3://bucket/prefix (default: moto)")
    parser.add_argument("--endpoint", help="its endpoint URL (MinIO, R2 ...)")
    parser.add_argument("--rounds", type=int, default=5, help="folder/cache comparison rounds")
    args = parser.parse_args()

    from castbook.blobs.s3 import S3BlobStore

    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()}")
    print(f"{args.count} images of {args.size} random bytes each, one operation at a time")
    work = Path(tempfile.mkdtemp(prefix="castbook-blob-bench-"))
    server = None
    if args.url:
        url, endpoint = args.url, args.endpoint
    else:
        from tests.support.s3_server import start_s3

        server = start_s3(work)
        url, endpoint = server.new_bucket("bench"), server.endpoint
        print(f"S3 server: moto on {endpoint}")
    items = [os.urandom(args.size) for _ in range(args.count)]
    import hashlib

    ids = [hashlib.sha256(item).hexdigest() for item in items]
    header = f"{'store':<22} {'phase':<6} {'ops':>5} {'errors':>6} {'MB/s':>8} {'ops/s':>8} "
    print(header + f"{'p50 ms':>8} {'p99 ms':>8}")
    try:
        run_store("folder", BlobStore(work / "blobs"), items, ids)
        bare = S3BlobStore(url.rstrip("/") + "/bare", endpoint=endpoint)
        run_store("s3, no cache", bare, items, ids)
        cache = BlobCache(work / "cache", max_bytes=2 * args.count * args.size)
        cached = S3BlobStore(url.rstrip("/") + "/cached", endpoint=endpoint, cache=cache)
        run_store("s3 + worker cache", cached, items, ids)
    finally:
        if server is not None:
            server.stop()
    # The goal, measured like with like: both local reads, alternating round by round so
    # the neighbours' load falls on both alike. The S3 server is stopped by now: a read
    # that still went to it would fail and be counted.
    folder_store = BlobStore(work / "blobs")
    side: dict[str, list[float]] = {"folder": [], "cache": []}
    errors = 0
    for _ in range(args.rounds):
        for name, store in (("folder", folder_store), ("cache", cached)):
            row = timed(items, ids, lambda n, store=store: store.get(ids[n]))
            side[name].append(row["mean_ms"])
            side[name + " p50"] = [*side.get(name + " p50", []), row["p50_ms"]]
            errors += row["errors"]
    for measure in ("", " p50"):
        ours = statistics.median(side["cache" + measure])
        theirs = statistics.median(side["folder" + measure])
        ratio = ours / theirs
        verdict = "met" if ratio <= 1.2 else "NOT met"
        what = "p50" if measure else "mean"
        print(
            f"warm cache read vs folder read ({what}, median of {args.rounds} alternating "
            f"rounds): {ours:.3f} ms vs {theirs:.3f} ms = {ratio:.2f}x (goal <= 1.2x: {verdict})"
        )
    print(f"errors in the comparison rounds: {errors}")
    print(f"cores: {os.cpu_count()}, load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
