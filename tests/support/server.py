"""A real ``castbook serve`` process on 127.0.0.1 for tests: start it (waiting until
``/health`` answers), stop it, and wait for a task to reach a status. Every wait is bounded."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

__all__ = [
    "JOB_TIMEOUT",
    "STARTUP_TIMEOUT",
    "Server",
    "free_port",
    "kill_server",
    "start_server",
    "stop",
    "wait_for",
]

# Generous: a loaded 2-core machine starts a server and runs a task far slower than an idle one.
STARTUP_TIMEOUT = 180
JOB_TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_server(env: dict[str, str], log: Path) -> Server:
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "castbook", "serve", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill_server takes its worker too
        )  # fmt: skip
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"castbook serve exited with {process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.base}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"castbook serve did not come up:\n{server.output()}")


def kill_server(server: Server) -> None:
    """SIGKILL the server and its job worker process at once, as a crash or the OOM killer of
    a container would (killing only the HTTP process lets the worker finish its jobs)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


def wait_for(http: httpx.Client, task_id: str, done: set[str], step: int = 0) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        task = http.get(f"/v1/tasks/{task_id}").json()
        if task["status"] in done and task["progress"]["step"] >= step:
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.1)
