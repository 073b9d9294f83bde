"""``POST /v1/evaluations``: score images 0–100 against one of the caller's characters.

Synchronous: a handful of images is scored in well under a second (the first call also
loads the face model). Candidates are uploaded files and/or ids of the caller's results.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile

from castbook.api.auth import CurrentOwner
from castbook.api.services import AppServices, Services
from castbook.errors import FieldError
from castbook.images import MAX_FILE_BYTES
from castbook.library import Character, CharacterLibrary

__all__ = ["router"]

router = APIRouter(tags=["evaluation"])

MAX_CANDIDATES = 32


@router.post("/evaluations", summary="Score images against a character")
def evaluate(
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
    ``most_consistent`` names the best one."""
    from castbook.evaluation import most_consistent

    uploads = image or []
    results = result or []
    count = len(uploads) + len(results)
    if count == 0:
        raise FieldError("image", "give at least one image to score (image or result)")
    if count > MAX_CANDIDATES:
        raise FieldError("image", f"at most {MAX_CANDIDATES} candidates per call, got {count}")
    library = services.library(owner)
    chosen = library.find(character)
    if not chosen.images:
        raise FieldError("character", f"{chosen.name} has no reference images to score against")
    candidates: list[bytes] = []
    names: list[str] = []
    for index, upload in enumerate(uploads):
        data = upload.file.read(MAX_FILE_BYTES + 1)
        candidates.append(data)
        names.append(upload.filename or f"image {index + 1}")
    for index, sha in enumerate(results):
        output = services.output_of(owner, sha.strip().lower())
        if output is None:
            raise FieldError(f"result.{index}", f"no result {sha[:16]} among your tasks")
        candidates.append(services.blobs.get(output.sha256))
        names.append(output.sha256)
    scorer = services.scorer()
    with services.scoring_lock:
        references = _references(services, library, chosen)
        scores = scorer.score(references, candidates, names=names, workers=1)
    best = most_consistent(scores)
    return {
        "character": {"id": chosen.id, "name": chosen.name},
        "scores": [score.to_json() for score in scores],
        "most_consistent": best.source if best else None,
    }


def _references(services: Services, library: CharacterLibrary, character: Character) -> list:
    from castbook.render.references import character_reference_features

    return character_reference_features(library, services.scorer(), character)
