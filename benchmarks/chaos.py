"""Faults castbook survives: the fault-injection scenarios, run many times in a row.

Each run starts a fresh castbook (its own PostgreSQL database on one private server, its own
redis-server without persistence, `castbook serve` and `castbook worker` processes),
SIGKILLs a process at a chosen moment and counts what became of every accepted task
(tests/support/chaos.py describes the scenarios and how each count is made). Runs go round
the scenarios until ``--runs`` or ``--max-seconds``.

    PYTHONPATH=src:. python benchmarks/chaos.py --runs 200 --max-seconds 6000

``--backend`` is what the workers generate with: ``comfyui`` (the default) is a ComfyUI
server on 127.0.0.1 started once for the series and never killed
(tests/support/fake_comfyui_server.py, each sampler step paced ``--step-seconds``): no
process of a run imports torch, and none may (a run where one did is not clean).
``tiny-sd15`` is the tiny random-weight SD 1.5 through diffusers, whose every worker and
server imports torch and diffusers and loads the model (~8 s of CPU a process).

Prints a table (scenario x runs: kills, tasks accepted / succeeded / failed with a reason /
lost / duplicated, orphan blobs, messages the outbox sent again, runs that broke, and the
CPU seconds a run's processes used), the machine's core count and load average. Logs of a
run that was not clean are kept under ``--keep`` (default: a temporary folder, printed).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.chaos import Generator, Lab

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COLUMNS = ("runs", "kills", "accepted", "succeeded", "failed", "lost", "duplicated",
           "orphan blobs", "resent", "broken", "torch loaded")  # fmt: skip
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def main() -> int:
    from tests.support.chaos import SCENARIOS, Lab
    from tests.support.postgres import start_postgres

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs in all (round the scenarios)")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="stop starting runs")
    parser.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS), help="only these (repeatable)"
    )
    parser.add_argument("--keep", type=Path, help="folder for the logs of runs not clean")
    parser.add_argument(
        "--backend", choices=("comfyui", "tiny-sd15"), default="comfyui",
        help="what the workers generate with (default: comfyui, a server outside the runs)",
    )  # fmt: skip
    parser.add_argument(
        "--step-seconds", type=float, default=0.2, help="comfyui: seconds per sampler step"
    )
    parser.add_argument(
        "--parallel", type=int, default=1,
        help="runs at a time, each on its own cluster (a run mostly waits on leases and "
        "restarts); a run's own CPU is then read from /proc only",
    )  # fmt: skip
    args = parser.parse_args()
    names = args.scenario or list(SCENARIOS)
    parallel = max(args.parallel, 1)

    root = Path(tempfile.mkdtemp(prefix="castbook-chaos-"))
    keep = args.keep or root / "kept"
    keep.mkdir(parents=True, exist_ok=True)
    print(f"cores: {os.cpu_count()}, load average at start: {_load()}", flush=True)
    print(f"backend: {args.backend}; starting it and PostgreSQL ...", flush=True)
    services = contextlib.ExitStack()
    generator = services.enter_context(_generator(args.backend, args.step_seconds, root))
    postgres = start_postgres(root / "pg")
    services.callback(postgres.stop)
    subreaper = _become_subreaper()
    lab = Lab(root / "runs", generator, postgres)
    series = Series(lab, names, keep, sequential=parallel == 1)
    cpu_before, self_before = _children_cpu(), _self_cpu()
    started = time.monotonic()
    # SIGTERM or SIGINT (also where a background job ignores Ctrl+C): end the runs under way,
    # start no other, print the table.
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: stopping.append(number))
    run = 0
    try:
        with ThreadPoolExecutor(parallel, thread_name_prefix="run") as pool:
            under_way: set[Future[None]] = set()
            while True:
                while (
                    len(under_way) < parallel
                    and run < args.runs
                    and time.monotonic() - started < args.max_seconds
                    and not stopping
                ):
                    run += 1
                    under_way.add(pool.submit(series.run, run, names[(run - 1) % len(names)]))
                if not under_way:
                    break
                finished, under_way = wait(under_way, timeout=1, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # the harness's own bug, not a run's: let it show
    finally:
        services.close()
    elapsed = time.monotonic() - started
    children, own = _children_cpu() - cpu_before, _self_cpu() - self_before
    print()
    print(
        f"{run} runs in {elapsed:.0f} s ({args.backend}, {parallel} at a time); "
        f"cores: {os.cpu_count()}, load average: {_load()}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    orphans = "orphans included" if subreaper else "orphans of killed servers not counted"
    print(
        f"CPU: {children:.0f} s of the processes the runs started (reaped, {orphans}) + "
        f"{own:.0f} s of this harness (HTTP and database calls"
        f"{', the ComfyUI server' if args.backend == 'comfyui' else ''}) = "
        f"{(children + own) / max(run, 1):.1f} s a run"
    )
    print()
    print(series.table())
    print(f"\nlogs of runs not clean, or with a failed task: {keep}")
    shutil.rmtree(root / "runs", ignore_errors=True)
    return 0 if series.clean() else 1


class Series:
    """The runs' totals, a row a scenario; runs may end in any order (``--parallel``)."""

    def __init__(self, lab: Lab, names: list[str], keep: Path, *, sequential: bool) -> None:
        self.lab = lab
        self.keep = keep
        self.sequential = sequential
        self.totals = {name: dict.fromkeys(COLUMNS, 0) for name in names}  # in this order
        self.cpu: dict[str, float] = defaultdict(float)  # the processes' CPU, read from /proc
        self.lock = threading.Lock()

    @property
    def without_torch(self) -> bool:
        return self.lab.generator.name == "comfyui"

    def run(self, number: int, name: str) -> None:
        """Run scenario ``name`` once and count it; a run that broke is counted and kept."""
        from tests.support.chaos import run_scenario

        began = time.monotonic()
        cpu_before = _children_cpu() if self.sequential else 0.0
        try:
            outcome, logs = run_scenario(self.lab, name)
        except Exception as exc:  # a wait gave up: counted, kept
            with self.lock:
                self.totals[name]["runs"] += 1
                self.totals[name]["broken"] += 1
                (self.keep / f"run-{number}-broken.txt").write_text(traceback.format_exc())
                print(f"run {number:4d} {name}: BROKEN {type(exc).__name__}", flush=True)
            return
        spent = sum(outcome.cpu.values())
        reaped = f"; {_children_cpu() - cpu_before:.1f} s reaped" if self.sequential else ""
        # Without torch is what the cheap backend promises: a process that loaded it is a
        # regression (an eager import), counted and kept like a fault.
        clean = outcome.clean and not (self.without_torch and outcome.torch_processes)
        with self.lock:
            row = self.totals[name]
            row["runs"] += 1
            for column, value in (
                ("kills", outcome.kills), ("accepted", outcome.accepted),
                ("succeeded", outcome.succeeded), ("failed", outcome.failed),
                ("lost", outcome.lost), ("duplicated", outcome.duplicated),
                ("orphan blobs", outcome.orphan_blobs), ("resent", outcome.resent),
                ("torch loaded", outcome.torch_processes),
            ):  # fmt: skip
                row[column] += value
            self.cpu[name] += spent
            if not clean or outcome.failed:
                (self.keep / f"run-{number}.txt").write_text(f"{outcome}\n\n{logs}")
            print(
                f"run {number:4d} {name}: {'clean' if clean else 'NOT CLEAN'} in "
                f"{time.monotonic() - began:.0f}s, {spent:.1f} s CPU "
                f"[{_per_process(outcome.cpu)}{reaped}] "
                f"({outcome.accepted} accepted, {outcome.succeeded} succeeded, "
                f"{outcome.failed} failed, {outcome.lost} lost, {outcome.duplicated} duplicated)",
                flush=True,
            )

    def clean(self) -> bool:
        bad = ["lost", "duplicated", "orphan blobs"] + ["torch loaded"] * self.without_torch
        return not any(row[column] for row in self.totals.values() for column in bad)

    def table(self) -> str:
        """Markdown: a row a scenario and one for all, with the CPU seconds a run's castbook
        processes used (read from /proc as each was killed)."""
        everything = {c: sum(row[c] for row in self.totals.values()) for c in COLUMNS}
        lines = [
            "| scenario | " + " | ".join(COLUMNS) + " | CPU s/run |",
            "|---|" + "---:|" * (len(COLUMNS) + 1),
        ]
        rows = [(n, r, self.cpu[n]) for n, r in self.totals.items()]
        rows.append(("**all**", everything, sum(self.cpu.values())))
        for name, row, seconds in rows:
            cells = " | ".join(str(row[c]) for c in COLUMNS)
            lines.append(f"| {name} | {cells} | {seconds / max(row['runs'], 1):.1f} |")
        return "\n".join(lines)


