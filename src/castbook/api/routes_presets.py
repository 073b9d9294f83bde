"""``/v1/presets``: the presets (``app_id``) this server offers, for pickers in clients.

Each preset's id, backend, modes, description, default fields and whether its models are on
this server (``models``: state, runnable, sizes). Model paths and backend options stay on
the server: they can name local folders and credentials.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from castbook.api.services import AppServices
from castbook.errors import NotFoundError
from castbook.generation import Mode, reference_room
from castbook.models import PresetModels, SizeBook, models_of

__all__ = ["router"]

router = APIRouter(prefix="/presets", tags=["presets"])


@router.get("", summary="List the presets (app_id) this server offers")
def list_presets(services: AppServices) -> list[dict[str, Any]]:
    """Sorted by id; ``default_for`` names the modes for which a preset is the default."""
    catalog = services.presets()
    sizes = SizeBook(services.settings.home)
    defaults: dict[str, list[str]] = {}
    for mode in Mode:
        try:
            defaults.setdefault(catalog.default_for(mode).id, []).append(mode.value)
        except NotFoundError:  # no preset does this mode
            continue
    return [
        {
            "id": preset.id,
            "backend": preset.backend,
            "modes": [mode.value for mode in preset.modes],
            "description": preset.description,
            "defaults": preset.defaults,
            "default_for": defaults.get(preset.id, []),
            "source": preset.source,
            "models": _models(models_of(preset, sizes)),
            # How many reference images (one per character) its backend takes: pickers do
            # not offer a preset that takes none to a node with characters. None: cannot
            # tell before it runs.
            "max_references": reference_room(preset),
        }
        for preset in catalog
    ]


def _models(models: PresetModels) -> dict[str, Any]:
    """What a picker shows: the state and sizes, and which parts are missing (not paths)."""
    return {
        "state": models.state,
        "runnable": models.runnable,
        "size_on_disk": models.size_on_disk,
        "download_size": models.download_size,
        "missing_size": models.missing_size,
        "size_estimated": models.estimated,
        "pullable": models.pullable,
        "missing": [status.part.role for status in models.parts if not status.ready],
        "missing_packages": list(models.missing_packages),
        "install": models.install_command,
    }
