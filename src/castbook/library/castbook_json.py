"""castbook's own export format: every field, every reference image, base64-embedded.

Documented in docs/export-format.md. Bump ``FORMAT_VERSION`` on any incompatible change and
keep reading the old versions.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from castbook import __version__
from castbook.errors import ImportFormatError, InvalidInputError
from castbook.images import prepare_reference, sha256_hex
from castbook.library.models import (
    LIST_FIELDS,
    PHYSICAL_TRAITS,
    TEXT_FIELDS,
    Character,
    clean_fields,
)
from castbook.library.service import CharacterLibrary, NewCharacter, NewLora, check_lora_weight
from castbook.library.transfer import (
    ParsedEntry,
    decode_base64,
    expect,
    format_timestamp,
    parse_entries,
    parse_timestamp,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "export_document", "is_castbook_document", "parse_document"]

FORMAT = "castbook.characters"
FORMAT_VERSION = 1


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def export_document(library: CharacterLibrary, characters: Sequence[Character]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "exported_at": format_timestamp(datetime.now(UTC)),
        "castbook_version": __version__,
        "characters": [_export_character(library, character) for character in characters],
    }


def _export_character(library: CharacterLibrary, character: Character) -> dict[str, Any]:
    return {
        "id": character.id,
        "name": character.name,
        **{f: getattr(character, f) for f in TEXT_FIELDS},
        "physical": character.physical.model_dump(),
        **{f: list(getattr(character, f)) for f in LIST_FIELDS},
        "created_at": format_timestamp(character.created_at),
        "updated_at": format_timestamp(character.updated_at),
        "images": [
            {
                "sha256": image.sha256,
                "media_type": image.media_type,
                "width": image.width,
                "height": image.height,
                "primary": image.is_primary,
                "data": _b64(library.image_bytes(image)),
                "thumbnail": {
                    "media_type": image.thumbnail_media_type,
                    "data": _b64(library.thumbnail_bytes(image)),
                },
            }
            for image in character.images
        ],
        "loras": [
            {
                "base_model": lora.base_model,
                "family": lora.family,
                "sha256": lora.sha256,
                "trigger": lora.trigger,
                "rank": lora.rank,
                "steps": lora.steps,
                "resolution": lora.resolution,
                "weight": lora.weight,
                "training": lora.training,
                "created_at": format_timestamp(lora.created_at),
                "data": _b64(library.lora_bytes(lora)),
            }
            for lora in library.loras(character)
        ],
    }


def is_castbook_document(document: object) -> bool:
    return isinstance(document, dict) and document.get("format") == FORMAT


def parse_document(document: dict[str, Any]) -> list[ParsedEntry]:
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ImportFormatError(f"castbook export has no usable version number: {version!r}")
    if version > FORMAT_VERSION:
        raise ImportFormatError(
            f"this export was made by a newer castbook (format version {version}; this castbook "
            f"reads up to {FORMAT_VERSION}); upgrade castbook to import it"
        )
    return parse_entries(document, _parse_character, "castbook")


def _parse_character(raw: dict[str, Any]) -> NewCharacter:
    physical = expect(raw.get("physical", {}), dict, "physical", optional=True) or {}
    values: dict[str, object] = {"name": raw.get("name")}
    values.update({f: raw.get(f, "") for f in TEXT_FIELDS})
    values.update({f: physical.get(f, "") for f in PHYSICAL_TRAITS})
    values.update({f: raw.get(f, []) for f in LIST_FIELDS})
    fields = clean_fields(values)
    images_raw = expect(raw.get("images", []), list, "images", optional=True) or []
    images = []
    primary_index = 0
    for index, image_raw in enumerate(images_raw):
        where = f"images[{index}]"
        image_raw = expect(image_raw, dict, where)
        data = decode_base64(image_raw.get("data"), f"{where}.data")
        declared = expect(image_raw.get("sha256"), str, f"{where}.sha256", optional=True)
        prepared = prepare_reference(data, source=f"{where}.data")
        if declared is not None and declared.lower() != sha256_hex(data):
            raise InvalidInputError(
                f"{where}: the image bytes do not match their sha256; "
                "the file was altered or damaged"
            )
        thumbnail = image_raw.get("thumbnail")
        if thumbnail is not None:
            # castbook makes its own thumbnails, but a damaged one still marks a damaged file.
            decode_base64(
                expect(thumbnail, dict, f"{where}.thumbnail").get("data"), f"{where}.thumbnail.data"
            )
        if expect(image_raw.get("primary", False), bool, f"{where}.primary"):
            primary_index = index
        images.append(prepared)
    loras_raw = expect(raw.get("loras", []), list, "loras", optional=True) or []
    loras = tuple(
        _parse_lora(expect(item, dict, f"loras[{i}]"), f"loras[{i}]")
        for i, item in enumerate(loras_raw)
    )
    character_id = expect(raw.get("id"), str, "id", optional=True)
    if character_id is not None and not (len(character_id) == 32 and character_id.isalnum()):
        character_id = None
    return NewCharacter(
        fields=fields,
        images=tuple(images),
        primary_index=primary_index,
        id=character_id,
        created_at=parse_timestamp(raw.get("created_at"), "created_at"),
        updated_at=parse_timestamp(raw.get("updated_at"), "updated_at"),
        loras=loras,
    )


_LORA_TEXT = ("base_model", "family", "trigger")
_LORA_COUNTS = ("rank", "steps", "resolution")


def _parse_lora(raw: dict[str, Any], where: str) -> NewLora:
    """A character's LoRA: its bytes must match the sha256 the export names, and must be a
    safetensors file (its header read, its tensors not)."""
    data = decode_base64(raw.get("data"), f"{where}.data")
    declared = expect(raw.get("sha256"), str, f"{where}.sha256", optional=True)
    if declared is not None and declared.lower() != sha256_hex(data):
        raise InvalidInputError(
            f"{where}: the LoRA bytes do not match their sha256; the file was altered or damaged"
        )
    _check_safetensors(data, f"{where}.data")
    text = {name: expect(raw.get(name), str, f"{where}.{name}") for name in _LORA_TEXT}
    counts = {name: expect(raw.get(name), int, f"{where}.{name}") for name in _LORA_COUNTS}
    weight = expect(raw.get("weight", 1.0), (int, float), f"{where}.weight")
    check_lora_weight(weight)
    training = expect(raw.get("training", {}), dict, f"{where}.training", optional=True) or {}
    return NewLora(
        data=data,
        **text,
        **counts,
        weight=float(weight),
        training=training,
        created_at=parse_timestamp(raw.get("created_at"), f"{where}.created_at"),
    )


def _check_safetensors(data: bytes, where: str) -> None:
    """A safetensors file starts with the length of its JSON header, then the header."""
    if len(data) >= 8:
        size = int.from_bytes(data[:8], "little")
        if 2 <= size <= len(data) - 8 and data[8:9] == b"{":
            return
    raise InvalidInputError(f"{where}: not a safetensors file")
