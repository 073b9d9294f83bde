"""What the routes that create tasks share: the task's JSON, the preset a request runs on,
queueing a generation, the queue names. Route modules
import from here, never from each other."""

from __future__ import annotations

import functools
from typing import Any

from fastapi import Request

from castbook.api.image_inputs import ResolvedImage, store_images
from castbook.api.services import Services
from castbook.errors import FieldError, NotFoundError
from castbook.generation import (
    GenerationRequest,
    Mode,
    Preset,
    request_room_problem,
    resolve_request,
)
from castbook.jobs import Job
from castbook.tasks.generation import GENERATION, generation_job_input

__all__ = [
    "QUEUE_PATTERN",
    "character_names",
    "choose_preset",
    "queue_generation",
    "task_json",
]

QUEUE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,31}$"


def task_json(request: Request, job: Job) -> dict[str, Any]:
    data = job.to_json()
    results, events = _task_urls(request.app, str(request.base_url))
    for output in data["outputs"]:
        output["url"] = results.replace(_MARK, output["id"])
    data["events_url"] = events.replace(_MARK, job.id)
    return data


_MARK = "0task0"  # stands for an id in a URL template; ids are hex, so it never occurs


@functools.lru_cache(maxsize=64)
def _task_urls(app: Any, base_url: str) -> tuple[str, str]:
    """The URLs of a result and of a task's events with a mark for the id, per base URL
    (what ``request.url_for`` makes, but it walks every route each call: a poll paid that
    once per output)."""
    results = app.url_path_for("download_result", sha256=_MARK)
    events = app.url_path_for("task_events", task_id=_MARK)
    return (
        str(results.make_absolute_url(base_url)),
        str(events.make_absolute_url(base_url)),
    )


def character_names(services: Services, owner: str, refs: list[str]) -> list[str]:
    """The names of the owner's characters ``refs`` (ids or names) name, in order; one that
    is not there is a 422 naming its place in the ``characters`` field."""
    library = services.library(owner)
    names = []
    for index, ref in enumerate(refs):
        try:
            names.append(library.find(ref).name)
        except NotFoundError:
            raise FieldError(f"characters.{index}", f"no character {ref!r}") from None
    return names


def choose_preset(services: Services, preset_id: str | None, mode: Mode) -> Preset:
    catalog = services.presets()
    try:
        return catalog.get(preset_id) if preset_id else catalog.default_for(mode)
    except NotFoundError as exc:
        raise FieldError("preset", str(exc)) from None


def _check_room(services: Services, owner: str, request: GenerationRequest, preset: Preset) -> None:
    """Refuse (422) more pictures than the preset's backend takes, naming its cap: without
    this the task was accepted and failed when it ran (a character sends its primary
    reference image; one without images sends none)."""
    pictured = 0
    if request.characters:
        library = services.library(owner)
        pictured = sum(library.find(name).primary_image is not None for name in request.characters)
    problem = request_room_problem(preset, request, pictured)
    if problem is not None:
        raise FieldError("characters" if pictured else "references", problem)


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
    """Resolve the request against its preset (the one check it gets), then write images,
    the job (the request stored resolved), and submit it."""
    request = resolve_request(values, preset)
    _check_room(services, owner, request, preset)
    store_images(services, images)
    job_input = generation_job_input(request, preset.id)
    if extra_input:
        job_input.update(extra_input)
    job = services.jobs.create(kind=GENERATION, input=job_input, owner=owner, queue=queue)
    return services.submit(job)
