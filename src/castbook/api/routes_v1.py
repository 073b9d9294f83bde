"""The native REST API under ``/v1``; every route needs a bearer API key."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from castbook.api import (
    routes_characters,
    routes_evaluations,
    routes_gallery,
    routes_identify,
    routes_models,
    routes_presets,
    routes_prompt,
    routes_providers,
    routes_render,
    routes_tasks,
    routes_workflows,
)
from castbook.api.auth import require_owner

__all__ = ["router"]

router = APIRouter(prefix="/v1", dependencies=[Depends(require_owner)])
router.include_router(routes_characters.router)
router.include_router(routes_tasks.router)
router.include_router(routes_gallery.router)
router.include_router(routes_prompt.router)
router.include_router(routes_evaluations.router)
router.include_router(routes_identify.router)
router.include_router(routes_render.router)
router.include_router(routes_workflows.router)
router.include_router(routes_presets.router)
router.include_router(routes_models.router)
router.include_router(routes_providers.router)
