"""What a poll costs: ``GET /v1/tasks/{id}`` with and without the key cache and the index.

    .venv/bin/python benchmarks/auth_poll.py [--requests 1000] [--outputs 20000]

Builds the app in process (a temporary CASTBOOK_HOME, SQLite) with ``--outputs`` finished
jobs' output rows, then times ``--requests`` sequential polls of one task through the whole
ASGI stack (KeyGate, QuotaGate, the route) in four set-ups: key cache on/off (off: every
request verifies its key in the database on a worker thread, as before issue 15) ×
``ix_job_outputs_job_id`` present/dropped (dropped: loading the task's outputs scans the
table, as before migration 0007). Prints p50/p95/p99 per set-up in ms. In-process, so no
network or uvicorn cost is included: it isolates what castbook itself spends.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from castbook.api import ApiConfig, create_app  # noqa: E402
from castbook.db import JobOutputRow  # noqa: E402
from castbook.jobs import JobOutput  # noqa: E402
from castbook.settings import Settings  # noqa: E402


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:  # every request failed
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--outputs", type=int, default=20000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="castbook-auth-poll-"))
    settings = Settings.for_home(home)
    app = create_app(settings, config=ApiConfig())
    with TestClient(app) as client:
        services = app.state.services
        _, plain = services.keys.create("poller", "ann", rate_limit=0)
        headers = {"Authorization": f"Bearer {plain}"}
        other = services.jobs.create(kind="generation", input={}, owner="someone")
        with services.database.session() as session:
            session.execute(
                insert(JobOutputRow),
                [
                    {
                        "job_id": other.id,
                        "position": n,
                        "sha256": f"{n:064x}",
                        "kind": "image",
                        "media_type": "image/png",
                        "width": 1,
                        "height": 1,
                    }
                    for n in range(args.outputs)
                ],
            )
            session.commit()
        mine = services.jobs.create(kind="generation", input={}, owner="ann")
        services.jobs.start(mine.id, "w")
        blob, _ = services.blobs.put(b"a result")
        output = JobOutput(sha256=blob, kind="image", media_type="image/png", width=1, height=1)
        services.jobs.succeed(mine.id, [output], {})
        url = f"/v1/tasks/{mine.id}"
        print(
            f"{args.requests} sequential GET /v1/tasks/{{id}} in process, "
            f"{args.outputs} other output rows, SQLite"
        )
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()}")
        print(
            f"{'set-up':<34} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'errors':>6}"
        )
        for index in (True, False):
            with services.database.engine.begin() as connection:
                connection.execute(text("DROP INDEX IF EXISTS ix_job_outputs_job_id"))
                if index:
                    connection.execute(
                        text("CREATE INDEX ix_job_outputs_job_id ON job_outputs (job_id, position)")
                    )
            for cache in (0.5, 0.0):
                services.keys.cache_seconds = cache
                for _ in range(20):  # warm
                    client.get(url, headers=headers)
                took = []
                errors = 0  # non-200 answers: counted, and their time not kept
                for _ in range(args.requests):
                    started = time.perf_counter()
                    answer = client.get(url, headers=headers)
                    if answer.status_code != 200:
                        errors += 1
                        continue
                    took.append((time.perf_counter() - started) * 1000)
                mean = statistics.fmean(took) if took else float("nan")
                label = f"cache {'on ' if cache else 'off'}, index {'on' if index else 'dropped'}"
                print(
                    f"{label:<34} {percentile(took, 0.5):8.2f} {percentile(took, 0.95):8.2f} "
                    f"{percentile(took, 0.99):8.2f} {mean:8.2f} {errors:>6}"
                )


if __name__ == "__main__":
    main()
