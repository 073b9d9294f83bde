"""Many finished tasks in a store at once, for the gallery's tests and benchmark
(``GET /v1/results``): rows inserted directly into ``jobs`` and ``job_outputs`` in the shape
the ``workflow`` job kind writes (a text-to-image node's reported prompts, a consistency
eval's scores), each output a real PNG blob. Rendering thousands of pictures for real would
take hours; what the gallery reads is the rows."""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from PIL import Image

from castbook.blobs import Blobs
from castbook.db import Database, JobOutputRow, JobRow

__all__ = ["SeededResult", "seed_results", "small_png"]

_JOBS = JobRow.__table__
_OUTPUTS = JobOutputRow.__table__


def small_png(index: int, size: int = 32) -> bytes:
    """A distinct little picture per index (its colour and a square's place)."""
    image = Image.new("RGB", (size, size), (index * 37 % 256, index * 91 % 256, index * 53 % 256))
    x, y = index % (size - 4), index // 7 % (size - 4)
    image.paste((255, 255, 255), (x, y, x + 4, y + 4))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class SeededResult:
    task: str
    sha256: str
    character: str
    score: float
    prompt: str
    seed: int
    workflow: str | None


def seed_results(
    database: Database,
    blobs: Blobs,
    owner: str,
    count: int,
    *,
    characters: Sequence[str] = ("Alice", "Bob"),
    workflow: str | None = None,
    per_task: int = 4,
    distinct_images: int = 200,
    start: datetime | None = None,
) -> list[SeededResult]:
    """``count`` results of finished workflow tasks of ``owner``, ``per_task`` a task, the
    characters taking turns by task, scores spread over 0–100; oldest first."""
    shas = [blobs.put(small_png(i))[0] for i in range(min(distinct_images, count))]
    begin = start or datetime.now(UTC) - timedelta(days=30)
    seeded: list[SeededResult] = []
    jobs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    for task_index in range((count + per_task - 1) // per_task):
        job_id = uuid.uuid4().hex
        character = characters[task_index % len(characters)]
        made = begin + timedelta(seconds=task_index * 10)
        images = []
        scores = []
        for position in range(min(per_task, count - task_index * per_task)):
            number = task_index * per_task + position
            sha = shas[number % len(shas)]
            score = round((number * 7.3) % 100, 2)
            seed = 1000 + number
            prompt = f"{character}, variant {number}, ink and watercolor"
            images.append(sha)
            scores.append({"image": sha, "character": character, "score": score})
            outputs.append(
                {
                    "job_id": job_id,
                    "position": position,
                    "sha256": sha,
                    "kind": "image",
                    "media_type": "image/png",
                    "width": 32,
                    "height": 32,
                    "seed": seed,
                }
            )
            seeded.append(SeededResult(job_id, sha, character, score, prompt, seed, workflow))
        # One node per output would be the shape of a batch of single renders; a batch node's
        # images share a prompt, so each image gets its own node here to keep prompts apart.
        nodes: dict[str, Any] = {}
        for position, sha in enumerate(images):
            result = seeded[task_index * per_task + position]
            nodes[f"text_to_image_{position + 1}"] = {
                "type": "text_to_image",
                "status": "succeeded",
                "outputs": {"images": [sha]},
                "prompt": result.prompt,
                "negative_prompt": "blurry",
                "preset": "comfyui",
                "characters": [character],
            }
        nodes["consistency_eval_1"] = {
            "type": "consistency_eval",
            "status": "succeeded",
            "outputs": {},
            "scores": scores,
        }
        jobs.append(
            {
                "id": job_id,
                "owner": owner,
                "kind": "workflow",
                "queue": "default",
                "status": "succeeded",
                "input": {"graph": {"nodes": {}}, "workflow": workflow, "cache": False},
                "result": {"order": list(nodes), "nodes": nodes, "outputs": {}},
                "progress_step": 1,
                "progress_total": 1,
                "progress_message": "done",
                "attempts": 1,
                "cancel_requested": False,
                "created_at": made,
                "started_at": made,
                "finished_at": made + timedelta(seconds=5),
                "updated_at": made + timedelta(seconds=5),
            }
        )
    with database.engine.begin() as connection:
        connection.execute(_JOBS.insert(), jobs)
        connection.execute(_OUTPUTS.insert(), outputs)
    return seeded
