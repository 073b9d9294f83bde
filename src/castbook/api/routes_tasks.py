"""``/v1/generations``, ``/v1/tasks`` and ``/v1/results``: queue work, follow it, fetch it.

A generation is validated completely (fields and ranges, preset, characters, every image
input) before anything is written; then it becomes a job row and the executor runs it. The
caller gets the task at once (202) and follows it by polling ``GET /v1/tasks/{id}`` or
through the event stream ``GET /v1/tasks/{id}/events``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from castbook.api.auth import CurrentOwner
from castbook.api.image_inputs import ResolvedImage, resolve_image
from castbook.api.services import AppServices, Services
from castbook.api.sse import task_events
from castbook.api.submission import (
    QUEUE_PATTERN,
    character_names,
    choose_preset,
    queue_generation,
    task_json,
)
from castbook.errors import FieldError, NotFoundError
from castbook.generation import GenerationRequest
from castbook.jobs import JobStatus
from castbook.tasks.generation import GENERATION
from castbook.tasks.render import BATCH_RENDER, STORY
from castbook.tasks.workflow import WORKFLOW

__all__ = ["GenerationSubmission", "router"]

router = APIRouter(tags=["tasks"])


class GenerationSubmission(GenerationRequest):
    """A generation request plus where to run it.

    ``characters`` are character ids or names; ``references`` and ``init_image`` are http(s)
    URLs, ``data:`` URIs, or ids (sha256) of your reference images or results.
    """

    preset: str | None = Field(
        default=None, description="Preset id (the compat API's app_id); default: by mode."
    )
    inference_type: str | None = Field(
        default=None,
        pattern=QUEUE_PATTERN,
        description="The queue to run on (a10g, a100, h100 …); default: 'default'.",
    )


def _submission_values(
    services: Services, owner: str, body: GenerationSubmission
) -> tuple[dict[str, Any], list[ResolvedImage]]:
    values = body.model_dump(exclude_unset=True, exclude={"preset", "inference_type"})
    images: list[ResolvedImage] = []
    if body.characters:
        values["characters"] = character_names(services, owner, list(body.characters))
    if body.references:
        resolved = [
            resolve_image(services, owner, ref, f"references.{index}")
            for index, ref in enumerate(body.references)
        ]
        images.extend(resolved)
        values["references"] = [image.sha256 for image in resolved]
    if body.init_image is not None:
        init = resolve_image(services, owner, body.init_image, "init_image")
        images.append(init)
        values["init_image"] = init.sha256
    return values, images


@router.post("/generations", status_code=202, summary="Queue a generation")
def create_generation(
    request: Request, owner: CurrentOwner, services: AppServices, body: GenerationSubmission
) -> JSONResponse:
    """Answers 202 with the task at once; the task's ``events_url`` streams its progress."""
    preset = choose_preset(services, body.preset, body.mode)
    values, images = _submission_values(services, owner, body)
    job = queue_generation(
        services, owner, values, preset, queue=body.inference_type or "default", images=images
    )
    return JSONResponse(
        task_json(request, job),
        status_code=202,
        headers={"Location": str(request.url_for("get_task", task_id=job.id))},
    )


