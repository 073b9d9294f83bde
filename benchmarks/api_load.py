"""Load on a real `castbook serve`: many clients submitting and polling generation tasks.

    .venv/bin/python benchmarks/api_load.py [--clients 50] [--seconds 60] [--warmup 10]
                                            [--poll 0.2] [--submit-every 0] [--workers 2]
                                            [--client-threads] [--in-step] [--postgres]

Starts `castbook serve` on a free 127.0.0.1 port with a temporary CASTBOOK_HOME whose preset
points at the tiny random-weight SD 1.5 model the tests use, creates an API key, then runs
``--clients`` concurrent clients (coroutines on one event loop, as load generators such as
wrk or k6 run them; ``--client-threads``: a thread per client) for ``--warmup`` +
``--seconds``: each submits a generation,
polls its task every ``--poll`` seconds until it ends, and repeats (``--submit-every S``: a
new task every S seconds whatever the last one does). Each client starts at its own random
point of the first period, as independent clients do (``--in-step``: all together, so that
every period begins with a burst of ``--clients`` requests). Submit and poll latencies
are kept separately, only after the warm-up (steady state), and printed as p50/p95/p99,
both as the clients saw them and as the server's ``Server-Timing`` header reports them (the
server's share: the rest is the clients' own scheduling on the same cores, and the wire).
Afterwards every accepted task id is asked for until it ended or a deadline passed: one the
server does not report as ended (or no longer knows) is *lost*; so is one cancelled with the
backlog (``--submit-every``) before it started although a task accepted later had started
(the executor takes the oldest first: such a task was passed over, not waiting its turn).
Non-2xx answers and client exceptions are *errors*. Prints the core count and load.
Only loopback is ever contacted; the loops are bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

MAX_REQUESTS_PER_CLIENT = 5000  # bounds a client's loop: 5 requests/s for 1000 s


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_home(home: Path, models: Path) -> None:
    from tests.support.tiny_diffusers import make_tiny_sd15

    model = make_tiny_sd15(models / "sd15")
    home.mkdir(parents=True, exist_ok=True)
    (home / "presets.toml").write_text(
        f'[presets.tiny]\nbackend = "diffusers"\nmodel = "{model}"\n'
        "defaults = { width = 256, height = 256, steps = 2 }\n"
        '[presets.tiny.options]\nfamily = "sd15"\n'
    )


def castbook(*args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "castbook", *args], env=env, check=True, capture_output=True,
        text=True,
    ).stdout  # fmt: skip


def unlimited_key(name: str, env: dict[str, str]) -> str:
    """An API key without a rate or queued-task limit: every client of a benchmark shares it."""
    limits = ("--rate", "0", "--max-queued", "0")
    return castbook("keys", "create", "--name", name, *limits, "--plain", env=env).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds not measured")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between requests")
    parser.add_argument(
        "--submit-every",
        type=float,
        default=0.0,
        help="seconds between a client's submits (0: submit when its last task ended); the "
        "queue then outgrows the model, and what is left is cancelled at the end",
    )
    parser.add_argument("--workers", type=int, default=2, help="job threads in the server")
    parser.add_argument(
        "--client-threads",
        action="store_true",
        help="one thread per client (the benchmark's first form) instead of one event loop",
    )
    parser.add_argument(
        "--in-step",
        action="store_true",
        help="all clients start together and stay in phase (a burst of --clients requests "
        "every --poll seconds: the benchmark's form until 2026-12-07) instead of each client "
        "starting at its own random point of the first period, as independent clients do",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="keep the server's records in a private PostgreSQL server (the test suite's) "
        "instead of SQLite in the temporary home",
    )
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="castbook-load-") as tmp:
        home = Path(tmp) / "home"
        write_home(home, Path(tmp))
        env = {**os.environ, "CASTBOOK_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        env.pop("CASTBOOK_DATABASE_URL", None)
        if options.postgres:
            from tests.support.postgres import start_postgres

            env["CASTBOOK_DATABASE_URL"] = start_postgres(Path(tmp) / "pg").url
        key = unlimited_key("load", env)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "castbook", "serve", "--port", str(port),
             "--workers", str(options.workers)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(base)
            run_load(base, key, options, server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float:
    """:func:`cpu_seconds`, 0 where ``/proc`` cannot be read."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def wait_until_up(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not come up")


ENDED = ("succeeded", "failed", "cancelled")
DRAIN_S = 300  # after the clients stop: how long accepted tasks may take to end


