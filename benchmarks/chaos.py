"""Faults castbook survives: the fault-injection scenarios, run many times in a row.

Each run starts a fresh castbook (its own PostgreSQL database on one private server, its own
redis-server without persistence, `castbook serve` and `castbook worker` processes on the
tiny random-weight SD 1.5 the tests use), SIGKILLs a process at a chosen moment and counts
what became of every accepted task (tests/support/chaos.py describes the scenarios and how
each count is made). Runs go round the scenarios until ``--runs`` or ``--max-seconds``.

    PYTHONPATH=src python benchmarks/chaos.py --runs 200 --max-seconds 3600

Prints a table (scenario x runs: kills, tasks accepted / succeeded / failed with a reason /
lost / duplicated, orphan blobs, messages the outbox sent again, runs that broke), the
machine's core count and load average. Logs of a run that was not clean are kept under
``--keep`` (default: a temporary folder, printed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COLUMNS = ("runs", "kills", "accepted", "succeeded", "failed", "lost", "duplicated",
           "orphan blobs", "resent", "broken")  # fmt: skip


def main() -> int:
    from tests.support.chaos import SCENARIOS, Lab, run_scenario
    from tests.support.postgres import start_postgres
    from tests.support.tiny_diffusers import make_tiny_sd15

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs in all (round the scenarios)")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="stop starting runs")
    parser.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS), help="only these (repeatable)"
    )
    parser.add_argument("--keep", type=Path, help="folder for the logs of runs not clean")
    args = parser.parse_args()
    names = args.scenario or list(SCENARIOS)

    root = Path(tempfile.mkdtemp(prefix="castbook-chaos-"))
    keep = args.keep or root / "kept"
    keep.mkdir(parents=True, exist_ok=True)
    print(f"cores: {os.cpu_count()}, load average at start: {_load()}", flush=True)
    print("building the tiny model and starting PostgreSQL ...", flush=True)
    model = make_tiny_sd15(root / "models" / "sd15")
    postgres = start_postgres(root / "pg")
    lab = Lab(root / "runs", model, postgres)
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
    started = time.monotonic()
    run = 0
    # SIGTERM or SIGINT (also where a background job ignores Ctrl+C): end the run under way,
    # start no other, print the table.
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: stopping.append(number))
    try:
        while run < args.runs and time.monotonic() - started < args.max_seconds and not stopping:
            name = names[run % len(names)]
            run += 1
            row = totals[name]
            row["runs"] += 1
            began = time.monotonic()
            try:
                outcome, logs = run_scenario(lab, name)
            except Exception as exc:  # a run that broke (a wait gave up): counted, kept
                row["broken"] += 1
                (keep / f"run-{run}-broken.txt").write_text(traceback.format_exc())
                print(f"run {run:4d} {name}: BROKEN {type(exc).__name__}", flush=True)
                continue
            for column, value in (
                ("kills", outcome.kills), ("accepted", outcome.accepted),
                ("succeeded", outcome.succeeded), ("failed", outcome.failed),
                ("lost", outcome.lost), ("duplicated", outcome.duplicated),
                ("orphan blobs", outcome.orphan_blobs), ("resent", outcome.resent),
            ):  # fmt: skip
                row[column] += value
            verdict = "clean" if outcome.clean else "NOT CLEAN"
            if not outcome.clean or outcome.failed:
                (keep / f"run-{run}.txt").write_text(f"{outcome}\n\n{logs}")
            print(
                f"run {run:4d} {name}: {verdict} in {time.monotonic() - began:.0f}s "
                f"({outcome.accepted} accepted, {outcome.succeeded} succeeded, "
                f"{outcome.failed} failed, {outcome.lost} lost, {outcome.duplicated} duplicated)",
                flush=True,
            )
    except KeyboardInterrupt:
        print("interrupted: the table covers the runs that ended", flush=True)
    finally:
        postgres.stop()
    elapsed = time.monotonic() - started
    print()
    print(f"{run} runs in {elapsed:.0f} s; cores: {os.cpu_count()}, load average: {_load()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print()
    print(_table(totals))
    print(f"\nlogs of runs not clean, or with a failed task: {keep}")
    shutil.rmtree(root / "runs", ignore_errors=True)
    bad = any(row["lost"] or row["duplicated"] or row["orphan blobs"] for row in totals.values())
    return 1 if bad else 0


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _table(totals: dict[str, dict[str, int]]) -> str:
    everything = {column: sum(row[column] for row in totals.values()) for column in COLUMNS}
    lines = [
        "| scenario | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for name, row in [*totals.items(), ("**all**", everything)]:
        lines.append(f"| {name} | " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
