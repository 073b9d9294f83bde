"""The face-consistency API users already call: ``POST /getImagetoImage`` and ``POST /getImage``.

Same parameter names and ranges as the original (ARCHITECTURE.md, "Reference facts"):
``app_id`` picks a preset; ``image`` (an http(s) URL or a ``data:`` URI) is the face
reference, fetched without reaching into the server's network, decoded, shrunk to fit
1536×1536 when larger, and used both as the image-to-image start and (when the preset's
backend takes reference images) as the reference; ``celery: true`` answers at once with the
task id, otherwise the call waits for the result. ``inference_type`` picks the job queue.

Both answer ``{time_required, error, error_data, input, output, app_id, task_id, status}``;
``output`` lists the result URLs (``GET /v1/results/{sha256}``, same bearer key).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from castbook.api.auth import CurrentOwner
from castbook.api.image_inputs import resolve_image
from castbook.api.services import AppServices, Services
from castbook.api.submission import choose_preset, queue_generation
from castbook.errors import FieldError
from castbook.generation import GenerationRequest, Mode, Preset, reference_room
from castbook.generation.request import LIMITS, PROMPT_MAX, within
from castbook.jobs import Job

__all__ = [
    "CompatErrorRoute",
    "ImageToImageRequest",
    "TaskQuery",
    "compat_answer",
    "compat_error",
    "follow_reference",
    "router",
    "shape_error",
]


class CompatErrorRoute(APIRoute):
    """Every error answer of these endpoints (validation, auth, not found …) also carries the
    original API's keys, ``error`` and ``error_data`` filled and the others null or empty, so
    a client written for it finds the error where it looks; castbook's own ``type``,
    ``field`` and ``errors`` stay beside them."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(request)
            except Exception as exc:
                answer = _registered_handler(request, exc)
                if answer is None:
                    raise
                return _with_compat_keys(await answer(request, exc))

        return handler


def _registered_handler(request: Request, exc: Exception) -> Any:
    handlers = request.app.exception_handlers
    return next((handlers[k] for k in type(exc).__mro__ if k in handlers), None)


def _with_compat_keys(response: Response) -> Response:
    answer = compat_error(json.loads(bytes(response.body)))
    headers = {k: v for k, v in response.headers.items() if k.lower() == "www-authenticate"}
    return JSONResponse(answer, status_code=response.status_code, headers=headers or None)


PATHS = ("/getImagetoImage", "/getImage")


def shape_error(path: str, problem: dict[str, Any]) -> dict[str, Any]:
    """An error body answered before any route runs (a missing key), dressed as
    :func:`compat_error` when it is for one of these endpoints."""
    return compat_error(problem) if path in PATHS else problem


def compat_error(problem: dict[str, Any]) -> dict[str, Any]:
    """castbook's error body with the original API's keys: ``error`` and ``error_data``
    filled, the others null or empty, castbook's own keys beside them."""
    return {
        "time_required": None,
        "error": problem.get("error"),
        "error_data": {k: v for k, v in problem.items() if k != "error"},
        "input": None,
        "output": [],
        "app_id": None,
        "task_id": None,
        "status": None,
        **problem,
    }


router = APIRouter(tags=["face-consistency API (compatible)"], route_class=CompatErrorRoute)

# castbook's request field -> the compat API's name for it.
_NAMES = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "batch": "batch",
    "height": "height",
    "width": "width",
    "steps": "num_inference_steps",
    "guidance": "guidance_scale",
    "seed": "seed",
}


class ImageToImageRequest(BaseModel):
    """Fields the original API did not have are ignored, as it ignored them."""

    model_config = ConfigDict(extra="ignore")

    app_id: str = Field(min_length=1, max_length=100, description="A preset id.")
    image: str = Field(min_length=1, description="The face reference: http(s) URL or data: URI.")
    prompt: str = Field(default="", max_length=PROMPT_MAX)
    negative_prompt: str = Field(default="", max_length=PROMPT_MAX)
    batch: int = Field(default=1, **within("batch"))
    height: int | None = Field(default=None, **within("height"))
    width: int | None = Field(default=None, **within("width"))
    num_inference_steps: int | None = Field(default=None, **within("steps"))
    guidance_scale: float | None = Field(default=None, **within("guidance"))
    strength: float | None = Field(
        default=None,
        **within("denoise"),
        description="How closely the result follows the face image: 0 loosely, 1 exactly.",
    )
    seed: int | None = Field(default=None, **within("seed"))
    celery: bool = Field(default=False, description="true: answer at once with the task id.")
    inference_type: Literal["a10g", "a100", "h100"] | None = Field(
        default=None, description="The GPU pool (job queue) to run on."
    )


