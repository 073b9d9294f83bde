"""``/v1/characters``: the caller's character library over HTTP.

A character is addressed by its id or, for convenience, its name (ignoring case). Fields are
sent as JSON; reference images are uploaded as ``multipart/form-data``.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import Response as RawResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from castbook.api.auth import CurrentOwner
from castbook.api.identity import check_lookalikes, warnings_header
from castbook.api.services import AppServices, Services
from castbook.api.submission import task_json
from castbook.errors import FieldError, NotFoundError
from castbook.images import MAX_FILE_BYTES, PreparedImage
from castbook.library import (
    Character,
    ExportFormat,
    ImageInput,
    ImportReport,
    export_characters,
    import_document,
)
from castbook.library.cards import MAX_CARD_FILE_BYTES
from castbook.library.exchange import export_card, import_card_bytes, lora_warnings
from castbook.library.models import FIELD_SECTIONS, FORM_FIELDS, FieldInfo

if TYPE_CHECKING:
    from castbook.extract.schema import Extraction

__all__ = ["CharacterCreate", "CharacterPatch", "character_json", "router"]

router = APIRouter(prefix="/characters", tags=["characters"])

MAX_UPLOADS = 16


class _Physical(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hair: str | None = None
    eyes: str | None = None
    face: str | None = None
    body: str | None = None
    skin: str | None = None


class _CharacterFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    style_prompt: str | None = None
    negative_prompt: str | None = None
    description: str | None = None
    hair: str | None = None
    eyes: str | None = None
    face: str | None = None
    body: str | None = None
    skin: str | None = None
    physical: _Physical | None = None
    clothing: str | None = None
    accessories: list[str] | None = None
    distinctive_features: list[str] | None = None
    tags: list[str] | None = None

    def changes(self) -> dict[str, object]:
        """The fields the client sent, flat (``physical.hair`` becomes ``hair``)."""
        values = self.model_dump(exclude_unset=True, exclude={"physical", "primary_image"})
        if self.physical is not None:
            values.update(self.physical.model_dump(exclude_unset=True))
        return values


class CharacterCreate(_CharacterFields):
    name: str


class CharacterPatch(_CharacterFields):
    name: str | None = None
    primary_image: str | None = None  # sha256 (or a unique prefix, or a 1-based position)


def character_json(request: Request, character: Character) -> dict[str, Any]:
    data = character.model_dump(mode="json")
    primary = character.primary_image
    data["primary_image"] = primary.sha256 if primary else None
    for image in data["images"]:
        image["url"] = str(
            request.url_for("character_image", ref=character.id, sha256=image["sha256"])
        )
        image["thumbnail_url"] = image["url"] + "?thumbnail=true"
    return data


@router.get("", summary="List characters")
def list_characters(
    request: Request,
    owner: CurrentOwner,
    services: AppServices,
    tag: Annotated[str | None, Query(description="Only characters with this tag.")] = None,
) -> list[dict[str, Any]]:
    characters = services.library(owner).list()
    if tag:
        wanted = tag.casefold()
        characters = [c for c in characters if wanted in (t.casefold() for t in c.tags)]
    return [character_json(request, c) for c in characters]


class CharacterFieldList(BaseModel):
    fields: list[FieldInfo]
    sections: dict[str, str]


@router.get("/fields", summary="The editable fields, as a form shows them")
def character_fields() -> CharacterFieldList:
    """Every field a character can be created or changed with, in form order: its label, its
    kind of input (``text``, ``long_text`` or ``list``), its group (``physical``: nested under
    ``physical`` in a character), the section it is shown under (``sections`` names them), its
    limits and, for a list, how its text is split."""
    return CharacterFieldList(fields=list(FORM_FIELDS), sections=dict(FIELD_SECTIONS))


@router.post("", status_code=201, summary="Create a character")
def create_character(
    request: Request, owner: CurrentOwner, services: AppServices, body: CharacterCreate
) -> dict[str, Any]:
    """Create a character from its fields; add reference images with
    ``POST /v1/characters/{ref}/images``."""
    values = body.changes()
    values["name"] = body.name
    character = services.library(owner).create(values)
    return character_json(request, character)


@router.get(
    "/export",
    summary="Export characters as JSON (images included), or one as a character card",
    response_model=None,
)
def export(
    owner: CurrentOwner,
    services: AppServices,
    response: Response,
    format: Annotated[
        ExportFormat,
        Query(description="castbook, nbp, card (a PNG character card) or card-json"),
    ] = ExportFormat.CASTBOOK,
    id: Annotated[
        list[str] | None, Query(description="Character ids or names (repeatable); all if none.")
    ] = None,
) -> dict[str, Any] | RawResponse:
    """``card`` and ``card-json`` hold one character: name it with ``id``. ``card`` answers
    ``image/png`` (Character Card V3 in a ``ccv3`` chunk, V2 in a ``chara`` chunk). ``nbp``
    leaves out characters without an image and names them in an ``X-Castbook-Warnings``
    header (a JSON list of lines); every format but castbook leaves out trained LoRAs and
    says so there too."""
    library = services.library(owner)
    characters = [library.find(ref) for ref in id] if id else library.list()
    # LoRAs only castbook's format carries: a JSON list of lines, ASCII-escaped for the header.
    warnings = lora_warnings(library, characters, format)
    if format == ExportFormat.CARD:
        card = export_card(library, characters)
        headers = {"Content-Disposition": _attachment(characters[0].name, "png")}
        if warnings:
            headers["X-Castbook-Warnings"] = json.dumps(warnings)
        return RawResponse(card, media_type="image/png", headers=headers)
    if format == ExportFormat.NBP:
        from castbook.library.nbp_json import export_warnings

        warnings = export_warnings(characters) + warnings  # characters left out: no image
    if warnings:
        response.headers["X-Castbook-Warnings"] = json.dumps(warnings)
    return export_characters(library, characters, format)


def _attachment(name: str, extension: str) -> str:
    ascii_name = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in name)
    return f'attachment; filename="{ascii_name.strip("-") or "character"}.{extension}"'


@router.post("/import", summary="Import a castbook or nbp export")
def import_characters(
    owner: CurrentOwner,
    services: AppServices,
    document: Annotated[Any, Body(description="The export document (JSON).")],
    strict: Annotated[
        bool, Query(description="Import nothing if any character is invalid.")
    ] = False,
) -> dict[str, Any]:
    """Existing names are skipped, never overwritten; invalid entries are reported as failed.
    An imported character that looks like one you have is named in ``warnings``."""
    library = services.library(owner)
    return _report_lookalikes(services, owner, import_document(library, document, strict=strict))


@router.post("/import/card", summary="Import a character card (PNG, .charx or JSON)")
def import_card(
    owner: CurrentOwner,
    services: AppServices,
    file: Annotated[
        UploadFile, File(description="A PNG card (ccv3/chara chunk), a .charx, or card JSON.")
    ],
    strict: Annotated[bool, Query(description="Import nothing if the card is invalid.")] = False,
) -> dict[str, Any]:
    """Character Card V2 / V3 (SillyTavern, RisuAI, chub …). Answers the same report as
    ``/import``; a card whose name exists is skipped."""
    data = file.file.read(MAX_CARD_FILE_BYTES + 1)
    report = import_card_bytes(
        services.library(owner), data, source=file.filename or "card", strict=strict
    )
    return _report_lookalikes(services, owner, report)


@router.post("/extract", summary="Propose a character's fields from an image")
async def extract_character(
    request: Request,
    response: Response,
    owner: CurrentOwner,
    services: AppServices,
    image: Annotated[UploadFile, File(description="PNG, JPEG or WebP of the character.")],
    provider: Annotated[
        str | None, Form(description="A configured provider, or 'local' (default: the first).")
    ] = None,
    save: Annotated[bool, Form(description="Create the character with this image.")] = False,
    name: Annotated[str | None, Form(description="The new character's name, with save.")] = None,
) -> dict[str, Any]:
    """A vision-language model (or, without one, the local analyser) reads the picture;
    fields it cannot see are "unknown" or empty. Review, then save (here with ``save`` and
    ``name``, or by creating the character yourself)."""
    if save and not name:
        raise FieldError("name", "is required to save the extracted character")
    data = await image.read(MAX_FILE_BYTES + 1)
    source = image.filename or "image"
    extractor = await run_in_threadpool(services.extractor)
    prepared, chosen = await run_in_threadpool(
        partial(extractor.choose, data, provider=provider, source=source)
    )
    if chosen is None:
        # The local analyser (face detection, colour clustering) runs in the evaluation
        # workers, in the owner's turn; waiting for it holds no server thread.
        from castbook.evaluation.pool import CallRequest
        from castbook.extract.local import analyse_locally

        job = CallRequest(analyse_locally, (prepared.data,))
        extraction = await asyncio.wrap_future(services.evaluations().submit(owner, job))
    else:
        extraction = await run_in_threadpool(extractor.read, prepared, chosen)
    result: dict[str, Any] = {"extraction": extraction.model_dump(), "character": None}
    if save:
        result["character"] = await run_in_threadpool(
            _save_extracted, request, response, owner, services, extraction, name or "", prepared
        )
    return result


def _save_extracted(
    request: Request,
    response: Response,
    owner: str,
    services: Services,
    extraction: Extraction,
    name: str,
    prepared: PreparedImage,
) -> dict[str, Any]:
    created = services.library(owner).create(extraction.character_fields(name), [prepared])
    return _with_lookalikes(services, owner, response, character_json(request, created), created)


@router.get("/{ref}", summary="Show a character")
def get_character(
    ref: str, request: Request, owner: CurrentOwner, services: AppServices
) -> dict[str, Any]:
    return character_json(request, services.library(owner).find(ref))


@router.patch("/{ref}", summary="Change a character's fields")
def patch_character(
    ref: str, request: Request, owner: CurrentOwner, services: AppServices, body: CharacterPatch
) -> dict[str, Any]:
    """Send only the fields to change; lists replace the whole list."""
    library = services.library(owner)
    character = library.find(ref)
    changes = body.changes()
    if body.name is not None:
        changes["name"] = body.name
    if not changes and body.primary_image is None:
        raise FieldError("body", "nothing to change")
    updated = library.update(character.name, changes, primary=body.primary_image)
    return character_json(request, updated)


@router.delete("/{ref}", status_code=204, summary="Delete a character")
def delete_character(ref: str, owner: CurrentOwner, services: AppServices) -> Response:
    """Deletes the character and every image blob nothing else uses."""
    library = services.library(owner)
    library.delete(library.find(ref).name)
    return Response(status_code=204)


@router.post("/{ref}/images", status_code=201, summary="Upload reference images")
def upload_images(
    ref: str,
    request: Request,
    response: Response,
    owner: CurrentOwner,
    services: AppServices,
    image: Annotated[list[UploadFile], File(description="PNG, JPEG or WebP (repeatable).")],
    primary: Annotated[bool, Form(description="Make the first uploaded image primary.")] = False,
) -> dict[str, Any]:
    """Images over 1536×1536 are stored shrunk to fit, keeping the aspect ratio. When a new
    reference already looks like another of your characters, ``looks_like`` lists them
    and ``X-Castbook-Warnings`` says "looks like Alice (score 93)"."""
    if not image:
        raise FieldError("image", "upload at least one image")
    if len(image) > MAX_UPLOADS:
        raise FieldError("image", f"at most {MAX_UPLOADS} images per upload, got {len(image)}")
    uploads = []
    for index, upload in enumerate(image):
        data = upload.file.read(MAX_FILE_BYTES + 1)
        uploads.append(ImageInput(data, upload.filename or f"image {index + 1}"))
    library = services.library(owner)
    character = library.find(ref)
    updated = library.update(character.name, add_images=uploads)
    if primary:
        first_new = next(i for i in updated.images if i.sha256 not in _shas(character))
        updated = library.update(updated.name, primary=first_new.sha256)
    return _with_lookalikes(services, owner, response, character_json(request, updated), updated)


@router.get("/{ref}/images/{sha256}", name="character_image", summary="Download a reference image")
def character_image(
    ref: str,
    sha256: str,
    owner: CurrentOwner,
    services: AppServices,
    thumbnail: Annotated[bool, Query(description="The small WebP thumbnail instead.")] = False,
) -> RawResponse:
    library = services.library(owner)
    character = library.find(ref)
    for stored in character.images:
        if stored.sha256 == sha256.lower():
            if thumbnail:
                return RawResponse(
                    library.thumbnail_bytes(stored), media_type=stored.thumbnail_media_type
                )
            return RawResponse(library.image_bytes(stored), media_type=stored.media_type)
    raise NotFoundError(f"{character.name} has no reference image {sha256[:12]}")


@router.delete("/{ref}/images/{sha256}", summary="Remove a reference image")
def delete_image(
    ref: str, sha256: str, request: Request, owner: CurrentOwner, services: AppServices
) -> dict[str, Any]:
    library = services.library(owner)
    character = library.find(ref)
    updated = library.update(character.name, remove_images=[sha256])
    return character_json(request, updated)


def _with_lookalikes(
    services: Services, owner: str, response: Response, data: dict[str, Any], character: Character
) -> dict[str, Any]:
    """``data`` with ``looks_like``: the owner's other characters the new references match
    above the open-set threshold (also as ``X-Castbook-Warnings`` lines)."""
    found = check_lookalikes(services, owner, [character])
    data["looks_like"] = [lookalike.to_json() for lookalike in found]
    warnings_header(response, [lookalike.message for lookalike in found])
    return data


def _report_lookalikes(services: Services, owner: str, report: ImportReport) -> dict[str, Any]:
    library = services.library(owner)
    imported = [library.get(name) for name in report.imported]
    for lookalike in check_lookalikes(services, owner, imported):
        report.warnings.append((lookalike.character, lookalike.message))
    return report.as_dict()


def _shas(character: Character) -> set[str]:
    return {image.sha256 for image in character.images}


class TrainRequest(BaseModel):
    """``POST /v1/characters/{ref}/train``: what to train and how (kohya_ss's usual knobs)."""

    model_config = ConfigDict(extra="forbid")

    preset: str = "sd15-ip-adapter"
    steps: int = 800
    rank: int = 16
    resolution: int = 512
    learning_rate: float = 1e-4
    seed: int = 0
    flip: bool = False
    checkpoint_every: int = Field(
        100, description="Steps between checkpoints: a restarted server resumes from the last."
    )
    report_prompts: int = Field(
        4,
        description="Prompts rendered without and with the LoRA after training and scored "
        "(the consistency report); 0 skips it.",
    )
    prior_preservation: bool = Field(
        False,
        description="Train beside class images the base model draws from class_prompt "
        "(DreamBooth's prior preservation): the LoRA changes the trigger word, not the class.",
    )
    class_prompt: str = Field(
        "",
        max_length=1000,
        description="The class images' prompt; empty: the caption without the trigger word.",
    )
    class_images: int = Field(100, description="How many class images (1–1000).")
    class_steps: int = Field(25, description="Denoising steps of each class image (1–100).")
    prior_loss_weight: float = Field(
        1.0, description="Weight of the class images' loss (above 0, at most 10)."
    )
    inference_type: str | None = Field(
        None, max_length=64, description="The worker queue that should train it."
    )


@router.post(
    "/{ref}/train",
    status_code=202,
    summary="Train the character's LoRA for a preset's base model; answers a task",
)
def train_lora(
    ref: str,
    request: Request,
    owner: CurrentOwner,
    services: AppServices,
    body: TrainRequest | None = None,
) -> dict[str, Any]:
    """Checked before anything is queued: at least 3 reference images, a diffusers SD 1.5 or SDXL
    preset, ranges. The task's result names the stored LoRA; cancel it like any task."""
    from castbook.generation.lora_train import check_character_training, training_settings
    from castbook.tasks.lora_train import LORA_TRAIN, lora_train_job_input

    body = body or TrainRequest()
    library = services.library(owner)
    character = library.find(ref)
    preset = services.presets().get(body.preset)
    settings = training_settings(body.model_dump(exclude={"preset", "inference_type"}))
    check_character_training(library, character, preset, settings)
    job = services.jobs.create(
        kind=LORA_TRAIN,
        input=lora_train_job_input(character, preset.id, settings),
        owner=owner,
        queue=body.inference_type or "default",
    )
    services.submit(job)
    return task_json(request, job)


@router.get("/{ref}/loras", summary="The character's trained LoRAs, one per base model")
def list_loras(ref: str, owner: CurrentOwner, services: AppServices) -> dict[str, Any]:
    library = services.library(owner)
    character = library.find(ref)
    return {
        "character": character.id,
        "loras": [lora.model_dump(mode="json") for lora in library.loras(character)],
    }


class LoraPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_model: str
    weight: float


@router.patch("/{ref}/loras", summary="Set how strongly a LoRA applies (0–2)")
def patch_lora(
    ref: str, owner: CurrentOwner, services: AppServices, body: LoraPatch
) -> dict[str, Any]:
    library = services.library(owner)
    lora = library.set_lora_weight(library.find(ref), body.base_model, body.weight)
    return lora.model_dump(mode="json")


@router.delete("/{ref}/loras", summary="Remove the character's LoRA for a base model")
def delete_lora(
    ref: str,
    owner: CurrentOwner,
    services: AppServices,
    base_model: Annotated[str, Query(description="The base model the LoRA was trained on.")],
) -> dict[str, Any]:
    library = services.library(owner)
    return library.remove_lora(library.find(ref), base_model).model_dump(mode="json")