# Polling and listing are the hottest requests: they run on the event loop (one indexed read
# each, no thread hop). Reads never wait for a writer (SQLite WAL, PostgreSQL MVCC).
@router.get("/tasks", summary="List your tasks, newest first")
async def list_tasks(
    request: Request,
    response: Response,
    owner: CurrentOwner,
    services: AppServices,
    status: Annotated[JobStatus | None, Query(description="Only tasks in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(description="Where the previous page ended (its Link: rel=next).")
    ] = None,
) -> list[dict[str, Any]]:
    """A full page links the next one (``Link: <…>; rel="next"``, RFC 8288): it starts after
    this page's last task, whatever was queued or deleted meanwhile."""
    jobs = services.jobs.list(
        owner, limit=limit, status=status.value if status else None, after=_position(cursor)
    )
    if len(jobs) == limit:
        last = jobs[-1]
        following = request.url.include_query_params(
            cursor=f"{(last.created_at - _EPOCH) // _MICROSECOND}-{last.id}"
        )
        response.headers["Link"] = f'<{following}>; rel="next"'
    return [task_json(request, job) for job in jobs]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _position(cursor: str | None) -> tuple[datetime, str] | None:
    """A task list cursor (``<microseconds since 1970>-<task id>``) as ``(created_at, id)``."""
    if not cursor:
        return None
    micros, _, job_id = cursor.partition("-")
    if micros.isdigit() and len(micros) <= 18 and job_id.isalnum() and len(job_id) <= 64:
        try:
            return _EPOCH + int(micros) * _MICROSECOND, job_id
        except OverflowError:  # past the year 9999
            pass
    raise FieldError("cursor", f"is not a cursor of this list: {cursor[:80]!r}")


@router.get("/tasks/{task_id}", name="get_task", summary="A task's status, progress and results")
async def get_task(
    task_id: str, request: Request, owner: CurrentOwner, services: AppServices
) -> dict[str, Any]:
    return task_json(request, services.jobs.get(task_id, owner))


@router.post("/tasks/{task_id}/cancel", summary="Cancel a task")
def cancel_task(
    task_id: str, request: Request, owner: CurrentOwner, services: AppServices
) -> dict[str, Any]:
    """A queued task is cancelled at once, a running one after its current step; a finished
    task is left as it is."""
    return task_json(request, services.jobs.cancel(task_id, owner))


# What "run it again with the same settings" copies: the kinds whose stored input is the whole
# request. A model pull or a LoRA training is started again from its own route instead.
RERUNNABLE = (GENERATION, BATCH_RENDER, STORY, WORKFLOW)


@router.post(
    "/tasks/{task_id}/rerun",
    status_code=202,
    summary="Queue a task again with the same settings",
)
def rerun_task(
    task_id: str, request: Request, owner: CurrentOwner, services: AppServices
) -> dict[str, Any]:
    """A new task of the same kind, with the same stored input (the request as it was
    resolved when first submitted: the same seed, so the same pictures from the same model)
    on the same queue; ``rerun_of`` names the original. Generations, batch renders, stories
    and workflows; characters are found again by name when it runs (a deleted one fails the
    new task with its name). Counts against the queued-task quota like any submit."""
    job = services.jobs.get(task_id, owner)
    if job.kind not in RERUNNABLE:
        kinds = ", ".join(RERUNNABLE)
        raise FieldError("task_id", f"a {job.kind} task cannot be re-run here (only {kinds})")
    again = services.jobs.create(kind=job.kind, input=job.input, owner=owner, queue=job.queue)
    return {**task_json(request, services.submit(again)), "rerun_of": job.id}


@router.get(
    "/tasks/{task_id}/events",
    name="task_events",
    summary="Server-sent events: the task's progress until it ends",
    response_class=StreamingResponse,
)
async def stream_task_events(
    task_id: str, request: Request, owner: CurrentOwner, services: AppServices
) -> StreamingResponse:
    await run_in_threadpool(services.jobs.get, task_id, owner)  # 404 before the stream starts
    events = task_events(
        services.task_watch(),
        task_id,
        owner,
        lambda job: task_json(request, job),
        keepalive=services.config.events_keepalive_seconds,
    )
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/results/{sha256}",
    name="download_result",
    summary="Download a result image or video",
    response_class=FileResponse,
    responses={
        307: {
            "description": "with object storage and `CASTBOOK_BLOB_PRESIGN` set: "
            "a short-lived presigned URL to fetch the result from"
        }
    },
)
def download_result(sha256: str, owner: CurrentOwner, services: AppServices) -> Response:
    """Only results that one of your tasks produced."""
    output = services.output_of(owner, sha256.lower())
    if output is None or not services.blobs.exists(output.sha256):
        raise NotFoundError(f"no result {sha256[:16]} among your tasks")
    extension = {
        "image/png": "png",
        "video/mp4": "mp4",
        "application/pdf": "pdf",
        "text/html": "html",
    }.get(output.media_type, "bin")
    filename = f"{output.sha256[:16]}.{extension}"
    seconds = services.settings.blob_presign
    if seconds:
        # The owner check above is the authorisation; the URL only lets this caller fetch
        # the bytes from the object store directly for a short while.
        url = services.blobs.presigned_url(
            output.sha256, seconds, media_type=output.media_type, filename=filename
        )
        if url is not None:
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    return FileResponse(
        services.blobs.local_path(output.sha256),
        media_type=output.media_type,
        filename=filename,
        content_disposition_type="inline",
    )