class TaskQuery(BaseModel):
    id: str = Field(min_length=1, max_length=64, description="The task_id to look up.")


def compat_answer(request: Request, job: Job) -> dict[str, Any]:
    return {
        "time_required": job.seconds,
        "error": job.error,
        "error_data": job.error_data,
        "input": job.input.get("compat", job.input.get("request")),
        "output": [
            str(request.url_for("download_result", sha256=output.sha256)) for output in job.outputs
        ],
        "app_id": job.input.get("preset"),
        "task_id": job.id,
        "status": job.status.value,
    }


def follow_reference(strength: float, preset: Preset) -> dict[str, float]:
    """The face-consistency API's ``strength`` (0–1: "a higher strength value results in the
    generated image closely following the reference image") as castbook's request fields:

    - ``denoise = 1 − strength``: how much image to image may change the face image (at 1
      nothing changes, the answer is the reference itself);
    - ``reference_scale = 2 × strength × s``, ``s`` the preset's reference scale (its default
      at strength 0.5, none at 0, twice it at 1, at most 2): how strongly the face steers
      the picture as an identity reference, where the backend takes one.

    Both move toward the reference as ``strength`` rises, for every backend: diffusers and
    ComfyUI take them as img2img strength / KSampler denoise and IP-Adapter scale / weight.
    """
    base = float(preset.defaults.get("reference_scale", _DEFAULT_REFERENCE_SCALE))
    low, high = LIMITS["reference_scale"]
    return {
        "denoise": round(1.0 - strength, 6),
        "reference_scale": round(min(high, max(low, 2.0 * strength * base)), 6),
    }


_DEFAULT_REFERENCE_SCALE = GenerationRequest.model_fields["reference_scale"].default


def _queue(services: Services, owner: str, body: ImageToImageRequest) -> Job:
    try:
        preset = choose_preset(services, body.app_id, Mode.I2I)
    except FieldError as exc:
        raise FieldError("app_id", str(exc).removeprefix("preset: ")) from None
    image = resolve_image(services, owner, body.image, "image")
    sent = body.model_dump(exclude_unset=True)
    values: dict[str, Any] = {
        ours: sent[theirs] for ours, theirs in _NAMES.items() if sent.get(theirs) is not None
    }
    if body.strength is not None:
        values.update(follow_reference(body.strength, preset))
    values["mode"] = Mode.I2I
    values["init_image"] = image.sha256
    if (reference_room(preset) or 0) > 0:  # the face is also the identity reference
        values["references"] = [image.sha256]
    recorded = {**sent, "image": image.source, "image_id": image.sha256}
    if image.resized:
        recorded["image_resized_to"] = [image.prepared.width, image.prepared.height]  # type: ignore[union-attr]
    try:
        return queue_generation(
            services,
            owner,
            values,
            preset,
            queue=body.inference_type or "default",
            images=[image],
            extra_input={"compat": recorded},
        )
    except FieldError as exc:
        name = "app_id" if exc.field == "mode" else _NAMES.get(exc.field, exc.field)
        if exc.field in ("denoise", "reference_scale"):
            name = "strength"  # both come from it
        raise FieldError(name, str(exc).removeprefix(f"{exc.field}: ")) from None


@router.post("/getImagetoImage", summary="Image-to-image with a face reference")
async def get_image_to_image(
    body: ImageToImageRequest, request: Request, owner: CurrentOwner, services: AppServices
) -> dict[str, Any]:
    job = await run_in_threadpool(_queue, services, owner, body)
    if not body.celery:
        job = await _wait(services, job, owner)
    return compat_answer(request, job)


@router.post("/getImage", summary="A task's status and results")
def get_image(
    body: TaskQuery, request: Request, owner: CurrentOwner, services: AppServices
) -> dict[str, Any]:
    return compat_answer(request, services.jobs.get(body.id.strip(), owner))


async def _wait(services: Services, job: Job, owner: str) -> Job:
    """Until the job ends, the configured wait runs out or the server stops (then its state
    as it is)."""
    deadline = time.monotonic() + services.config.wait_seconds
    while not job.done and time.monotonic() < deadline and not services.stopping:
        await anyio.sleep(services.config.events_poll_seconds)
        job = await run_in_threadpool(services.jobs.get, job.id, owner)
    return job
