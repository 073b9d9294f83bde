"""A real ``castbook serve`` process: it runs generations, and a SIGKILL mid-job loses nothing.

The quick generation runs on the tiny random-weight SD 1.5 through diffusers in the server's
worker process; the slow tasks that are killed, stopped and recovered run on the fake
ComfyUI server (tests/support/fake_comfyui_server.py, paced steps), as the chaos lab's do:
a worker that only runs them imports no torch and diffusers (~5 s of CPU each). Of the five
servers' workers here one imports them now, four did before. Only 127.0.0.1 is contacted;
every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from castbook.db import Database
from castbook.jobs import JobStatus, JobStore
from castbook.settings import Settings
from tests.support.api import write_presets
from tests.support.fake_comfyui_server import FakeComfyUI
from tests.support.server import JOB_TIMEOUT, kill_server, start_server, stop, wait_for


def server_env(home: Path, hf_home: Path) -> dict[str, str]:
    env = {**os.environ, "CASTBOOK_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env["HF_HOME"] = str(hf_home)
    for name in ("CASTBOOK_DATABASE_URL", "CASTBOOK_BLOB_DIR", "CASTBOOK_EXECUTOR"):
        env.pop(name, None)
    return env


# The slow preset's steps, 0.2 s each on the fake ComfyUI: 6 s a task, long enough to be
# caught running on a loaded machine (its pace is the fake's clock, not the cores').
SLOW_STEPS = 30


@pytest.fixture(scope="module")
def comfy() -> Iterator[FakeComfyUI]:
    with FakeComfyUI(step_seconds=0.2) as server:
        yield server


@pytest.fixture(scope="module")
def keyed_home(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path], comfy: FakeComfyUI
) -> tuple[Path, str]:
    """A home with the presets and a key made with the CLI, once for the module (a CLI
    process costs seconds of imports); each test starts from a copy of it. ``slow`` runs
    on the fake ComfyUI."""
    root = tmp_path_factory.mktemp("keyed")
    home = root / "home"
    write_presets(home, tiny_models)
    with (home / "presets.toml").open("a") as presets:
        presets.write(
            '\n[presets.slow]\nbackend = "comfyui"\nmodel = "workflow:sd15-ip-adapter"\n'
            f'modes = ["t2i"]\ndefaults = {{ width = 256, height = 256, steps = {SLOW_STEPS} }}\n'
            f'options = {{ server = "{comfy.url}" }}\n'
        )
    return home, create_key(server_env(home, root / "hf-empty"))


@pytest.fixture
def server_home(
    keyed_home: tuple[Path, str], tmp_path: Path
) -> Iterator[tuple[Path, dict[str, str], str]]:
    """This test's own home (database, blobs), holding the module's key."""
    template, key = keyed_home
    home = tmp_path / "home"
    shutil.copytree(template, home)
    yield home, server_env(home, tmp_path / "hf-empty"), key


def create_key(env: dict[str, str]) -> str:
    """A key made with the CLI, as an operator does before starting the server."""
    created = subprocess.run(
        [sys.executable, "-m", "castbook", "keys", "create", "--name", "test", "--plain"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("cb_")
    return key


def test_a_killed_server_requeues_its_running_task_on_restart(
    server_home: tuple[Path, dict[str, str], str], tmp_path: Path
) -> None:
    home, env, key = server_home
    log = tmp_path / "server.log"
    first = start_server(env, log)
    try:
        with httpx.Client(
            base_url=first.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            assert (
                http.get("/v1/tasks", headers={"Authorization": "Bearer cb_x"}).status_code == 401
            )
            quick = http.post("/v1/generations", json={"preset": "tiny-plain", "prompt": "a cat"})
            assert quick.status_code == 202, quick.text
            finished = wait_for(http, quick.json()["id"], {"succeeded", "failed"})
            assert finished["status"] == "succeeded", finished
            result = http.get(finished["outputs"][0]["url"])
            assert result.status_code == 200 and result.headers["content-type"] == "image/png"

            slow = http.post("/v1/generations", json={"preset": "slow", "prompt": "a dog"})
            slow_id = slow.json()["id"]
            running = wait_for(http, slow_id, {"running"}, step=3)
            assert running["progress"]["step"] < SLOW_STEPS, (
                "the slow task finished too fast to kill"
            )
        kill_server(first)
    finally:
        stop(first)

    store = JobStore(Database(Settings.for_home(home).database_url))
    orphan = store.get(slow_id)
    assert orphan.status == JobStatus.RUNNING and orphan.attempts == 1  # as the kill left it

    second = start_server(env, log)
    try:
        with httpx.Client(
            base_url=second.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            recovered = wait_for(http, slow_id, {"succeeded", "failed", "cancelled"})
    finally:
        stop(second)
        store.database.dispose()
    assert recovered["status"] == "succeeded", (recovered, second.output())
    assert recovered["attempts"] == 2
    assert len(recovered["outputs"]) == 1


def test_a_stopped_server_hands_its_running_task_back_to_the_queue(
    server_home: tuple[Path, dict[str, str], str], tmp_path: Path
) -> None:
    home, env, key = server_home
    env = {**env, "CASTBOOK_STOP_GRACE": "1"}
    log = tmp_path / "server.log"
    server = start_server(env, log)
    try:
        with httpx.Client(
            base_url=server.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            slow = http.post("/v1/generations", json={"preset": "slow", "prompt": "a dog"})
            slow_id = slow.json()["id"]
            running = wait_for(http, slow_id, {"running"}, step=2)
            assert running["progress"]["step"] < SLOW_STEPS, (
                "the slow task finished too fast to stop"
            )
        server.process.send_signal(signal.SIGTERM)  # what Ctrl+C and `docker stop` send
        # uvicorn stops gracefully, then re-raises the signal: it ends "killed by SIGTERM".
        assert server.process.wait(timeout=120) in (0, -signal.SIGTERM), server.output()
    finally:
        stop(server)
    store = JobStore(Database(Settings.for_home(home).database_url))
    try:
        handed = store.get(slow_id)
    finally:
        store.database.dispose()
    # Queued again, the interrupted run not counted against its attempts, and said so.
    assert handed.status == JobStatus.QUEUED and handed.attempts == 0, handed
    assert "handed back to the queue" in server.output() and slow_id in server.output()


def test_an_open_event_stream_does_not_hold_up_a_graceful_stop(
    server_home: tuple[Path, dict[str, str], str], tmp_path: Path
) -> None:
    """A client following a task's event stream (the web app does) must not keep a stopping
    server up until the task ends: the streams end at the signal, and the running task is
    handed back after the grace as it would be with no stream open."""
    home, env, key = server_home
    env = {**env, "CASTBOOK_STOP_GRACE": "1"}
    server = start_server(env, tmp_path / "server.log")
    events: list[str] = []
    try:
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.base, headers=auth, timeout=30) as http:
            slow = http.post("/v1/generations", json={"preset": "tiny-slow", "prompt": "a dog"})
            slow_id = slow.json()["id"]
            wait_for(http, slow_id, {"running"}, step=2)
            with http.stream("GET", f"/v1/tasks/{slow_id}/events", timeout=JOB_TIMEOUT) as stream:
                lines = stream.iter_lines()
                while not any(line.startswith("event: progress") for line in events):
                    events.append(next(lines))
                server.process.send_signal(signal.SIGTERM)
                events.extend(lines)  # until the server ends the stream
        assert server.process.wait(timeout=120) in (0, -signal.SIGTERM), server.output()
    finally:
        stop(server)
    assert "event: done" not in events, events  # the stream ended before the task did
    store = JobStore(Database(Settings.for_home(home).database_url))
    try:
        handed = store.get(slow_id)
    finally:
        store.database.dispose()
    assert handed.status == JobStatus.QUEUED and handed.attempts == 0, (handed, server.output())


def test_the_worker_of_a_killed_http_process_finishes_its_task_once(
    server_home: tuple[Path, dict[str, str], str], tmp_path: Path
) -> None:
    """Jobs run in the server's worker process: when only the HTTP process dies, the worker
    finishes what it runs, records it, and exits; a new server does not run it again."""
    home, env, key = server_home
    log = tmp_path / "server.log"
    first = start_server(env, log)
    try:
        with httpx.Client(
            base_url=first.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            slow = http.post("/v1/generations", json={"preset": "slow", "prompt": "a dog"})
            slow_id = slow.json()["id"]
            wait_for(http, slow_id, {"running"}, step=1)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=10)
    finally:
        stop(first)
    store = JobStore(Database(Settings.for_home(home).database_url))
    try:
        deadline = time.monotonic() + JOB_TIMEOUT
        while not (job := store.get(slow_id)).done:
            assert time.monotonic() < deadline, f"the orphaned worker never finished: {job}"
            time.sleep(0.2)
        holder = int(job.worker.split(":")[2])
        assert holder != first.process.pid
        while _alive(holder):
            assert time.monotonic() < deadline, "the worker outlived its server's job"
            time.sleep(0.2)
    finally:
        store.database.dispose()
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1 and len(job.outputs) == 1

    second = start_server(env, log)
    try:
        with httpx.Client(
            base_url=second.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            again = http.get(f"/v1/tasks/{slow_id}").json()
    finally:
        stop(second)
    assert again["status"] == "succeeded" and again["attempts"] == 1


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False
