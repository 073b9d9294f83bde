"""What the in-process API tests share: the ``Api`` handle on a TestClient, the tiny presets
a test's CASTBOOK_HOME gets, a character with a reference image, reading an event stream.
The fixtures that build them (``tiny_models``, ``home``, ``make_api``, ``generating``) are in
tests/conftest.py."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from castbook.api.services import Services
from tests.support.drawings import ALICE, character, png_bytes

__all__ = [
    "TERMINAL",
    "Api",
    "ApiFactory",
    "add_character",
    "alice_png",
    "read_events",
    "write_presets",
]

TERMINAL = ("succeeded", "failed", "cancelled")


def write_presets(home: Path, models: dict[str, Path]) -> None:
    """``tiny`` (IP-Adapter: takes a reference), ``tiny-plain`` (no references), ``tiny-slow``
    (50 steps) and ``tiny-t2i`` (text-to-image only)."""
    from tests.support.tiny_diffusers import IP_ADAPTER_WEIGHT

    home.mkdir(parents=True, exist_ok=True)
    sd15 = models["sd15"]
    (home / "presets.toml").write_text(
        f"""
[presets.tiny]
backend = "diffusers"
model = "{sd15}"
defaults = {{ width = 256, height = 256, steps = 2 }}
[presets.tiny.options]
family = "sd15"
ip_adapter = "{models["ip"]}"
ip_adapter_subfolder = ""
ip_adapter_weight = "{IP_ADAPTER_WEIGHT}"
image_encoder_folder = "image_encoder"

[presets.tiny-plain]
backend = "diffusers"
model = "{sd15}"
defaults = {{ width = 256, height = 256, steps = 2 }}
options = {{ family = "sd15" }}

[presets.tiny-slow]
backend = "diffusers"
model = "{sd15}"
defaults = {{ width = 256, height = 256, steps = 50 }}
options = {{ family = "sd15" }}

[presets.tiny-t2i]
backend = "diffusers"
model = "{sd15}"
modes = ["t2i"]
defaults = {{ width = 256, height = 256, steps = 2 }}
options = {{ family = "sd15" }}
"""
    )


@dataclass
class Api:
    client: TestClient
    services: Services

    def key(self, owner: str) -> dict[str, str]:
        _, plain = self.services.keys.create(f"{owner}'s key", owner)
        return {"Authorization": f"Bearer {plain}"}

    def wait(
        self,
        task_id: str,
        headers: dict[str, str],
        timeout: float = 300,
        until: Callable[[dict[str, Any]], bool] = lambda task: task["status"] in TERMINAL,
    ) -> dict[str, Any]:
        """Task ``task_id`` once ``until`` holds for it (it has ended), or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.client.get(f"/v1/tasks/{task_id}", headers=headers).json()
            if until(task) or time.monotonic() > deadline:
                return task
            time.sleep(0.05)

    def blobs(self) -> set[str]:
        return set(self.services.blobs)

    def job_count(self) -> int:
        with self.services.database.session() as session:
            from sqlalchemy import func, select

            from castbook.db import JobRow

            return session.scalar(select(func.count()).select_from(JobRow)) or 0


ApiFactory = Callable[..., Api]


def read_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith((":", "retry:"))]
        if not lines:
            continue
        name = next(line[7:] for line in lines if line.startswith("event: "))
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        events.append((name, json.loads(data)))
    return events


def alice_png() -> bytes:
    return png_bytes(character(**ALICE))


def add_character(api: Api, headers: dict[str, str], name: str = "Alice") -> dict[str, Any]:
    made = api.client.post(
        "/v1/characters", json={"name": name, "style_prompt": "long black hair"}, headers=headers
    )
    assert made.status_code == 201, made.text
    uploaded = api.client.post(
        f"/v1/characters/{made.json()['id']}/images",
        files=[("image", ("alice.png", alice_png(), "image/png"))],
        headers=headers,
    )
    assert uploaded.status_code == 201, uploaded.text
    return uploaded.json()


# ---- gated handlers: jobs whose pace the test controls ---------------------------------------
