"""A real ``castbook serve`` SIGKILLed while it trains a character's LoRA (issue 19): on
restart the task is re-queued and continues from its last checkpoint, not from step 0.

The server and its worker process are killed together (tests/support/server.py's
``kill_server``, as a crash or the OOM killer would); only 127.0.0.1 is contacted and every
wait is bounded.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from castbook.db import Database
from castbook.jobs import JobStatus, JobStore
from castbook.settings import Settings
from tests.support.api import write_presets
from tests.support.server import kill_server, start_server, stop, wait_for
from tests.support.web import create_key, png_bytes

STEPS = 60  # seconds on a quiet core with the tiny model; minutes on busy ones
EVERY = 5  # a checkpoint every 5 steps


def _environment(home: Path, root: Path) -> dict[str, str]:
    env = {**os.environ, "CASTBOOK_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env["HF_HOME"] = str(root / "hf-empty")
    for name in ("CASTBOOK_DATABASE_URL", "CASTBOOK_BLOB_DIR", "CASTBOOK_EXECUTOR"):
        env.pop(name, None)
    env["CASTBOOK_IDENTIFY_ON_ADD"] = "0"
    return env


def test_a_server_killed_mid_training_resumes_from_its_checkpoint(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    pytest.importorskip("peft")
    home = tmp_path / "home"
    write_presets(home, tiny_models)
    env = _environment(home, tmp_path)
    headers = {"Authorization": f"Bearer {create_key(env, 'trainer')}"}
    log = tmp_path / "server.log"
    first = start_server(env, log)
    try:
        with httpx.Client(base_url=first.base, headers=headers, timeout=30) as http:
            assert http.post("/v1/characters", json={"name": "Ona"}).status_code == 201
            colours = [(200, 60, 40), (40, 160, 90), (60, 80, 200)]
            files = [
                ("image", (f"{i}.png", png_bytes(c), "image/png")) for i, c in enumerate(colours)
            ]
            assert http.post("/v1/characters/Ona/images", files=files).status_code == 201
            body = {
                "preset": "tiny-plain",
                "steps": STEPS,
                "rank": 2,
                "resolution": 64,
                "checkpoint_every": EVERY,
                "report_prompts": 0,
            }
            submitted = http.post("/v1/characters/Ona/train", json=body)
            assert submitted.status_code == 202, submitted.text
            task_id = submitted.json()["id"]
            # Past the second checkpoint: it is written before the step is reported.
            running = wait_for(http, task_id, {"running"}, step=2 * EVERY + 1)
            assert running["progress"]["step"] < STEPS, "it finished too fast to kill"
        checkpoint = home / "training" / task_id / "checkpoint.pt"
        assert checkpoint.is_file(), list((home / "training").rglob("*"))
        kill_server(first)
    finally:
        stop(first)

    store = JobStore(Database(Settings.for_home(home).database_url))
    try:
        orphan = store.get(task_id)
        assert orphan.status == JobStatus.RUNNING and orphan.attempts == 1  # as the kill left it
        assert checkpoint.is_file()  # the kill left the checkpoint where the task finds it
    finally:
        store.database.dispose()

    second = start_server(env, log)
    try:
        with httpx.Client(base_url=second.base, headers=headers, timeout=30) as http:
            done = wait_for(http, task_id, {"succeeded", "failed", "cancelled"})
            loras = http.get("/v1/characters/Ona/loras").json()["loras"]
    finally:
        stop(second)
    assert done["status"] == "succeeded", (done, second.output())
    assert done["attempts"] == 2
    result = done["result"]
    # Continued from a checkpoint (a multiple of EVERY, at least the second one), not step 0.
    assert result["resumed_from"] >= 2 * EVERY and result["resumed_from"] % EVERY == 0, result
    assert result["resumed_from"] < STEPS and result["steps"] == STEPS
    assert [lora["sha256"] for lora in loras] == [result["sha256"]]
    assert not (home / "training" / task_id).exists()  # the folder goes when the task ends
