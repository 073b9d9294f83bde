"""The character as users and the rest of castbook see it: plain, immutable values."""

from __future__ import annotations

import unicodedata
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from castbook.errors import FieldError

__all__ = [
    "EDITABLE_FIELDS",
    "MAX_LIST_ITEMS",
    "MAX_NAME_LENGTH",
    "MAX_TEXT_LENGTH",
    "Character",
    "CharacterFields",
    "PhysicalTraits",
    "ReferenceImage",
    "clean_fields",
    "fields_as_dict",
    "name_key",
    "normalize_name",
]

MAX_NAME_LENGTH = 100
MAX_TEXT_LENGTH = 4000
MAX_LIST_ITEMS = 50

PHYSICAL_TRAITS = ("hair", "eyes", "face", "body", "skin")


class PhysicalTraits(BaseModel):
    model_config = ConfigDict(frozen=True)

    hair: str = ""
    eyes: str = ""
    face: str = ""
    body: str = ""
    skin: str = ""


class ReferenceImage(BaseModel):
    """One stored reference image. ``sha256`` is its id and its blob name."""

    model_config = ConfigDict(frozen=True)

    sha256: str
    media_type: str
    width: int
    height: int
    byte_size: int
    is_primary: bool
    thumbnail_sha256: str
    thumbnail_media_type: str


class CharacterFields(BaseModel):
    """The user-editable fields of a character (everything but images and bookkeeping)."""

    model_config = ConfigDict(frozen=True)

    name: str
    style_prompt: str = ""
    negative_prompt: str = ""
    description: str = ""
    physical: PhysicalTraits = Field(default_factory=PhysicalTraits)
    clothing: str = ""
    accessories: tuple[str, ...] = ()
    distinctive_features: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


class Character(CharacterFields):
    id: str
    images: tuple[ReferenceImage, ...] = ()
    created_at: datetime
    updated_at: datetime

    @property
    def primary_image(self) -> ReferenceImage | None:
        for image in self.images:
            if image.is_primary:
                return image
        return self.images[0] if self.images else None


def normalize_name(name: object) -> str:
    """The name as stored: NFC, surrounding whitespace removed; raises FieldError if unusable."""
    if name is None:
        raise FieldError("name", "is required")
    if not isinstance(name, str):
        raise FieldError("name", f"must be text, got {type(name).__name__}")
    cleaned = unicodedata.normalize("NFC", name).strip()
    if not cleaned:
        raise FieldError("name", "must not be empty")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise FieldError(
            "name", f"is {len(cleaned)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in cleaned):
        raise FieldError("name", "must not contain control characters or line breaks")
    return cleaned


def name_key(name: str) -> str:
    """The key that makes names unique ignoring case ("Alice" == "ALICE" == "alice")."""
    return unicodedata.normalize("NFC", normalize_name(name).casefold())


TEXT_FIELDS = ("style_prompt", "negative_prompt", "description", "clothing")
LIST_FIELDS = ("accessories", "distinctive_features", "tags")
EDITABLE_FIELDS = ("name", *TEXT_FIELDS, *PHYSICAL_TRAITS, *LIST_FIELDS)
MAX_ITEM_LENGTH = 200


def _clean_text(field: str, value: object, limit: int = MAX_TEXT_LENGTH) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FieldError(field, f"must be text, got {type(value).__name__}")
    cleaned = unicodedata.normalize("NFC", value).strip()
    if len(cleaned) > limit:
        raise FieldError(field, f"is {len(cleaned)} characters long; the limit is {limit}")
    return cleaned


def _clean_list(field: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise FieldError(field, f"must be a list of text, got {type(value).__name__}")
    items: list[str] = []
    seen: set[str] = set()
    for item in value:
        text = _clean_text(field, item, MAX_ITEM_LENGTH)
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            items.append(text)
    if len(items) > MAX_LIST_ITEMS:
        raise FieldError(field, f"has {len(items)} entries; the limit is {MAX_LIST_ITEMS}")
    return tuple(items)


def clean_fields(values: dict[str, object]) -> CharacterFields:
    """Validate and normalise user-supplied fields; every problem names its field.

    Text is NFC-normalised and stripped; list entries are stripped, empty ones dropped and
    repeats (ignoring case) removed. Unknown keys are refused rather than silently dropped.
    """
    unknown = sorted(set(values) - set(EDITABLE_FIELDS))
    if unknown:
        raise FieldError(
            unknown[0], f"is not a character field; known: {', '.join(EDITABLE_FIELDS)}"
        )
    return CharacterFields(
        name=normalize_name(values.get("name")),  # type: ignore[arg-type]
        **{f: _clean_text(f, values.get(f)) for f in TEXT_FIELDS},
        physical=PhysicalTraits(**{f: _clean_text(f, values.get(f)) for f in PHYSICAL_TRAITS}),
        **{f: _clean_list(f, values.get(f)) for f in LIST_FIELDS},
    )


def fields_as_dict(fields: CharacterFields) -> dict[str, object]:
    """The flat ``{field: value}`` form that :func:`clean_fields` accepts."""
    flat: dict[str, object] = {"name": fields.name}
    flat.update({f: getattr(fields, f) for f in TEXT_FIELDS})
    flat.update({f: getattr(fields.physical, f) for f in PHYSICAL_TRAITS})
    flat.update({f: list(getattr(fields, f)) for f in LIST_FIELDS})
    return flat
