"""The ``model_pull`` job kind: download a preset's models on the worker that will use them.

Progress is reported in megabytes (``step``/``total``) with the file being fetched in the
message; cancelling stops the download at its next chunk. A pull that a killed server left
running is re-queued on restart and starts where the cache stands: files that arrived are
kept, only the rest is fetched.
"""

from __future__ import annotations

import math
from typing import Any

from castbook.generation import load_presets
from castbook.jobs import Job, JobContext, JobOutput
from castbook.models import (
    PullProgress,
    SizeBook,
    format_bytes,
    plan_pull,
    preset_parts,
    pull,
)
from castbook.settings import Settings

__all__ = ["MODEL_PULL", "ModelPullJobs", "model_pull_job_input"]

MODEL_PULL = "model_pull"
_MB = 1_000_000


def model_pull_job_input(preset_id: str) -> dict[str, Any]:
    return {"preset": preset_id}


class ModelPullJobs:
    """Handler for model pulls; reads presets.toml of ``settings.home`` for each job."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, job: Job, context: JobContext) -> tuple[list[JobOutput], dict[str, Any]]:
        preset = load_presets(self.settings.home).get(job.input["preset"])
        context.progress(0, 0, "asking the hub what to download")
        plan = plan_pull(preset.id, preset_parts(preset), preset.options)
        SizeBook(self.settings.home).record(plan)

        def progress(event: PullProgress) -> None:
            name = event.filename.rsplit("/", 1)[-1]
            file = min(event.files_done + 1, event.files_total)
            context.progress(
                event.done_bytes // _MB,
                math.ceil(event.total_bytes / _MB),
                f"{format_bytes(event.done_bytes)} of {format_bytes(event.total_bytes)} "
                f"(file {file} of {event.files_total}: {name})",
            )

        pull(plan, progress)
        return [], {
            "preset": preset.id,
            "cache": str(plan.cache),
            "files": len(plan.files),
            "downloaded_bytes": plan.download_bytes,
            "total_bytes": plan.total_bytes,
        }
