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
from castbook.generation import Mode
from castbook.models import SizeBook, models_of

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
            "models": _models(models_of(preset, sizes).to_json()),
        }
        for preset in catalog
    ]


def _models(report: dict[str, Any]) -> dict[str, Any]:
    """What a picker shows: the state and sizes, and which parts are missing (not paths)."""
    return {
        "state": report["state"],
        "runnable": report["runnable"],
        "size_on_disk": report["size_on_disk"],
        "download_size": report["download_size"],
        "missing_size": report["missing_size"],
        "size_estimated": report["size_estimated"],
        "pullable": report["pull"] is not None,
        "missing": [p["role"] for p in report["parts"] if p["state"] not in _READY],
    }


_READY = ("installed", "local folder")
