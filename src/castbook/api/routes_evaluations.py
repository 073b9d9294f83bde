"""``POST /v1/evaluations``: score images 0–100 against one of the caller's characters.

The scoring runs in the app's evaluation worker processes (``Services.evaluations``), never in
the process serving HTTP: owners take turns there (one request each in the workers at a time,
round-robin), so one owner's large request cannot hold another's small one. The request
waits for its turn without holding a server thread. Before it queues, its frame × pixel
budget (``CASTBOOK_EVAL_PIXEL_BUDGET``) is checked from the uploads' headers, so an animated
upload that would decode too much is refused with a 422 at once; the worker checks again
(MP4/MKV clips are counted there, by ffmpeg) and while it decodes.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from castbook.api.auth import CurrentOwner
from castbook.api.services import AppServices, Services
from castbook.errors import FieldError
from castbook.images import MAX_FILE_BYTES
from castbook.library import Character, CharacterLibrary

__all__ = ["router"]

router = APIRouter(tags=["evaluation"])

MAX_CANDIDATES = 32
_MP = 1_000_000


@router.post("/evaluations", summary="Score images against a character")
async def evaluate(
    owner: CurrentOwner,
    services: AppServices,
    character: Annotated[str, Form(description="The character's id or name.")],
    image: Annotated[
        list[UploadFile] | None, File(description="Images (or videos) to score (repeatable).")
    ] = None,
    result: Annotated[
        list[str] | None, Form(description="Ids (sha256) of your results to score (repeatable).")
    ] = None,
) -> dict[str, Any]:
    """Each candidate gets a headline score and its components (see docs/evaluation.md);
    ``most_consistent`` names the best one. A request whose candidates would decode more
    frames × pixels than ``CASTBOOK_EVAL_PIXEL_BUDGET`` megapixels is refused with 422."""
    from castbook.evaluation import most_consistent

    uploads = image or []
    results = result or []
    count = len(uploads) + len(results)
    if count == 0:
        raise FieldError("image", "give at least one image to score (image or result)")
    if count > MAX_CANDIDATES:
        raise FieldError("image", f"at most {MAX_CANDIDATES} candidates per call, got {count}")
    files = [
        (upload.filename or f"image {index + 1}", await upload.read(MAX_FILE_BYTES + 1))
        for index, upload in enumerate(uploads)
    ]
    chosen, library, request = await run_in_threadpool(
        _prepare, services, owner, character, files, results
    )
    pool = services.evaluations()
    outcome = await asyncio.wrap_future(pool.submit(owner, request))
    if outcome.computed:
        await run_in_threadpool(_keep_features, library, chosen, outcome.key, outcome.computed)
    best = most_consistent(outcome.scores)
    return {
        "character": {"id": chosen.id, "name": chosen.name},
        "scores": [score.to_json() for score in outcome.scores],
        "most_consistent": best.source if best else None,
    }


def _prepare(
    services: Services,
    owner: str,
    character: str,
    files: list[tuple[str, bytes]],
    results: list[str],
) -> tuple[Character, CharacterLibrary, Any]:
    """The character, the candidates' bytes and the references, checked against the budget
    from the candidates' headers (nothing is decoded here)."""
    from castbook.evaluation.budget import check_budget
    from castbook.evaluation.pool import EvaluationRequest

    library = services.library(owner)
    chosen = library.find(character)
    if not chosen.images:
        raise FieldError("character", f"{chosen.name} has no reference images to score against")
    candidates = [data for _, data in files]
    names = [name for name, _ in files]
    for index, sha in enumerate(results):
        output = services.output_of(owner, sha.strip().lower())
        if output is None:
            raise FieldError(f"result.{index}", f"no result {sha[:16]} among your tasks")
        candidates.append(services.blobs.get(output.sha256))
        names.append(output.sha256)
    budget = services.settings.eval_pixel_budget * _MP
    # MP4/MKV clips are counted by the worker (that runs ffmpeg); the rest from headers here.
    check_budget(candidates, names, budget, probe_clips=False)
    return (
        chosen,
        library,
        EvaluationRequest(
            candidates=tuple(candidates),
            names=tuple(names),
            references=tuple(_references(library, chosen, services.evaluations().key)),
            pixel_budget=budget,
        ),
    )


def _references(library: CharacterLibrary, character: Character, key: str | None) -> list[Any]:
    """Each reference image's stored features for the workers' feature key, or its bytes
    when none are stored (or the key is not known yet: no worker has answered)."""
    from castbook.evaluation.pool import ReferenceInput

    label = f"{character.name} reference"
    references = []
    for image in character.images:
        stored = library.stored_features(image, key) if key is not None else None
        if stored is not None:
            references.append(ReferenceInput(label, features=stored))
        else:
            references.append(ReferenceInput(label, data=library.image_bytes(image)))
    return references


def _keep_features(
    library: CharacterLibrary, character: Character, key: str, computed: dict[int, Any]
) -> None:
    """Store the reference features a worker computed, so later requests send them instead
    of the images (they are filed by the image's sha256, as character_reference_features
    files them)."""
    for index, payload in computed.items():
        library.store_features(character.images[index], key, payload)