@contextlib.contextmanager
def _generator(backend: str, step_seconds: float, root: Path) -> Iterator[Generator]:
    """What the series' workers generate with, for as long as the series lasts."""
    from tests.support.chaos import Generator

    if backend == "tiny-sd15":
        from tests.support.tiny_diffusers import make_tiny_sd15

        yield Generator.tiny_sd15(make_tiny_sd15(root / "models" / "sd15"))
        return
    from tests.support.fake_comfyui_server import FakeComfyUI

    with FakeComfyUI(step_seconds=step_seconds) as server:
        yield Generator.comfyui(server.url)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _become_subreaper() -> bool:
    """Adopt the processes a run orphans (a killed server's worker process), so that their
    CPU is counted when they are reaped (``_children_cpu``), and they do not linger."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    return False


def _children_cpu() -> float:
    """User + system CPU seconds of every reaped descendant so far (orphans reaped first).

    Every process a run starts has been waited for when it ends (``Cluster.close``); the
    orphans adopted as subreaper are reaped here. Called only while no run is under way
    (reaping any child could take one a run still waits for), so with ``--parallel`` only
    before and after the series."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _per_process(cpu: dict[str, float]) -> str:
    """``serve-1 2.1, worker-0 1.8``: each process's CPU seconds, read as it was killed."""
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items())


if __name__ == "__main__":
    raise SystemExit(main())
