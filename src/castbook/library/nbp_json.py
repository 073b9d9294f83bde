"""The "nbp" character-library JSON many users already have (see ARCHITECTURE.md).

``{version: 1, type: "characters", exportedAt, appVersion, characters: [{uuid, name,
description, physicalTraits: {hair, eyes, face, body, skin}, clothing, accessories,
distinctiveFeatures, imageData, thumbnail, createdAt}]}``

The nbp-web-gen app writes ``exportedAt`` and ``createdAt`` as epoch milliseconds,
``imageData`` as plain base64 of any ``image/*`` file, ``thumbnail`` as plain base64 of a
WebP at most 150 px on its longest side, and "unknown" for traits it could not tell.

nbp holds one image per character and no style prompt, negative prompt or tags: an nbp
export carries the primary image and drops those fields (docs/export-format.md).
"""

from __future__ import annotations

import base64
import io
import struct
import unicodedata
import uuid
import warnings as pywarnings
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from PIL import Image, UnidentifiedImageError

from castbook import __version__
from castbook.errors import (
    CorruptImageError,
    ImageTooLargeError,
    ImportFormatError,
    UnsupportedImageError,
)
from castbook.images import (
    MAX_PIXELS,
    MAX_SIDE,
    PreparedImage,
    decode_image,
    fit_within,
    make_thumbnail,
    prepare_reference,
)
from castbook.library.injection import is_placeholder
from castbook.library.models import (
    MAX_ITEM_LENGTH,
    MAX_LIST_ITEMS,
    MAX_NAME_LENGTH,
    MAX_TEXT_LENGTH,
    PHYSICAL_TRAITS,
    Character,
    clean_fields,
)
from castbook.library.service import CharacterLibrary, NewCharacter
from castbook.library.transfer import (
    ParsedEntry,
    decode_base64,
    expect,
    parse_entries,
    parse_timestamp,
)

__all__ = [
    "THUMBNAIL_SIDE",
    "export_document",
    "export_warnings",
    "is_nbp_document",
    "parse_document",
]

NBP_VERSION = 1
THUMBNAIL_SIDE = 150  # the app's thumbnails: WebP, longest side at most 150 px

# Image formats the app accepts (any image/* a browser shows) that castbook does not store:
# converted to PNG on import. Anything else (SVG, say) fails as unreadable.
_CONVERTIBLE = ("GIF", "BMP", "DIB", "ICO", "CUR", "TIFF", "AVIF")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ELLIPSIS = "…"
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_UNNAMEABLE = ("Cc", "Cf", "Zl", "Zp")  # what castbook refuses in a name
# What Pillow's decoders raise on damaged or hostile data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


def is_nbp_document(document: object) -> bool:
    return (
        isinstance(document, dict)
        and document.get("type") == "characters"
        and "format" not in document
    )


# ---- export --------------------------------------------------------------------------------


def export_warnings(characters: Sequence[Character]) -> list[str]:
    """What an nbp export of ``characters`` leaves out: characters without an image."""
    return [
        f"{c.name!r} has no reference image and was left out: the nbp app cannot show a "
        "character without one"
        for c in characters
        if c.primary_image is None
    ]


