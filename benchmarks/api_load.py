"""Load on a real `castbook serve`: many clients submitting and polling generation tasks.

    .venv/bin/python benchmarks/api_load.py [--clients 50] [--seconds 30] [--workers 2]

Starts `castbook serve` on a free 127.0.0.1 port with a temporary CASTBOOK_HOME whose preset
points at the tiny random-weight SD 1.5 model the tests use, creates an API key, then runs
``--clients`` concurrent clients for ``--seconds``: each submits a generation, polls its task
until it finishes, and repeats. Afterwards it waits for the queue to drain and prints
throughput, p50/p99 submit latency, and the count of lost or stuck tasks (must be 0).
Only loopback is ever contacted; the loops are bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

MAX_REQUESTS_PER_CLIENT = 200


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2, help="job threads in the server")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="castbook-load-") as tmp:
        home = Path(tmp) / "home"
        write_home(home, Path(tmp))
        env = {**os.environ, "CASTBOOK_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        env.pop("CASTBOOK_DATABASE_URL", None)
        key = castbook("keys", "create", "--name", "load", "--plain", env=env).strip()
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "castbook", "serve", "--port", str(port),
             "--workers", str(options.workers)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(base)
            run_load(base, key, options)
        finally:
            server.terminate()
            server.wait(timeout=30)


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


def run_load(base: str, key: str, options: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    submit_latencies: list[float] = []
    submitted: list[str] = []
    finished: dict[str, str] = {}
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + options.seconds

    def client(index: int) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            for n in range(MAX_REQUESTS_PER_CLIENT):
                if time.monotonic() >= stop_at:
                    return
                body = {"preset": "tiny", "prompt": f"client {index} request {n}", "seed": n}
                started = time.perf_counter()
                response = http.post("/v1/generations", json=body)
                latency = time.perf_counter() - started
                if response.status_code != 202:
                    with lock:
                        errors.append(f"submit {response.status_code}: {response.text[:200]}")
                    continue
                task_id = response.json()["id"]
                with lock:
                    submit_latencies.append(latency)
                    submitted.append(task_id)
                while time.monotonic() < stop_at + 120:
                    status = http.get(f"/v1/tasks/{task_id}").json()["status"]
                    if status in ("succeeded", "failed", "cancelled"):
                        with lock:
                            finished[task_id] = status
                        break
                    time.sleep(0.2)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(options.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started

    # Every submitted task must reach an end state: none lost, none stuck.
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        states = {task: http.get(f"/v1/tasks/{task}").json()["status"] for task in submitted}
    lost = [t for t in submitted if t not in states]
    stuck = [t for t, s in states.items() if s not in ("succeeded", "failed", "cancelled")]
    succeeded = sum(1 for s in states.values() if s == "succeeded")
    latencies = sorted(submit_latencies)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0
    print(f"{options.clients} clients for {options.seconds:.0f} s, server job threads: "
          f"{options.workers}, tiny SD 1.5 at 256 px, 2 steps")  # fmt: skip
    print(f"  tasks submitted: {len(submitted)}, succeeded: {succeeded}, errors: {len(errors)}")
    print(f"  throughput: {succeeded / elapsed:.1f} tasks/s completed over {elapsed:.1f} s")
    if latencies:
        print(f"  submit latency p50 {1000 * statistics.median(latencies):.1f} ms, "
              f"p99 {1000 * p99:.1f} ms")  # fmt: skip
    print(f"  lost: {len(lost)}, stuck: {len(stuck)} (must be 0)")
    for error in errors[:5]:
        print(f"  error: {error}")


if __name__ == "__main__":
    main()
