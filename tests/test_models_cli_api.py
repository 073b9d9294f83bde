"""``castbook models``/``doctor``/``--pull`` as real processes, and ``/v1/models`` in-process,
against the fake hub on 127.0.0.1 (tests/support/fake_hub.py) serving tiny repositories laid
out like the ones ``sd15-ip-adapter`` loads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("diffusers")

from fastapi.testclient import TestClient

from castbook.api import ApiConfig, create_app
from castbook.settings import Settings
from tests.support.fake_hub import FakeHub
from tests.support.hub_models import SD15_REPO

DEADLINE = 120  # seconds; generous for a loaded machine
SMALL = ["--steps", "1", "--width", "256", "--height", "256", "--seed", "3"]


@pytest.fixture
def hub(model_hub: FakeHub) -> FakeHub:
    return model_hub


@pytest.fixture
def env(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    environment = {
        **os.environ,
        "CASTBOOK_HOME": str(tmp_path / "home"),
        "HF_ENDPOINT": hub.endpoint,
        "HF_HOME": str(tmp_path / "hf"),
        "COLUMNS": "200",
    }
    for name in ("CASTBOOK_DATABASE_URL", "CASTBOOK_BLOB_DIR", "HF_HUB_OFFLINE", "HF_TOKEN"):
        environment.pop(name, None)
    environment.pop("HF_HUB_CACHE", None)
    return environment


def castbook(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "castbook", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=DEADLINE, check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def state(env: dict[str, str], preset: str = "sd15-ip-adapter") -> dict[str, Any]:
    listed = castbook(env, "models", "list", "--json", "--offline")
    assert listed.returncode == 0, listed.stderr
    return next(p for p in json.loads(listed.stdout)["presets"] if p["preset"] == preset)


def gets(hub: FakeHub, path: str) -> int:
    return sum(1 for r in hub.log if r.method == "GET" and r.path.endswith("/" + path))


# ---------------------------------------------------------------------------- the CLI


def start_sh_status(env: dict[str, str]) -> str:
    """What scripts/start.sh prints at its end (scripts/model_status.py)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "model_status.py"
    ran = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, check=False,
        timeout=DEADLINE,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def test_pull_list_generate_doctor_and_remove(env: dict[str, str], tmp_path: Path) -> None:
    assert state(env)["state"] == "missing"
    assert "castbook models pull sd15-ip-adapter" in start_sh_status(env)
    refused = castbook(env, "generate", "--preset", "sd15-ip-adapter", "-p", "a cat", *SMALL)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: preset 'sd15-ip-adapter' cannot run")
    for part in ("model stable-diffusion-v1-5", "ip adapter h94/IP-Adapter", "image encoder"):
        assert part in lines[0]
    assert "castbook models pull sd15-ip-adapter" in lines[0]

    unasked = castbook(env, "models", "pull", "sd15-ip-adapter")
    assert unasked.returncode == 1 and "add --yes" in unasked.stderr

    pulled = castbook(env, "models", "pull", "sd15-ip-adapter", "--yes")
    assert pulled.returncode == 0, pulled.stderr
    assert "sd15-ip-adapter is installed" in pulled.stdout
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in pulled.stderr  # the plan
    report = state(env)
    assert report["state"] == "installed" and report["runnable"]
    assert report["download_size"] == report["size_on_disk"] > 0  # sizes known offline now

    assert "Local models ready: sd15-ip-adapter" in start_sh_status(env)
    listed = castbook(env, "models", "list")  # the hub is reachable: a table, no note
    assert listed.returncode == 0 and "installed" in listed.stdout
    assert "Hub not asked" not in listed.stdout

    made = castbook(
        env, "generate", "--preset", "sd15-ip-adapter", "-p", "a cat", *SMALL, "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (output,) = json.loads(made.stdout)["outputs"]
    assert Path(tmp_path, output["path"]).is_file() or Path(output["path"]).is_file()

    doctor = castbook(env, "doctor", "--json")
    assert doctor.returncode == 0, doctor.stderr
    report = json.loads(doctor.stdout)
    assert report["device"]["kind"] == "cpu" and "sd15-ip-adapter" in report["runnable"]
    assert report["hf_cache"] == str(Path(env["HF_HOME"]) / "hub")
    assert report["hf_cache_free_bytes"] > 0
    loads = {p["preset"]: p["load"] for p in report["presets"]}
    assert loads["sd15-ip-adapter"] == {
        "device": "cpu", "dtype": "float32", "offload": "none", "offload_reason": ""
    }  # fmt: skip

    removed = castbook(env, "models", "remove", "sd15-ip-adapter", "--yes", "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["freed_bytes"] == report_size(env, pulled)
    assert state(env)["state"] == "missing"
    assert not (Path(env["HF_HOME"]) / "hub" / "models--h94--IP-Adapter").exists()


def report_size(env: dict[str, str], pulled: subprocess.CompletedProcess) -> int:
    sizes = json.loads((Path(env["CASTBOOK_HOME"]) / "model-sizes.json").read_text())
    return sum(sum(files.values()) for files in sizes.values())


def test_generate_with_pull_downloads_first(env: dict[str, str], tmp_path: Path) -> None:
    made = castbook(
        env, "generate", "--pull", "--preset", "sd15-ip-adapter", "-p", "a cat", *SMALL,
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["preset"] == "sd15-ip-adapter"
    assert state(env)["runnable"]


def test_an_unreachable_hub_is_one_line_and_nothing_is_installed(env: dict[str, str]) -> None:
    env = {**env, "HF_ENDPOINT": "http://127.0.0.1:9"}
    pulled = castbook(env, "models", "pull", "sd15-ip-adapter", "--yes")
    assert pulled.returncode == 1
    assert pulled.stderr.strip().splitlines() == [pulled.stderr.strip()]
    assert pulled.stderr.startswith(
        "error: cannot reach the Hugging Face hub at http://127.0.0.1:9"
    )
    listed = castbook(env, "models", "list")
    assert listed.returncode == 0
    assert "Hub not asked for sizes: cannot reach" in " ".join(listed.stdout.split())
    assert state(env)["state"] == "missing"


def test_a_killed_pull_is_partial_and_the_next_pull_fetches_only_the_rest(
    env: dict[str, str], hub: FakeHub, tmp_path: Path
) -> None:
    unet = "unet/diffusion_pytorch_model.fp16.safetensors"
    hub.throttle(400_000)
    process = subprocess.Popen(
        [sys.executable, "-m", "castbook", "models", "pull", "sd15-ip-adapter", "--yes"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE
        while hub.bytes_sent(SD15_REPO, unet) < 200_000:
            assert process.poll() is None, "the pull ended before it could be killed"
            assert time.monotonic() < deadline, "the pull never reached the UNet weights"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    hub.throttle(None)
    report = state(env)
    assert report["state"] == "partial" and not report["runnable"]
    done_before = "text_encoder/model.fp16.safetensors"
    assert gets(hub, done_before) == 1
    again = castbook(env, "models", "pull", "sd15-ip-adapter", "--yes")
    assert again.returncode == 0, again.stderr
    assert state(env)["runnable"]
    assert gets(hub, done_before) == 1, "a file that had arrived was downloaded again"
    assert gets(hub, unet) == 2
    assert not list((Path(env["HF_HOME"]) / "hub").rglob("*.incomplete"))


# ---------------------------------------------------------------------------- the HTTP API


@pytest.fixture
def api(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    app = create_app(
        Settings.for_home(tmp_path / "home"), config=ApiConfig(events_poll_seconds=0.02)
    )
    keys = app.state.services.keys
    admin = {"Authorization": f"Bearer {keys.create('admin', admin=True)[1]}"}
    user = {"Authorization": f"Bearer {keys.create('user')[1]}"}
    with TestClient(app) as client:
        yield client, admin, user


def wait(client: TestClient, task_id: str, headers: dict[str, str], until) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while True:
        task = client.get(f"/v1/tasks/{task_id}", headers=headers).json()
        if until(task):
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.05)


def test_the_api_reports_pulls_and_removes_models(api, hub: FakeHub) -> None:
    client, admin, user = api
    hub.throttle(3_000_000)  # a download of a few seconds: progress the stream can see
    listed = client.get("/v1/models", headers=user).json()
    sd15 = next(p for p in listed if p["preset"] == "sd15-ip-adapter")
    assert sd15["state"] == "missing" and sd15["pull"].startswith("castbook models pull")
    presets = {p["id"]: p for p in client.get("/v1/presets", headers=user).json()}
    assert presets["sd15-ip-adapter"]["models"]["runnable"] is False
    assert presets["sd15-ip-adapter"]["models"]["missing"] == [
        "model",
        "ip_adapter",
        "image_encoder",
    ]
    assert presets["openai-images"]["models"]["state"] == "remote"

    forbidden = client.post("/v1/models/sd15-ip-adapter/pull", headers=user)
    assert forbidden.status_code == 403 and forbidden.json()["type"] == "ForbiddenError"
    assert "--admin" in forbidden.json()["error"]
    assert client.post("/v1/models/openai-images/pull", headers=admin).status_code == 422
    assert client.post("/v1/models/no-such/pull", headers=admin).status_code == 404

    started = client.post("/v1/models/sd15-ip-adapter/pull", headers=admin)
    assert started.status_code == 202, started.text
    task = started.json()
    assert task["kind"] == "model_pull"
    events = client.get(task["events_url"], headers=admin).text
    progress = [json.loads(line[6:]) for line in events.splitlines() if line.startswith("data: ")]
    messages = [e.get("message", "") for e in progress]
    assert any(" of " in m and "(file " in m for m in messages), messages
    done = wait(
        client, task["id"], admin, lambda t: t["status"] != "running" and t["status"] != "queued"
    )
    assert done["status"] == "succeeded", done
    assert done["result"]["downloaded_bytes"] == done["result"]["total_bytes"] > 0
    shown = client.get("/v1/models/sd15-ip-adapter", headers=user).json()
    assert shown["state"] == "installed" and shown["download_size"] == done["result"]["total_bytes"]
    presets = {p["id"]: p for p in client.get("/v1/presets", headers=user).json()}
    assert presets["sd15-ip-adapter"]["models"]["runnable"] is True
    assert "t2i" in presets["sd15-ip-adapter"]["default_for"]

    made = client.post(
        "/v1/generations",
        json={
            "preset": "sd15-ip-adapter",
            "prompt": "a cat",
            "steps": 1,
            "width": 256,
            "height": 256,
        },
        headers=user,
    )
    assert made.status_code == 202, made.text
    generated = wait(
        client, made.json()["id"], user, lambda t: t["status"] in ("succeeded", "failed")
    )
    assert generated["status"] == "succeeded", generated

    assert client.delete("/v1/models/sd15-ip-adapter", headers=user).status_code == 403
    removed = client.delete("/v1/models/sd15-ip-adapter", headers=admin)
    assert removed.status_code == 200 and removed.json()["freed_bytes"] > 0
    assert client.get("/v1/models/sd15-ip-adapter", headers=user).json()["state"] == "missing"


def test_a_pull_task_can_be_cancelled(api, hub: FakeHub, tmp_path: Path) -> None:
    client, admin, _ = api
    hub.throttle(300_000)
    task = client.post("/v1/models/sd15-ip-adapter/pull", headers=admin).json()
    wait(
        client,
        task["id"],
        admin,
        lambda t: t["progress"]["total"] > 0 and " of " in t["progress"]["message"],
    )
    assert client.post(f"/v1/tasks/{task['id']}/cancel", headers=admin).status_code == 200
    ended = wait(
        client, task["id"], admin, lambda t: t["status"] in ("cancelled", "succeeded", "failed")
    )
    assert ended["status"] == "cancelled", ended
    hub.throttle(None)
    assert client.get("/v1/models/sd15-ip-adapter", headers=admin).json()["state"] != "installed"
    assert not list((tmp_path / "hf").rglob("*.incomplete"))


def test_a_pull_task_survives_a_killed_server_and_fetches_only_the_rest(
    env: dict[str, str], hub: FakeHub, tmp_path: Path
) -> None:
    import httpx

    from tests.support.server import kill_server, start_server, stop
    from tests.support.web import create_key

    headers = {"Authorization": f"Bearer {create_key(env, 'admin', admin=True)}"}
    unet = "unet/diffusion_pytorch_model.fp16.safetensors"
    done_before = "text_encoder/model.fp16.safetensors"
    hub.throttle(400_000)
    first = start_server(env, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=first.base, headers=headers, timeout=30) as http:
            task = http.post("/v1/models/sd15-ip-adapter/pull").json()
            deadline = time.monotonic() + DEADLINE
            while hub.bytes_sent(SD15_REPO, unet) < 200_000:
                assert time.monotonic() < deadline, http.get(f"/v1/tasks/{task['id']}").json()
                time.sleep(0.05)
        kill_server(first)
    finally:
        stop(first)
    hub.throttle(None)
    second = start_server(env, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=second.base, headers=headers, timeout=30) as http:
            deadline = time.monotonic() + DEADLINE
            while (ended := http.get(f"/v1/tasks/{task['id']}").json())["status"] not in (
                "succeeded",
                "failed",
                "cancelled",
            ):
                assert time.monotonic() < deadline, ended
                time.sleep(0.1)
            assert ended["status"] == "succeeded" and ended["attempts"] == 2, ended
            assert http.get("/v1/models/sd15-ip-adapter").json()["state"] == "installed"
    finally:
        stop(second)
    assert gets(hub, done_before) == 1, "a file that had arrived was downloaded again"
    assert gets(hub, unet) == 2
