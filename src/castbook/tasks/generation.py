"""The ``generation`` job kind: run a GenerationRequest and keep its outputs as blobs."""

from __future__ import annotations

from typing import Any

from castbook.blobs import Blobs
from castbook.db import Database
from castbook.generation import (
    Backend,
    BackendPool,
    GenerationRequest,
    Mode,
    Preset,
    load_presets,
    prepare_request,
    resolve_request,
    run_generation,
)
from castbook.generation.outputs import encode_mp4, encode_png, generation_parameters
from castbook.jobs import Job, JobContext, JobOutput
from castbook.library import CharacterLibrary
from castbook.settings import Settings

__all__ = ["GENERATION", "GenerationJobs", "generation_job_input"]

GENERATION = "generation"


def generation_job_input(request: GenerationRequest, preset_id: str) -> dict[str, Any]:
    """What a generation job row stores: the request as :func:`resolve_request` resolved it
    against the preset (ids, never pixels), and the preset. Workers trust it as stored."""
    return {
        "request": request.model_dump(mode="json", exclude_unset=True),
        "preset": preset_id,
        "resolved": True,
    }


def stored_request(job_input: dict[str, Any], preset: Preset) -> GenerationRequest:
    """A generation job's request as submitted. A row written before requests were stored
    resolved (no ``resolved`` mark) is resolved now, as its submission did then."""
    values = dict(job_input["request"])
    if "strength" in values:  # stored before it was renamed: the same value, diffusers' sense
        values["denoise"] = values.pop("strength")
    if job_input.get("resolved"):
        return GenerationRequest.model_validate(values)
    return resolve_request(values, preset)


class GenerationJobs:
    """Handler for generation jobs. Keeps backends (and their loaded models) between jobs, in
    a :class:`BackendPool` the other job kinds of the process share."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        blobs: Blobs,
        backends: BackendPool | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.blobs = blobs
        self.backends = backends if backends is not None else BackendPool()

    def backend(self, preset: Preset) -> Backend:
        """The backend for ``preset``, kept between jobs (it holds the loaded model)."""
        return self.backends.get(preset)

    def __call__(self, job: Job, context: JobContext) -> tuple[list[JobOutput], dict[str, Any]]:
        preset = load_presets(self.settings.home).get(job.input["preset"])
        request = stored_request(job.input, preset)
        library = CharacterLibrary(self.database, self.blobs, owner=job.owner)
        prepared = prepare_request(request, preset, library=library)
        context.progress(0, request.steps, "loading model")
        result = run_generation(
            self.backend(preset),
            prepared,
            lambda event: context.progress(event.step, event.total, event.message),
        )
        outputs: list[JobOutput] = []
        seeds = result.image_seeds()
        for index, image in enumerate(result.images):
            data = encode_png(image, generation_parameters(prepared, result, index))
            sha = self.blobs.put(data)[0]
            seed = seeds[index]
            outputs.append(JobOutput(sha, "image", "image/png", image.width, image.height, seed))
        for video in result.videos:
            sha = self.blobs.put(encode_mp4(video))[0]
            width, height = video.frames[0].size
            outputs.append(JobOutput(sha, "video", "video/mp4", width, height, result.seed))
        summary = {
            "seed": result.seed,
            "prompt": prepared.prompt,
            "negative_prompt": prepared.negative_prompt,
            "mode": request.mode.value if isinstance(request.mode, Mode) else request.mode,
            "preset": preset.id,
            "metadata": {k: v for k, v in result.metadata.items() if _plain(v)},
        }
        if "loras" in result.metadata:
            summary["loras"] = result.metadata["loras"]
        if "lora_notes" in result.metadata:
            summary["lora_notes"] = result.metadata["lora_notes"]
        return outputs, summary


def _plain(value: object) -> bool:
    return isinstance(value, str | int | float | bool) or value is None