def export_document(
    library: CharacterLibrary,
    characters: Sequence[Character],
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """The document the app itself writes. Characters without an image are left out; when
    ``warnings`` is given, a line saying so is appended to it for each."""
    if warnings is not None:
        warnings.extend(export_warnings(characters))
    return {
        "version": NBP_VERSION,
        "type": "characters",
        "exportedAt": _epoch_ms(datetime.now(UTC)),
        "appVersion": f"castbook {__version__}",
        "characters": [
            _export_character(library, c) for c in characters if c.primary_image is not None
        ],
    }


def _export_character(library: CharacterLibrary, character: Character) -> dict[str, Any]:
    primary = character.primary_image
    assert primary is not None
    data = library.image_bytes(primary)
    image = decode_image(data, source=f"{character.name!r}'s image", reduce_to=THUMBNAIL_SIDE)
    return {
        "uuid": str(uuid.UUID(hex=character.id)),
        "name": character.name,
        "description": character.description,
        "physicalTraits": character.physical.model_dump(),
        "clothing": character.clothing,
        "accessories": list(character.accessories),
        "distinctiveFeatures": list(character.distinctive_features),
        "imageData": _b64(data),
        "thumbnail": _b64(make_thumbnail(image.image, THUMBNAIL_SIDE)),
        "createdAt": _epoch_ms(character.created_at),
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


# ---- import --------------------------------------------------------------------------------


def parse_document(document: dict[str, Any]) -> list[ParsedEntry]:
    version = document.get("version", NBP_VERSION)
    if version != NBP_VERSION:
        raise ImportFormatError(
            f"nbp character export version {version!r} is not supported (only 1)"
        )
    return parse_entries(document, _parse_character, "nbp")


def _parse_character(raw: dict[str, Any]) -> tuple[NewCharacter, list[str]]:
    notes: list[str] = []
    physical = expect(raw.get("physicalTraits"), dict, "physicalTraits", optional=True) or {}
    values: dict[str, object] = {
        "name": _fit_name(raw.get("name"), notes),
        "description": _text(raw.get("description"), "description", notes),
        "clothing": _text(raw.get("clothing"), "clothing", notes),
        "accessories": _items(raw.get("accessories"), "accessories", notes),
        "distinctive_features": _items(
            raw.get("distinctiveFeatures"), "distinctiveFeatures", notes
        ),
    }
    values.update(
        {f: _text(physical.get(f), f"physicalTraits.{f}", notes) for f in PHYSICAL_TRAITS}
    )
    fields = clean_fields(values)
    images = ()
    if raw.get("imageData"):
        data = decode_base64(raw["imageData"], "imageData")
        images = (_prepare_image(data, notes),)
    character_id = None
    if isinstance(raw.get("uuid"), str):
        try:
            character_id = uuid.UUID(raw["uuid"]).hex
        except ValueError:
            character_id = None
    character = NewCharacter(
        fields=fields,
        images=images,
        id=character_id,
        created_at=parse_timestamp(raw.get("createdAt"), "createdAt"),
    )
    return character, notes


def _fit_name(value: object, notes: list[str]) -> object:
    """The name as castbook can store it: line breaks and invisible characters out, cut to
    the length limit (ending in "…"). Anything but text is left for clean_fields to refuse."""
    if not isinstance(value, str):
        return value
    kept = unicodedata.normalize("NFC", value)
    if any(unicodedata.category(ch) in _UNNAMEABLE for ch in kept):
        # Line breaks and tabs become spaces; other control and format characters go.
        kept = "".join(
            " " if ch.isspace() else ch
            for ch in kept
            if ch.isspace() or unicodedata.category(ch) not in _UNNAMEABLE
        )
        kept = " ".join(kept.split())
        notes.append(f"line breaks or invisible characters were taken out of the name {value!r}")
    kept = kept.strip()
    if len(kept) > MAX_NAME_LENGTH:
        short = kept[: MAX_NAME_LENGTH - len(_ELLIPSIS)].rstrip() + _ELLIPSIS
        notes.append(
            f"the name was {len(kept)} characters long (castbook's limit is "
            f"{MAX_NAME_LENGTH}); imported as {short!r} (full name: {kept!r})"
        )
        kept = short
    return kept


def _text(value: object, where: str, notes: list[str]) -> object:
    """A text field: placeholders ("unknown", "N/A" …) become empty, overlong text is cut."""
    if not isinstance(value, str):
        return value
    if is_placeholder(value):
        return ""
    text = unicodedata.normalize("NFC", value).strip()
    if len(text) > MAX_TEXT_LENGTH:
        notes.append(f"{where} was {len(text)} characters long; kept the first {MAX_TEXT_LENGTH}")
        text = text[:MAX_TEXT_LENGTH].rstrip()
    return text


def _items(value: object, where: str, notes: list[str]) -> list[object]:
    """A list field (older files: one comma-separated string), without placeholders or
    repeats, each entry and the list cut to castbook's limits."""
    if isinstance(value, str):
        value = value.split(",")
    entries = expect(value, list, where, optional=True) or []
    kept: list[object] = []
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, str):
            kept.append(entry)  # clean_fields says what is wrong with it
            continue
        text = unicodedata.normalize("NFC", entry).strip()
        if is_placeholder(text) or text.casefold() in seen:
            continue
        seen.add(text.casefold())
        if len(text) > MAX_ITEM_LENGTH:
            notes.append(
                f"an entry of {where} was {len(text)} characters long; "
                f"kept the first {MAX_ITEM_LENGTH}"
            )
            text = text[:MAX_ITEM_LENGTH].rstrip()
        kept.append(text)
    if len(kept) > MAX_LIST_ITEMS:
        notes.append(f"{where} had {len(kept)} entries; kept the first {MAX_LIST_ITEMS}")
        kept = kept[:MAX_LIST_ITEMS]
    return kept


def _prepare_image(data: bytes, notes: list[str]) -> PreparedImage:
    try:
        return prepare_reference(data, source="imageData")
    except UnsupportedImageError:
        converted, fmt, animated = _convert_to_png(data)
    prepared = prepare_reference(converted, source="imageData")
    frame = " (its first frame: castbook keeps still images)" if animated else ""
    notes.append(f"imageData was a {fmt} image; converted to PNG{frame}")
    return prepared


def _convert_to_png(data: bytes) -> tuple[bytes, str, bool]:
    """A GIF, BMP, ICO, TIFF or AVIF as PNG bytes (first frame, shrunk to the stored size).

    Raises the UnsupportedImageError castbook gives for other formats, and the usual image
    errors for one that is too large or damaged.
    """
    Image.init()
    # Only formats this Pillow can open (AVIF needs a Pillow built with it): naming any
    # other makes Image.open raise KeyError.
    formats = [fmt for fmt in _CONVERTIBLE if fmt in Image.OPEN]
    try:
        with pywarnings.catch_warnings():
            pywarnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(
            f"imageData has far too many pixels; the limit is {MAX_PIXELS // 1_000_000} MP"
        ) from None
    except UnidentifiedImageError:
        raise UnsupportedImageError(
            "imageData is not an image castbook can read; castbook accepts PNG, JPEG and "
            f"WebP, and converts {', '.join(_CONVERTIBLE[:-1])} and {_CONVERTIBLE[-1]}"
        ) from None
    except _DECODE_ERRORS as exc:
        raise CorruptImageError(f"imageData cannot be decoded ({exc})") from None
    fmt = "BMP" if image.format == "DIB" else (image.format or "unknown")
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageTooLargeError(
            f"imageData is {width}×{height}; the limit is {MAX_PIXELS // 1_000_000} MP"
        )
    try:
        animated = bool(getattr(image, "is_animated", False))
        image.seek(0)
        image.load()
        if image.mode in _HIGH_DEPTH_MODES:
            # 16-bit grey (TIFF) straight to 8 bits would clip to white: scale it first.
            image = image.convert("I").point(lambda value: value * (1 / 257)).convert("L")
        elif image.mode not in ("RGB", "RGBA", "L", "LA"):
            image = image.convert("RGBA" if image.has_transparency_data else "RGB")
        small = fit_within(image, MAX_SIDE)
        buffer = io.BytesIO()
        small.save(buffer, "PNG", optimize=True)
    except _DECODE_ERRORS as exc:
        raise CorruptImageError(
            f"imageData is a damaged or truncated {fmt} file and cannot be decoded ({exc})"
        ) from None
    return buffer.getvalue(), fmt, animated
