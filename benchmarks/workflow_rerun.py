"""Re-running a workflow: unchanged seeded nodes re-used vs every node rendered again.

    .venv/bin/python benchmarks/workflow_rerun.py [--steps 10] [--repeats 3]

A character -> batch render (8 seeded prompt variants, scored) -> consistency eval graph on
the tiny random-weight SD 1.5 model with an IP-Adapter (the tests' own), run through the
real API app and its local executor. After a warm-up run (models loaded, reference features
stored), each repeat times the same graph three ways, all in this one run:

1. ``cache: false`` — every node renders and scores again (the baseline);
2. ``cache: true`` with nothing changed — the batch render and the eval are re-used;
3. ``cache: true`` after changing only the output node's label — the same re-use: a change
   downstream of a node never invalidates it.

Medians of ``--repeats``; the ratio is baseline / cached.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()

    from fastapi.testclient import TestClient
    from PIL import Image
    from tests.support.tiny_diffusers import make_tiny_ip_adapter, make_tiny_sd15
    from tests.test_api import write_presets

    from castbook.api import create_app
    from castbook.api.config import ApiConfig
    from castbook.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = {"sd15": make_tiny_sd15(root / "sd15"), "ip": make_tiny_ip_adapter(root / "ip")}
        home = root / "home"
        write_presets(home, models)
        app = create_app(Settings.for_home(home), config=ApiConfig(events_poll_seconds=0.02))
        with TestClient(app) as client:
            _, key = app.state.services.keys.create("bench", "bench")
            headers = {"Authorization": f"Bearer {key}"}
            character = client.post(
                "/v1/characters", json={"name": "Alice", "style_prompt": "long black hair"},
                headers=headers,
            ).json()  # fmt: skip
            picture = io.BytesIO()
            Image.new("RGB", (256, 256), (200, 60, 40)).save(picture, format="PNG")
            client.post(
                f"/v1/characters/{character['id']}/images",
                files={"image": ("alice.png", picture.getvalue(), "image/png")},
                headers=headers,
            )

            def graph(label: str) -> dict[str, Any]:
                prompts = [f"variant {i}: at a cafe, morning light" for i in range(8)]
                return {"nodes": {
                    "alice": {"type": "character", "inputs": {"character": "Alice"}},
                    "batch": {"type": "batch_render",
                              "inputs": {"characters": [["alice", "character"]],
                                         "prompts": prompts, "preset": "tiny", "seed": 11,
                                         "steps": options.steps}},
                    "eval": {"type": "consistency_eval",
                             "inputs": {"images": ["batch", "images"],
                                        "character": ["alice", "character"]}},
                    "out": {"type": "output",
                            "inputs": {"value": ["eval", "best"], "label": label}}}}  # fmt: skip

            def run(label: str, cache: bool) -> tuple[float, dict[str, Any]]:
                started = time.perf_counter()
                task = client.post(
                    "/v1/workflows/run",
                    json={"graph": graph(label), "cache": cache},
                    headers=headers,
                ).json()
                while True:
                    done = client.get(f"/v1/tasks/{task['id']}", headers=headers).json()
                    if done["status"] in ("succeeded", "failed", "cancelled"):
                        break
                    time.sleep(0.01)
                assert done["status"] == "succeeded", done["error"]
                return time.perf_counter() - started, done["result"]["nodes"]

            run("warm-up", False)
            fresh, cached, relabelled = [], [], []
            for repeat in range(options.repeats):
                seconds, nodes = run("best", False)
                assert "cached_from" not in nodes["batch"]
                fresh.append(seconds)
                seconds, nodes = run("best", True)
                assert "cached_from" in nodes["batch"] and "cached_from" in nodes["eval"]
                cached.append(seconds)
                seconds, nodes = run(f"best #{repeat}", True)
                assert "cached_from" in nodes["batch"]
                relabelled.append(seconds)

    baseline = statistics.median(fresh)
    for name, times in (
        ("every node again (cache: false)", fresh),
        ("nothing changed (cache: true)", cached),
        ("only the output label changed", relabelled),
    ):
        median = statistics.median(times)
        print(f"{name:34s} {median * 1000:9.1f} ms   {baseline / median:6.1f}x")


if __name__ == "__main__":
    main()
