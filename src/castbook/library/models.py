"""The character as users and the rest of castbook see it: plain, immutable values."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field

from castbook.errors import FieldError

__all__ = [
    "EDITABLE_FIELDS",
    "FIELD_SECTIONS",
    "FORM_FIELDS",
    "MAX_LIST_ITEMS",
    "MAX_NAME_LENGTH",
    "MAX_TEXT_LENGTH",
    "PHYSICAL_TRAITS",
    "Character",
    "CharacterFields",
    "CharacterLora",
    "FieldInfo",
    "PhysicalTraits",
    "ReferenceImage",
    "clean_fields",
    "field_value",
    "fields_as_dict",
    "name_key",
    "normalize_name",
]

MAX_NAME_LENGTH = 100
MAX_TEXT_LENGTH = 4000
MAX_LIST_ITEMS = 50


class PhysicalTraits(BaseModel):
    """A character's appearance. Its fields are the traits everything else lists
    (:data:`PHYSICAL_TRAITS`): the CLI, the API, the web form, the export formats, injection."""

    model_config = ConfigDict(frozen=True)

    hair: str = ""
    eyes: str = ""
    face: str = ""
    body: str = ""
    skin: str = ""


PHYSICAL_TRAITS: tuple[str, ...] = tuple(PhysicalTraits.model_fields)  # in declaration order


class CharacterLora(BaseModel):
    """A LoRA trained for a character on ``base_model``; ``sha256`` names its ``.safetensors``
    blob. ``trigger`` is the word its captions led with, which generation puts back."""

    model_config = ConfigDict(frozen=True)

    base_model: str
    family: str
    sha256: str
    byte_size: int
    trigger: str
    rank: int
    steps: int
    resolution: int
    weight: float = 1.0
    training: dict[str, Any] = {}
    created_at: datetime


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


def _flat_field_names() -> tuple[str, ...]:
    """CharacterFields' fields in declaration order, ``physical`` replaced by its traits."""
    names: list[str] = []
    for name in CharacterFields.model_fields:
        names.extend(PHYSICAL_TRAITS if name == "physical" else (name,))
    return tuple(names)


# Every editable field, flat and in one order (the CLI table's, the form's, the API's).
EDITABLE_FIELDS = _flat_field_names()
LIST_FIELDS = tuple(
    name
    for name, info in CharacterFields.model_fields.items()
    if get_origin(info.annotation) is tuple
)
TEXT_FIELDS = tuple(
    n for n in EDITABLE_FIELDS if n != "name" and n not in PHYSICAL_TRAITS + LIST_FIELDS
)
MAX_ITEM_LENGTH = 200

# ---- what a form needs to show the editable fields (GET /v1/characters/fields) ----------------

LONG_TEXT_FIELDS = ("style_prompt", "description")  # several lines; other text is one line
LIST_SEPARATORS = {"tags": ","}  # how a list is typed as text; one entry per line otherwise
# Fields shown together under a heading: the traits and what the character wears.
FIELD_SECTIONS = {"appearance": "Appearance"}
_SECTION_OF = dict.fromkeys((*PHYSICAL_TRAITS, "clothing"), "appearance")
_HINTS = {"style_prompt": "1–3 sentences of key features, added to every prompt"}
_LIST_HINTS = {"\n": "one per line", ",": "comma separated"}
_PLACEHOLDERS = {
    "style_prompt": "e.g. a young knight with short silver hair, amber eyes and a red scarf",
    "negative_prompt": "e.g. extra fingers, blurry",
    "description": "who they are, at a glance",
    "accessories": "e.g. silver pendant",
    "distinctive_features": "e.g. scar over the left eye",
    "tags": "e.g. hero, knight",
}


class FieldInfo(BaseModel):
    """One editable field as a form (or the CLI's table) shows it: label, input and limits.

    ``kind`` is "text" (one line), "long_text" (several lines) or "list": a list is typed as
    text, its entries split on ``separator``, each up to ``max_length`` characters. ``group``
    names the object a character nests the field in (``physical``), or is None; ``section``
    the heading it is shown under (a key of :data:`FIELD_SECTIONS`), or is None.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    label: str
    kind: Literal["text", "long_text", "list"]
    group: str | None
    section: str | None
    required: bool
    max_length: int
    max_items: int | None
    separator: str | None
    placeholder: str
    hint: str


def _field_info(name: str) -> FieldInfo:
    is_list = name in LIST_FIELDS
    separator = LIST_SEPARATORS.get(name, "\n") if is_list else None
    if name == "name":
        limit = MAX_NAME_LENGTH
    elif is_list:
        limit = MAX_ITEM_LENGTH
    else:
        limit = MAX_TEXT_LENGTH
    return FieldInfo(
        name=name,
        label=name.replace("_", " ").capitalize(),
        kind="list" if is_list else "long_text" if name in LONG_TEXT_FIELDS else "text",
        group="physical" if name in PHYSICAL_TRAITS else None,
        section=_SECTION_OF.get(name),
        required=name == "name",
        max_length=limit,
        max_items=MAX_LIST_ITEMS if is_list else None,
        separator=separator,
        placeholder=_PLACEHOLDERS.get(name, ""),
        hint=_LIST_HINTS[separator] if separator else _HINTS.get(name, ""),
    )


FORM_FIELDS = tuple(_field_info(name) for name in EDITABLE_FIELDS)  # in EDITABLE_FIELDS order


def field_value(record: object, field: FieldInfo) -> object:
    """``field``'s value in a character (or anything shaped like one: an extraction), read
    from its group (``record.physical.hair``); None when ``record`` has no such field."""
    holder = getattr(record, field.group, None) if field.group else record
    return getattr(holder, field.name, None)


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
