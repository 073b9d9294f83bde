"""``/v1/models``: each preset's models on this server, and pulling or removing them.

Reading is open to every key; pulling and removing change the server and need an admin key
(``castbook keys create --admin``). A pull is a task like any other: ``GET /v1/tasks/{id}``
and its event stream show the progress (megabytes), ``POST /v1/tasks/{id}/cancel`` stops it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from castbook.api.auth import AdminOwner
from castbook.api.services import AppServices
from castbook.api.submission import task_json
from castbook.errors import FieldError
from castbook.models import SizeBook, models_of, preset_parts, remove_preset
from castbook.tasks import MODEL_PULL, model_pull_job_input

__all__ = ["router"]

router = APIRouter(prefix="/models", tags=["models"])


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inference_type: str | None = Field(
        None, max_length=64, description="The worker queue that should download it."
    )


@router.get("", summary="Every preset's models: state, sizes, parts")
def list_models(services: AppServices) -> list[dict[str, Any]]:
    """Read from this server's Hugging Face cache only (milliseconds, never the network);
    ``download_size`` is known once the hub was asked (a pull, or `castbook models list`)."""
    sizes = SizeBook(services.settings.home)
    return [models_of(preset, sizes).to_json() for preset in services.presets()]


@router.get("/{preset_id}", summary="One preset's models")
def show_models(preset_id: str, services: AppServices) -> dict[str, Any]:
    preset = services.presets().get(preset_id)
    return models_of(preset, SizeBook(services.settings.home)).to_json()


@router.post(
    "/{preset_id}/pull",
    status_code=202,
    summary="Download a preset's models (admin keys only); answers a task",
)
def pull_models(
    preset_id: str,
    request: Request,
    services: AppServices,
    owner: AdminOwner,
    body: PullRequest | None = None,
) -> dict[str, Any]:
    preset = services.presets().get(preset_id)
    parts = preset_parts(preset)
    if not parts:
        raise FieldError(
            "preset", f"preset {preset.id!r} runs on the {preset.backend} backend: nothing to pull"
        )
    if not any(part.is_hub for part in parts):
        raise FieldError(
            "preset", f"preset {preset.id!r} loads local folders only: nothing to pull"
        )
    queue = (body.inference_type if body else None) or "default"
    job = services.jobs.create(
        kind=MODEL_PULL, input=model_pull_job_input(preset.id), owner=owner, queue=queue
    )
    services.submit(job)
    return task_json(request, job)


@router.delete("/{preset_id}", summary="Remove a preset's downloaded models (admin keys only)")
def delete_models(preset_id: str, services: AppServices, owner: AdminOwner) -> dict[str, Any]:
    """Files another preset loads stay; local folders are never touched."""
    catalog = services.presets()
    preset = catalog.get(preset_id)
    removed, freed = remove_preset(preset, list(catalog))
    return {"preset": preset.id, "removed": removed, "freed_bytes": freed}
