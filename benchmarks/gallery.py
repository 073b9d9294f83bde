"""The gallery with thousands of results: how fast ``GET /v1/results`` pages, filters and
zips them, against the same requests over a small gallery measured in the same run (issue
18: "the gallery stays responsive with 5 000 results").

    .venv/bin/python benchmarks/gallery.py [--counts 50 5000] [--repeats 20]

For each count, a real ``castbook serve`` on a fresh home (SQLite) and its own key; the
results are seeded as rows of finished workflow tasks (tests/support/gallery.py: four
results a task, Alice's and Bob's in turn, scores spread over 0–100, real PNG blobs), then,
over HTTP on 127.0.0.1:

- **first read**: the first ``GET /v1/results`` after the tasks ended, which indexes them;
- **first page**: ``GET /v1/results?limit=60`` again and again (median, p95);
- **every page**: the whole gallery walked by cursor, newest to oldest (median per page,
  and the last page's time: a deep page must cost what the first does);
- **filtered**: ``character=Bob&min_score=50`` (median);
- **zip**: ``GET /v1/results.zip`` of everything, streamed: seconds, MB and MB/s.

Errors count non-200 answers and walks that did not see every result exactly once; any is a
failure (exit status 1). The ratios compare the large gallery with the first count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


def measure(count: int, repeats: int) -> dict[str, Any]:
    import httpx
    from tests.support.gallery import seed_results
    from tests.support.web import castbook_server

    from castbook.blobs import open_blob_store
    from castbook.db import Database
    from castbook.settings import DEFAULT_OWNER, Settings

    errors = 0
    with tempfile.TemporaryDirectory(prefix="castbook-gallery-bench-") as folder:
        home = Path(folder) / "home"
        home.mkdir()
        with castbook_server(home) as (server, key):
            settings = Settings.for_home(home)
            database = Database(settings.database_url)
            started = time.perf_counter()
            seed_results(database, open_blob_store(settings), DEFAULT_OWNER, count)
            seeding = time.perf_counter() - started
            database.dispose()
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=server.base, headers=headers, timeout=300) as http:

                def timed(path: str, **params: Any) -> tuple[float, Any]:
                    nonlocal errors
                    begun = time.perf_counter()
                    answer = http.get(path, params=params)
                    took = time.perf_counter() - begun
                    if answer.status_code != 200:
                        errors += 1
                        return took, None
                    return took, answer

                first_read, answer = timed("/v1/results", limit=60)
                if answer is None or answer.json()["total"] != count:
                    errors += 1
                firsts = [timed("/v1/results", limit=60)[0] for _ in range(repeats)]

                pages: list[float] = []
                seen: list[tuple[str, int]] = []
                cursor = None
                while True:
                    params: dict[str, Any] = {"limit": 60}
                    if cursor:
                        params["cursor"] = cursor
                    took, answer = timed("/v1/results", **params)
                    pages.append(took)
                    if answer is None:
                        break
                    body = answer.json()
                    seen += [(item["task"], item["seed"]) for item in body["items"]]
                    cursor = body["next_cursor"]
                    if cursor is None:
                        break
                if len(seen) != count or len(set(seen)) != count:
                    errors += 1

                filtered = [
                    timed("/v1/results", limit=60, character="Bob", min_score=50)[0]
                    for _ in range(repeats)
                ]

                begun = time.perf_counter()
                size = 0
                with http.stream("GET", "/v1/results.zip") as streamed:
                    if streamed.status_code != 200:
                        errors += 1
                    for chunk in streamed.iter_bytes():
                        size += len(chunk)
                zipping = time.perf_counter() - begun
    return {
        "count": count,
        "seeding": seeding,
        "first_read": first_read,
        "first_page": statistics.median(firsts),
        "first_page_p95": _p95(firsts),
        "page": statistics.median(pages),
        "last_page": pages[-1],
        "pages": len(pages),
        "filtered": statistics.median(filtered),
        "zip_seconds": zipping,
        "zip_mb": size / 1e6,
        "errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[50, 5000])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}")
    rows = [measure(count, args.repeats) for count in args.counts]
    print(
        "| results | first read (indexes) | first page (p95) | page, walking all | last page "
        "| filtered page | zip | errors |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['count']:,} | {row['first_read']:.2f} s | {_ms(row['first_page'])} "
            f"({_ms(row['first_page_p95'])}) | {_ms(row['page'])} ({row['pages']} pages) "
            f"| {_ms(row['last_page'])} | {_ms(row['filtered'])} "
            f"| {row['zip_seconds']:.2f} s, {row['zip_mb']:.1f} MB "
            f"({row['zip_mb'] / max(row['zip_seconds'], 1e-9):.1f} MB/s) | {row['errors']} |"
        )
    base = rows[0]
    for row in rows[1:]:
        print(
            f"{row['count']:,} vs {base['count']:,} results: first page ×"
            f"{row['first_page'] / base['first_page']:.2f}, filtered page ×"
            f"{row['filtered'] / base['filtered']:.2f}, a page while walking ×"
            f"{row['page'] / base['page']:.2f}"
        )
    print(f"load average after: {os.getloadavg()}")
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
