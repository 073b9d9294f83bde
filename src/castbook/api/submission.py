"""What the routes that create tasks share: the task's JSON, the preset a request runs on,
queueing a generation, the queue names, how many characters a preset takes. Route modules
import from here, never from each other."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from castbook.api.image_inputs import ResolvedImage, store_images
from castbook.api.services import Services
from castbook.errors import CastbookError, FieldError, NotFoundError
from castbook.generation import Mode, Preset, apply_preset, create_backend, parse_request
from castbook.jobs import Job
from castbook.tasks.generation import GENERATION, generation_job_input

__all__ = [
    "QUEUE_PATTERN",
    "choose_preset",
    "queue_generation",
    "reference_room",
    "room_problem",
    "task_json",
]

QUEUE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,31}$"


def task_json(request: Request, job: Job) -> dict[str, Any]:
    data = job.to_json()
    for output in data["outputs"]:
        output["url"] = str(request.url_for("download_result", sha256=output["id"]))
    data["events_url"] = str(request.url_for("task_events", task_id=job.id))
    return data


def choose_preset(services: Services, preset_id: str | None, mode: Mode) -> Preset:
    catalog = services.presets()
    try:
        return catalog.get(preset_id) if preset_id else catalog.default_for(mode)
    except NotFoundError as exc:
        raise FieldError("preset", str(exc)) from None


def queue_generation(
    services: Services,
    owner: str,
    values: dict[str, Any],
    preset: Preset,
    *,
    queue: str,
    images: list[ResolvedImage],
    extra_input: dict[str, Any] | None = None,
) -> Job:
    """Validate the request against its preset, then write images, the job, and submit it."""
    request = parse_request(values)
    apply_preset(request, preset)
    if request.mode == Mode.T2I and not request.prompt.strip() and not request.characters:
        raise FieldError("prompt", "is empty; describe the picture or choose a character")
    store_images(services, images)
    job_input = generation_job_input(request, preset.id)
    if extra_input:
        job_input.update(extra_input)
    job = services.jobs.create(kind=GENERATION, input=job_input, owner=owner, queue=queue)
    return services.submit(job)


def reference_room(preset: Preset) -> int | None:
    """How many reference images the preset's backend takes; None when it cannot say here
    (the job itself will report what is missing)."""
    try:
        return create_backend(preset).max_references
    except CastbookError:
        return None


def room_problem(preset: Preset, room: int | None, count: int) -> str | None:
    """Why ``count`` characters do not fit the preset (each character's image goes to the
    backend as a reference image); None when they do."""
    if room is None or count <= room:
        return None
    return (
        f"preset {preset.id!r} takes at most {room} reference image(s), one per "
        f"character; {count} character(s) named — use fewer or a preset that takes more"
    )
