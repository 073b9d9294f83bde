"""``POST /v1/identify``: which of the caller's characters each image shows.

Images come as ``multipart/form-data`` uploads (field ``image``, repeatable) or as JSON
``{"images": [...], "top": 3}`` whose items are http(s) URLs, ``data:`` URIs or ids of the
caller's stored images, as elsewhere in the API. Only the caller's own characters are
searched. The query images' features are computed in the evaluation workers; the search
reads the stored index (docs/evaluation.md, *Identity search*).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from castbook.api.auth import CurrentOwner
from castbook.api.services import AppServices, Services
from castbook.errors import FieldError
from castbook.images import MAX_FILE_BYTES

__all__ = ["router"]

router = APIRouter(tags=["identify"])

MAX_IMAGES = 16
MAX_TOP = 50
_MP = 1_000_000


@router.post(
    "/identify",
    summary="Which characters an image shows",
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "image": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                            },
                            "top": {"type": "integer", "default": 3},
                        },
                        "required": ["image"],
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "images": {"type": "array", "items": {"type": "string"}},
                            "top": {"type": "integer", "default": 3},
                        },
                        "required": ["images"],
                    }
                },
            },
            "required": True,
        }
    },
)
async def identify(request: Request, owner: CurrentOwner, services: AppServices) -> dict[str, Any]:
    """Each image gets its ``top`` characters (1–50, default 3), best first, each with the
    0–100 score of ``POST /v1/evaluations`` against that character, and ``character``: the
    best one when it reaches the open-set threshold, else ``null`` ("no known character";
    ``known`` is false). An unreadable image gets ``error``; the others are still answered."""
    from castbook.evaluation.pool import FeaturesRequest

    images, top = await _read_request(request, services, owner)
    library = services.library(owner)
    if not await run_in_threadpool(_has_references, library):
        raise FieldError(
            "image", "you have no character with a reference image to identify against"
        )
    pool = services.evaluations()
    features_request = FeaturesRequest(
        images=tuple(data for data, _ in images),
        names=tuple(name for _, name in images),
        pixel_budget=services.settings.eval_pixel_budget * _MP,
    )
    outcome = await asyncio.wrap_future(pool.submit(owner, features_request))
    answers = await run_in_threadpool(_search, services, owner, images, outcome, top)
    return {"results": [answer.to_json() for answer in answers]}


def _has_references(library: Any) -> bool:
    from castbook.library.identity_vectors import has_other_references

    return has_other_references(library)


def _search(
    services: Services, owner: str, images: list[tuple[bytes, str]], outcome: Any, top: int
) -> list[Any]:
    from castbook.api.identity import PoolFeatures
    from castbook.errors import CastbookError
    from castbook.evaluation.features import ImageFeatures
    from castbook.evaluation.identity_search import IdentitySearch

    search = IdentitySearch(services.library(owner), PoolFeatures(services, owner), outcome.key)
    queries: list[tuple[str, ImageFeatures | CastbookError]] = [
        (name, ImageFeatures.from_json(features) if features is not None else CastbookError(error))
        for (_, name), features, error in zip(images, outcome.features, outcome.errors, strict=True)
    ]
    return search.identify(queries, top)


async def _read_request(
    request: Request, services: Services, owner: str
) -> tuple[list[tuple[bytes, str]], int]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        return await _read_json(request, services, owner)
    if kind == "multipart/form-data":
        return await _read_form(request)
    raise FieldError("body", 'send multipart/form-data (field image) or JSON {"images": [...]}')


async def _read_form(request: Request) -> tuple[list[tuple[bytes, str]], int]:
    form = await request.form(max_files=MAX_IMAGES + 1)
    uploads = [item for item in form.getlist("image") if isinstance(item, UploadFile)]
    _check_count(len(uploads))
    images = [
        (await upload.read(MAX_FILE_BYTES + 1), upload.filename or f"image {index + 1}")
        for index, upload in enumerate(uploads)
    ]
    raw_top = form.get("top")
    return images, _top(raw_top if isinstance(raw_top, str) else None)


async def _read_json(
    request: Request, services: Services, owner: str
) -> tuple[list[tuple[bytes, str]], int]:
    from castbook.api.image_inputs import resolve_image

    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        raise FieldError("body", "is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("images"), list):
        raise FieldError("images", "give a list of images: URLs, data: URIs or stored ids")
    unknown = sorted(set(body) - {"images", "top"})
    if unknown:
        raise FieldError(unknown[0], "unknown field; send images and top")
    values = body["images"]
    _check_count(len(values))
    images = []
    for index, value in enumerate(values):
        field = f"images.{index}"
        resolved = await run_in_threadpool(resolve_image, services, owner, value, field)
        data = (
            resolved.prepared.data
            if resolved.prepared is not None
            else services.blobs.get(resolved.sha256)
        )
        images.append((data, field))
    top = body.get("top", 3)
    if isinstance(top, bool) or not isinstance(top, int):
        raise FieldError("top", f"must be a whole number between 1 and {MAX_TOP}")
    return images, _top(str(top))


def _check_count(count: int) -> None:
    if count == 0:
        raise FieldError("image", "give at least one image to identify")
    if count > MAX_IMAGES:
        raise FieldError("image", f"at most {MAX_IMAGES} images per call, got {count}")


def _top(raw: str | None) -> int:
    if raw is None or raw == "":
        return 3
    try:
        top = int(raw)
    except ValueError:
        raise FieldError("top", f"must be a whole number between 1 and {MAX_TOP}") from None
    if not 1 <= top <= MAX_TOP:
        raise FieldError("top", f"must be between 1 and {MAX_TOP}, got {top}")
    return top
