"""What one request costs the HTTP process of a real `castbook serve`, in CPU time.

    .venv/bin/python benchmarks/api_cost.py [--requests 2000] [--clients 4]

Wall-clock latency on a shared 2-core machine mostly measures the neighbours; the server
process's own CPU time per request (user + system, read from /proc before and after a burst
of requests) does not, and it bounds the request rate one server process can sustain. Jobs
run in the server's worker process (a separate pid), so their cost is not counted here; the
benchmark's submits use a preset whose model is missing, so the worker fails them at once
and stays out of the way.

Prints, per kind of request: requests, errors (non-2xx answers and client exceptions),
server CPU ms per request, and what that implies as a ceiling (requests/s per core). Prints
the core count and load average. Only loopback is contacted; loops are bounded by count.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.api_load import cpu_seconds, free_port, unlimited_key, wait_until_up  # noqa: E402


def burst(
    base: str,
    headers: dict[str, str],
    requests: int,
    clients: int,
    send: Callable[[httpx.Client, int], httpx.Response],
) -> int:
    """``requests`` requests from ``clients`` threads; returns how many failed."""
    errors = 0
    lock = threading.Lock()
    per_client = requests // clients

    def client(index: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            for n in range(per_client):
                try:
                    failed = send(http, index * per_client + n).status_code >= 300
                except httpx.HTTPError:
                    failed = True
                if failed:
                    with lock:
                        errors += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per kind of request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    options = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}")

    with tempfile.TemporaryDirectory(prefix="castbook-cost-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "presets.toml").write_text(
            f'[presets.gone]\nbackend = "diffusers"\nmodel = "{Path(tmp) / "no-model"}"\n'
            'options = { family = "sd15" }\n'
        )
        env = {**os.environ, "CASTBOOK_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        env.pop("CASTBOOK_DATABASE_URL", None)
        key = unlimited_key("cost", env)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "castbook", "serve", "--port", str(port),
             "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}"}
        try:
            wait_until_up(base)
            with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
                task = http.post("/v1/generations", json={"preset": "gone", "prompt": "x"})
                task_id = task.json()["id"]
            kinds: dict[str, Callable[[httpx.Client, int], httpx.Response]] = {
                "GET /health (no key)": lambda http, n: http.get("/health"),
                "GET /v1/tasks/{id}": lambda http, n: http.get(f"/v1/tasks/{task_id}"),
                "GET /v1/tasks?limit=20": lambda http, n: http.get("/v1/tasks?limit=20"),
                "POST /v1/generations": lambda http, n: http.post(
                    "/v1/generations", json={"preset": "gone", "prompt": f"a cat {n}"}
                ),
            }
            burst(base, headers, 200, options.clients, kinds["GET /v1/tasks/{id}"])  # warm
            print(f"{'request':<24} {'n':>6} {'errors':>6} {'CPU ms/req':>10} {'req/s/core':>10}")
            for name, send in kinds.items():
                before = cpu_seconds(server.pid)
                errors = burst(base, headers, options.requests, options.clients, send)
                used = cpu_seconds(server.pid) - before
                n = options.requests // options.clients * options.clients
                per = 1000 * used / n
                print(f"{name:<24} {n:>6} {errors:>6} {per:>10.2f} {1000 / per:>10.0f}")
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