def percentiles(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    ordered = sorted(samples)

    def at(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return f"p50 {at(0.50):.1f} ms, p95 {at(0.95):.1f} ms, p99 {at(0.99):.1f} ms (n={len(ordered)})"


def passed_over_tasks(tasks: dict[str, dict[str, Any]], margin: float = 1.0) -> list[str]:
    """Tasks cancelled before they started although a task created more than ``margin``
    seconds after them had started more than ``margin`` seconds before their cancel (the
    margin leaves out submits racing each other and the cancel pass itself)."""
    from datetime import datetime

    def at(text: str | None) -> float | None:
        return datetime.fromisoformat(text).timestamp() if text else None

    rows = sorted(
        ((at(task["created_at"]), at(task["started_at"]), task) for task in tasks.values()),
        key=lambda row: row[0] or 0.0,
    )
    # For each position: the earliest start of a task created later (a suffix minimum).
    created = [row[0] for row in rows]
    earliest_later: list[float] = [float("inf")] * (len(rows) + 1)
    for index in range(len(rows) - 1, -1, -1):
        start = rows[index][1]
        earliest_later[index] = min(earliest_later[index + 1], start or float("inf"))
    found = []
    for created_at, started_at, task in rows:
        if task["status"] != "cancelled" or started_at is not None or not task["finished_at"]:
            continue
        later = bisect.bisect_right(created, created_at + margin)
        if earliest_later[later] < at(task["finished_at"]) - margin:
            found.append(task["id"])
    return found


def run_load(base: str, key: str, options: argparse.Namespace, server_pid: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    submit_latencies: list[float] = []  # steady state only: after the warm-up
    poll_latencies: list[float] = []
    submit_server: list[float] = []  # the same requests, as the server timed them
    poll_server: list[float] = []
    accepted: list[str] = []  # every task id the server answered 202 for
    errors: list[str] = []  # non-2xx answers and client-side exceptions alike
    lock = threading.Lock()
    begin = time.monotonic()
    steady_from = begin + options.warmup
    stop_at = begin + options.warmup + options.seconds

    async def timed(
        http: httpx.AsyncClient, method: str, url: str, **kwargs: Any
    ) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = await http.request(method, url, **kwargs)
        return response, time.perf_counter() - started

    def record(
        series: list[float], server: list[float], response: httpx.Response, latency: float
    ) -> None:
        timing = response.headers.get("server-timing", "")
        with lock:
            if time.monotonic() >= steady_from:
                series.append(latency)
                if ";dur=" in timing:
                    server.append(float(timing.partition(";dur=")[2]) / 1000)

    async def client(index: int) -> None:
        # One request every --poll seconds: a submit when one is due (--submit-every, or
        # when this client has nothing pending), otherwise a poll of its oldest pending task.
        pending: list[str] = []
        if not options.in_step:
            # Independent clients are not in phase: each starts at its own point of the
            # first period (seeded, so runs are alike); --in-step keeps the old bursts.
            await asyncio.sleep(random.Random(index).uniform(0.0, options.poll))
        next_submit = time.monotonic()
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
            for n in range(MAX_REQUESTS_PER_CLIENT):
                now = time.monotonic()
                if now >= stop_at:
                    return
                due = not pending if options.submit_every <= 0 else now >= next_submit
                try:
                    if due:
                        next_submit = now + options.submit_every
                        body = {"preset": "tiny", "prompt": f"client {index} #{n}", "seed": n}
                        response, latency = await timed(http, "POST", "/v1/generations", json=body)
                        if response.status_code != 202:
                            problem = f"submit {response.status_code}: {response.text[:200]}"
                            with lock:
                                errors.append(problem)
                        else:
                            pending.append(response.json()["id"])
                            with lock:
                                accepted.append(pending[-1])
                            record(submit_latencies, submit_server, response, latency)
                    else:
                        response, latency = await timed(http, "GET", f"/v1/tasks/{pending[0]}")
                        record(poll_latencies, poll_server, response, latency)
                        if response.status_code != 200:
                            with lock:
                                errors.append(f"poll {response.status_code}: {response.text[:200]}")
                            pending.pop(0)
                        elif response.json()["status"] in ENDED:
                            pending.pop(0)
                except Exception as exc:  # a client that failed is an error, never silence
                    with lock:
                        errors.append(f"client {index}: {type(exc).__name__}: {exc}")
                await asyncio.sleep(max(0.0, options.poll - (time.monotonic() - now)))

    async def all_clients(indexes: range) -> None:
        await asyncio.gather(*(client(i) for i in indexes))

    started = time.perf_counter()
    # CPU of the two sides over the load (not the drain): this process (the clients) and the
    # HTTP process (not its job worker), to see which side a latency tail can come from.
    clients_cpu, server_cpu = time.process_time(), _process_cpu(server_pid)
    if options.client_threads:
        # The old way: a thread (with its own event loop) per client, all in this process.
        # The threads take turns at the interpreter lock, which adds its own waits.
        threads = [
            threading.Thread(target=asyncio.run, args=(all_clients(range(i, i + 1)),))
            for i in range(options.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        asyncio.run(all_clients(range(options.clients)))
    elapsed = time.perf_counter() - started
    clients_cpu = time.process_time() - clients_cpu
    server_cpu = _process_cpu(server_pid) - server_cpu
    requests = len(submit_latencies) + len(poll_latencies)  # steady state only: a lower bound

    # Lost = accepted ids the server does not report as ended by the deadline, asked one by
    # one (a 404, i.e. a task the server forgot, counts as lost too). With --submit-every the
    # queue outgrows the model; what is still queued is cancelled first (cancelled = ended).
    states: dict[str, str] = {}
    tasks: dict[str, dict[str, Any]] = {}  # each accepted task as the server last showed it
    deadline = time.monotonic() + DRAIN_S
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        if options.submit_every > 0:
            for task_id in accepted:
                http.post(f"/v1/tasks/{task_id}/cancel")
        pending = list(accepted)
        while pending and time.monotonic() < deadline:
            still = []
            for task_id in pending:
                response = http.get(f"/v1/tasks/{task_id}")
                state = response.json().get("status") if response.status_code == 200 else None
                states[task_id] = state or f"HTTP {response.status_code}"
                if state is not None:
                    tasks[task_id] = response.json()
                if state not in ENDED:
                    still.append(task_id)
            pending = still
            if pending:
                time.sleep(1)
    lost = [t for t in accepted if states.get(t) not in ENDED]
    # Cancelling the backlog ends every queued task, so "ended" alone would also pass a task
    # the executor never saw (stuck queued). The local executor takes the oldest queued task
    # first, so such a task shows as one still queued when it was cancelled although a task
    # accepted later had started before that: those are lost too.
    passed_over = passed_over_tasks(tasks)
    for task_id in passed_over:
        states[task_id] = "cancelled unstarted, passed over by a later task"
    lost += passed_over
    duplicated = len(accepted) - len(set(accepted))
    succeeded = sum(1 for t in set(accepted) if states.get(t) == "succeeded")
    failed = sum(1 for t in set(accepted) if states.get(t) == "failed")
    cancelled = sum(1 for t in set(accepted) if states.get(t) == "cancelled")
    cadence = f"every {options.submit_every} s" if options.submit_every > 0 else "when idle"
    print(f"{os.cpu_count()} cores, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{options.clients} clients, {options.warmup:.0f} s warm-up + {options.seconds:.0f} s "
          f"measured, one request every {options.poll} s each, submitting {cadence}; "
          f"server job threads: {options.workers}; "
          f"clients as {'threads' if options.client_threads else 'coroutines of one loop'}"
          f"{', in step (bursts)' if options.in_step else ', each at its own phase'}; "
          f"records in {'PostgreSQL' if options.postgres else 'SQLite'}; "
          "tiny SD 1.5 at 256 px, 2 steps")  # fmt: skip
    print(
        f"  tasks accepted: {len(accepted)}, succeeded: {succeeded}, failed: {failed}, "
        f"cancelled: {cancelled}, "
        f"lost: {len(lost)}, duplicated ids: {duplicated}, errors: {len(errors)}"
    )
    print(f"  throughput: {succeeded / elapsed:.1f} tasks/s completed over {elapsed:.1f} s")
    print(
        f"  CPU over the load: clients {clients_cpu:.1f} s ({clients_cpu / elapsed:.0%} of a "
        f"core), HTTP process {server_cpu:.1f} s ({server_cpu / elapsed:.0%} of a core); "
        f"{requests} steady-state requests"
    )
    print(f"  submit latency (steady state): {percentiles(submit_latencies)}")
    print(f"    as the server timed them:    {percentiles(submit_server)}")
    print(f"  poll latency (steady state):   {percentiles(poll_latencies)}")
    print(f"    as the server timed them:    {percentiles(poll_server)}")
    if len(submit_latencies) < 1000 or len(poll_latencies) < 1000:
        print("  note: fewer than 1000 samples in a series: its p99 is rough (run longer)")
    for task_id in lost[:5]:
        print(f"  lost: {task_id} ({states.get(task_id)})")
    for error in errors[:5]:
        print(f"  error: {error}")


if __name__ == "__main__":
    main()
