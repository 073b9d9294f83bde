"""How long one owner's small evaluation waits while another owner sends heavy ones.

    PYTHONPATH=src .venv/bin/python benchmarks/eval_fairness.py [--seconds 30]

An in-process app (Starlette's TestClient, a temporary CASTBOOK_HOME, the settings from the
environment), two owners with a character each. For each scenario, ann sends her request
back to back from one thread while bob sends a one-image evaluation every 0.25 s from another;
it prints ann's answers and timings and bob's latency (p50, p95, max):

0. ``alone``: ann sends nothing (bob's latency on his own, the baseline).
1. ``bomb``: ann's upload is the issue's: a GIF of 30 frames at 6000×6000 (here a sparse
   one, a few hundred bytes: every frame is still composed onto the whole canvas).
2. ``heavy``: ann's request is legitimate and slow: 32 candidates of 1024×1024.

Only the HTTP API is used, so the same script measures an older checkout (point PYTHONPATH
at its ``src``) for a before/after on the same machine.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient
from tests.support.drawings import ALICE, character, png_bytes

from castbook.api.app import create_app
from castbook.settings import Settings


def sparse_gif(frames: int, side: int) -> bytes:
    out = bytearray(b"GIF89a") + struct.pack("<HHBBB", side, side, 0x80, 0, 0)
    out += bytes((0, 0, 0, 255, 255, 255)) + b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for index in range(frames):
        out += b"\x21\xf9\x04\x00\x05\x00\x00\x00\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        out += b"\x02\x02" + (b"\x4c\x01" if index % 2 else b"\x44\x01") + b"\x00"
    return bytes(out + b"\x3b")


def noisy_png(seed: int) -> bytes:
    """1024×1024 of 4×4 blocks of noise: real work to score, ~0.5 MB (32 fit the body limit)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(blocks).resize((1024, 1024), Image.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(client: TestClient, keys: dict[str, dict[str, str]], ann_files: list, seconds: float):
    stop = threading.Event()
    ann_times: list[tuple[float, int]] = []
    bob_times: list[float] = []
    errors: list[str] = []

    def post(headers: dict[str, str], files: list) -> tuple[float, int]:
        start = time.perf_counter()
        answer = client.post(
            "/v1/evaluations", data={"character": "Alice"}, files=files, headers=headers
        )
        return time.perf_counter() - start, answer.status_code

    def ann() -> None:
        while ann_files and not stop.is_set():
            ann_times.append(post(keys["ann"], ann_files))

    def bob() -> None:
        small = [("image", ("small.png", png_bytes(character(**ALICE, seed=3)), "image/png"))]
        while not stop.is_set():
            took, status = post(keys["bob"], small)
            if status != 200:
                errors.append(f"bob got {status}")
            bob_times.append(took)
            stop.wait(0.25)

    threads = [threading.Thread(target=ann), threading.Thread(target=bob)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return ann_times, bob_times, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        settings = Settings.from_env({**_env(), "CASTBOOK_HOME": home})
        app = create_app(settings)
        with TestClient(app) as client:
            services = app.state.services
            keys = {}
            for owner in ("ann", "bob"):
                _, plain = services.keys.create(f"{owner}'s key", owner)
                keys[owner] = {"Authorization": f"Bearer {plain}"}
                made = client.post("/v1/characters", json={"name": "Alice"}, headers=keys[owner])
                client.post(
                    f"/v1/characters/{made.json()['id']}/images",
                    files=[("image", ("a.png", png_bytes(character(**ALICE)), "image/png"))],
                    headers=keys[owner],
                )
            # Warm up: the first evaluation loads the face model (in the workers, if any).
            for owner in ("ann", "bob"):
                client.post(
                    "/v1/evaluations",
                    data={"character": "Alice"},
                    files=[("image", ("w.png", png_bytes(character(**ALICE)), "image/png"))],
                    headers=keys[owner],
                )
            scenarios = {
                "alone (ann sends nothing)": [],
                "bomb (30 × 6000² GIF)": [
                    ("image", ("bomb.gif", sparse_gif(30, 6000), "image/gif"))
                ],
                "heavy (32 × 1024² PNG)": [
                    ("image", (f"{i}.png", noisy_png(i), "image/png")) for i in range(32)
                ],
            }
            print(f"{os.cpu_count()} cores, load average {os.getloadavg()}")
            print(f"{args.seconds:g} s per scenario; bob sends one small image every 0.25 s")
            for name, files in scenarios.items():
                ann_times, bob_times, errors = run(client, keys, files, args.seconds)
                statuses = sorted({status for _, status in ann_times})
                ann_mean = statistics.mean(took for took, _ in ann_times) if ann_times else 0.0
                print(
                    f"{name}: ann {len(ann_times)} requests (status {statuses}, mean "
                    f"{ann_mean:.2f} s); bob {len(bob_times)} requests: p50 "
                    f"{percentile(bob_times, 0.5):.2f} s, p95 {percentile(bob_times, 0.95):.2f} s, "
                    f"max {max(bob_times):.2f} s; errors {len(errors)}"
                )


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k.startswith("CASTBOOK_")}


if __name__ == "__main__":
    main()
