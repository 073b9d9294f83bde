"""The "nbp" character-library JSON many users already have (see ARCHITECTURE.md).

``{version: 1, type: "characters", exportedAt, appVersion, characters: [{uuid, name,
description, physicalTraits: {hair, eyes, face, body, skin}, clothing, accessories,
distinctiveFeatures, imageData, thumbnail, createdAt}]}``

nbp holds one image per character and no style prompt, negative prompt or tags: an nbp
export carries the primary image and drops those fields (docs/export-format.md).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from castbook import __version__
from castbook.errors import ImportFormatError
from castbook.images import prepare_reference
from castbook.library.models import PHYSICAL_TRAITS, Character, clean_fields
from castbook.library.service import CharacterLibrary, NewCharacter
from castbook.library.transfer import (
    ParsedEntry,
    decode_base64,
    expect,
    format_timestamp,
    parse_entries,
    parse_timestamp,
)

__all__ = ["export_document", "is_nbp_document", "parse_document"]

NBP_VERSION = 1


def is_nbp_document(document: object) -> bool:
    return (
        isinstance(document, dict)
        and document.get("type") == "characters"
        and "format" not in document
    )


def export_document(library: CharacterLibrary, characters: Sequence[Character]) -> dict[str, Any]:
    return {
        "version": NBP_VERSION,
        "type": "characters",
        "exportedAt": format_timestamp(datetime.now(UTC)),
        "appVersion": f"castbook {__version__}",
        "characters": [_export_character(library, c) for c in characters],
    }


def _export_character(library: CharacterLibrary, character: Character) -> dict[str, Any]:
    primary = character.primary_image
    return {
        "uuid": str(uuid.UUID(hex=character.id)),
        "name": character.name,
        "description": character.description,
        "physicalTraits": character.physical.model_dump(),
        "clothing": character.clothing,
        "accessories": list(character.accessories),
        "distinctiveFeatures": list(character.distinctive_features),
        "imageData": base64.b64encode(library.image_bytes(primary)).decode() if primary else "",
        "thumbnail": base64.b64encode(library.thumbnail_bytes(primary)).decode() if primary else "",
        "createdAt": format_timestamp(character.created_at),
    }


def parse_document(document: dict[str, Any]) -> list[ParsedEntry]:
    version = document.get("version", NBP_VERSION)
    if version != NBP_VERSION:
        raise ImportFormatError(
            f"nbp character export version {version!r} is not supported (only 1)"
        )
    return parse_entries(document, _parse_character, "nbp")


def _as_list(value: object, where: str) -> list[object]:
    # Older nbp files store these as one comma-separated string.
    if isinstance(value, str):
        return [part for part in value.split(",")]
    return expect(value, list, where, optional=True) or []


def _parse_character(raw: dict[str, Any]) -> NewCharacter:
    physical = expect(raw.get("physicalTraits"), dict, "physicalTraits", optional=True) or {}
    values: dict[str, object] = {
        "name": raw.get("name"),
        "description": raw.get("description"),
        "clothing": raw.get("clothing"),
        "accessories": _as_list(raw.get("accessories"), "accessories"),
        "distinctive_features": _as_list(raw.get("distinctiveFeatures"), "distinctiveFeatures"),
    }
    values.update({f: physical.get(f) for f in PHYSICAL_TRAITS})
    fields = clean_fields(values)
    images = ()
    if raw.get("imageData"):
        data = decode_base64(raw["imageData"], "imageData")
        images = (prepare_reference(data, source="imageData"),)
    character_id = None
    if isinstance(raw.get("uuid"), str):
        try:
            character_id = uuid.UUID(raw["uuid"]).hex
        except ValueError:
            character_id = None
    return NewCharacter(
        fields=fields,
        images=images,
        id=character_id,
        created_at=parse_timestamp(raw.get("createdAt"), "createdAt"),
    )
