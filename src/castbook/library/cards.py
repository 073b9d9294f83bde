"""Character Card V2 / V3: the card format of SillyTavern, RisuAI, chub and most character tools.

A card is JSON (``{"spec": "chara_card_v3", "spec_version": "3.0", "data": {…}}``), found as a
plain ``.json`` file, base64 in a PNG's ``ccv3`` (V3) or ``chara`` (V2) text chunk, or as
``card.json`` inside a ``.charx`` zip. Specs: Character Card V2 (malfoyslastname/
character-card-spec-v2, ``chara_card_v2`` 2.0) and V3 (kwaroran/character-card-spec-v3,
``chara_card_v3`` 3.0). docs/export-format.md describes the mapping field by field.

castbook's own fields (style prompt, negative prompt, traits, further reference images) travel
in ``data.extensions.castbook``. A card castbook imports keeps everything else: its JSON
(without ``extensions.castbook``) is stored inside the stored primary image as a PNG text
chunk, so exporting the character as a card again starts from the original card and keeps
keys castbook does not know.
"""

from __future__ import annotations

import base64
import binascii
import copy
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from PIL import PngImagePlugin

from castbook.errors import ImportFormatError, InvalidInputError
from castbook.images import PreparedImage, decode_image, prepare_reference
from castbook.images.decode import MAX_FILE_BYTES as MAX_IMAGE_FILE_BYTES
from castbook.library.models import (
    MAX_ITEM_LENGTH,
    MAX_LIST_ITEMS,
    MAX_TEXT_LENGTH,
    PHYSICAL_TRAITS,
    Character,
    clean_fields,
)
from castbook.library.service import CharacterLibrary, NewCharacter
from castbook.library.text import find_invalid_text
from castbook.library.transfer import (
    ParsedEntry,
    decode_base64,
    expect,
    format_timestamp,
    parse_timestamp,
)

__all__ = [
    "EXTENSION",
    "MAX_CARD_FILE_BYTES",
    "SPEC_V2",
    "SPEC_V3",
    "check_one",
    "export_card_json",
    "export_card_png",
    "is_card_document",
    "parse_card_bytes",
    "parse_document",
]

SPEC_V2 = "chara_card_v2"
SPEC_V3 = "chara_card_v3"
_SPECS = {SPEC_V2: ("2", "2.0", "chara"), SPEC_V3: ("3", "3.0", "ccv3")}  # major, written, chunk
EXTENSION = "castbook"  # data.extensions.castbook
EXTENSION_VERSION = 1
MAX_CARD_FILE_BYTES = 512 * 1024 * 1024  # a castbook card carries up to 16 images as base64
_MAX_ZIP_MEMBER = MAX_CARD_FILE_BYTES

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_CARD_KEYWORDS = ("ccv3", "chara")  # in order of preference
_ELLIPSIS = "…"

# Card text fields castbook shows inside its description, with the heading each gets there.
_SECTIONS = (
    ("personality", "Personality"),
    ("scenario", "Scenario"),
    ("creator_notes", "Creator notes"),
)
_STORY_FIELDS = ("description", *(key for key, _ in _SECTIONS))
# The fields every V2 card has (V3 adds group_only_greetings), in the specs' order.
_V2_DEFAULTS: dict[str, Any] = {
    "name": "",
    "description": "",
    "personality": "",
    "scenario": "",
    "first_mes": "",
    "mes_example": "",
    "creator_notes": "",
    "system_prompt": "",
    "post_history_instructions": "",
    "alternate_greetings": [],
    "tags": [],
    "creator": "",
    "character_version": "",
    "extensions": {},
}
_V1_MIRROR = ("name", "description", "personality", "scenario", "first_mes", "mes_example")


# ---- reading --------------------------------------------------------------------------------


def is_card_document(document: object) -> bool:
    """A JSON document that claims to be a character card (its spec may still be refused)."""
    if not isinstance(document, dict):
        return False
    spec = document.get("spec")
    return isinstance(spec, str) and (spec.startswith("chara_card") or "data" in document)


def parse_document(document: dict[str, Any], *, source: str = "card") -> list[ParsedEntry]:
    """A JSON card (a ``.json`` file or ``/v1/characters/import``): one entry."""
    card = _check_card(document, source)
    return [_entry(source, card, _icon_from_assets(card, source, None))]


def parse_card_bytes(data: bytes, *, source: str = "card") -> list[ParsedEntry]:
    """A PNG card, a ``.charx`` zip or a JSON card, told apart by their first bytes."""
    if len(data) > MAX_CARD_FILE_BYTES:
        raise ImportFormatError(
            f"{source} is {len(data) / 1024**2:.0f} MB; the limit for a card is "
            f"{MAX_CARD_FILE_BYTES // 1024**2} MB"
        )
    if data.startswith(_PNG_SIGNATURE):
        return _parse_png(data, source)
    if data.startswith(_ZIP_SIGNATURE):
        return _parse_charx(data, source)
    try:
        document = json.loads(data)
    except RecursionError:
        raise ImportFormatError(f"{source} nests its JSON too deeply to read") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ImportFormatError(
            f"{source} is not a character card: expected a PNG card, a .charx file or card JSON"
        ) from None
    if not is_card_document(document):
        raise ImportFormatError(
            f'{source} is JSON but not a character card (no "spec": "{SPEC_V3}" or "{SPEC_V2}")'
        )
    return parse_document(document, source=source)


def _parse_png(data: bytes, source: str) -> list[ParsedEntry]:
    texts = {}
    for keyword, text in _png_texts(data, source):
        if keyword in _CARD_KEYWORDS and keyword not in texts:
            texts[keyword] = text
    if not texts:
        raise ImportFormatError(
            f"{source} is a PNG without a character card in it (no 'ccv3' or 'chara' text chunk)"
        )
    keyword = next(k for k in _CARD_KEYWORDS if k in texts)  # ccv3 wins over chara
    card = _check_card(_decode_chunk(texts[keyword], f"{source}: the '{keyword}' chunk"), source)
    return [_entry(source, card, _strip_card_chunks(data, source))]


def _parse_charx(data: bytes, source: str) -> list[ParsedEntry]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ImportFormatError(f"{source} is not a readable .charx (zip) file ({exc})") from None
    with archive:
        if "card.json" not in names:
            raise ImportFormatError(f"{source} is a zip without card.json; it is not a .charx card")
        raw = _zip_member(archive, "card.json", source)
        try:
            document = json.loads(raw)
        except RecursionError:
            raise ImportFormatError(f"{source}: card.json nests its JSON too deeply") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ImportFormatError(f"{source}: card.json is not valid JSON ({exc})") from None
        card = _check_card(document, source)
        return [_entry(source, card, _icon_from_assets(card, source, archive))]


def _zip_member(
    archive: zipfile.ZipFile, name: str, source: str, limit: int = _MAX_ZIP_MEMBER
) -> bytes:
    """One member, read no further than ``limit`` bytes whatever its header claims."""
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise ImportFormatError(
            f"{source}: {name} is too large ({info.file_size} bytes; the limit is {limit})"
        )
    try:
        with archive.open(info) as handle:
            content = handle.read(limit + 1)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
        raise ImportFormatError(f"{source}: {name} is damaged ({exc})") from None
    if len(content) > limit:
        raise ImportFormatError(f"{source}: {name} is too large (the limit is {limit} bytes)")
    return content


def _check_card(document: object, source: str) -> dict[str, Any]:
    """The card's spec, version and ``data`` object, or one error saying what is wrong."""
    if not isinstance(document, dict):
        raise ImportFormatError(f"{source}: a card must be a JSON object")
    spec = document.get("spec")
    if spec not in _SPECS:
        found = "no 'spec'" if spec is None else f"spec {spec!r}"
        raise ImportFormatError(
            f"{source}: the card has {found}; castbook reads Character Card V2 and V3 "
            f"({SPEC_V2!r}, {SPEC_V3!r})"
        )
    major = _SPECS[spec][0]
    version = document.get("spec_version")
    if version is not None and str(version).split(".")[0] != major:
        raise ImportFormatError(
            f"{source}: spec_version {version!r} is not a version of {spec} (expected {major}.x)"
        )
    if not isinstance(document.get("data"), dict):
        raise ImportFormatError(f"{source}: the card has no 'data' object")
    return document


def _decode_chunk(text: str, where: str) -> object:
    compact = "".join(text.split())
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ImportFormatError(f"{where} is not valid base64") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ImportFormatError(f"{where} nests its JSON too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportFormatError(f"{where} does not hold card JSON ({exc})") from None


def _icon_from_assets(
    card: dict[str, Any], source: str, archive: zipfile.ZipFile | None
) -> bytes | None:
    """The main icon of a V3 card's ``assets``: a ``data:`` URL, or a file of the .charx."""
    assets = card["data"].get("assets")
    if not isinstance(assets, list):
        return None
    icons = [a for a in assets if isinstance(a, dict) and a.get("type") == "icon"]
    icons.sort(key=lambda a: a.get("name") != "main")
    for asset in icons:
        uri = asset.get("uri")
        if not isinstance(uri, str):
            continue
        if uri.startswith("data:"):
            try:
                return decode_base64(uri, f"{source}: data.assets icon")
            except InvalidInputError as exc:
                raise ImportFormatError(str(exc)) from None
        if archive is not None and uri.startswith("embeded://"):
            path = uri.removeprefix("embeded://")
            if path not in archive.namelist():
                raise ImportFormatError(f"{source}: the icon {path!r} is missing from the .charx")
            return _zip_member(archive, path, source, MAX_IMAGE_FILE_BYTES)
    return None


# ---- PNG text chunks ------------------------------------------------------------------------


def _png_chunk_spans(data: bytes, source: str) -> list[tuple[bytes, int, int]]:
    """Each chunk's type and its span (length field to CRC) up to IEND. No pixel is decoded,
    so a decompression bomb costs nothing here (the image check refuses it afterwards)."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ImportFormatError(f"{source} is not a PNG file")
    spans = []
    offset = len(_PNG_SIGNATURE)
    while True:
        if offset + 8 > len(data):
            raise ImportFormatError(f"{source} is a damaged PNG: it ends in the middle of a chunk")
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        end = offset + 12 + length
        if not kind.isalpha() or end > len(data):
            raise ImportFormatError(f"{source} is a damaged PNG: chunk {len(spans)} is cut short")
        spans.append((kind, offset, end))
        offset = end
        if kind == b"IEND":
            return spans


def _png_texts(data: bytes, source: str) -> list[tuple[str, str]]:
    texts = []
    for kind, start, end in _png_chunk_spans(data, source):
        if kind not in _TEXT_CHUNKS:
            continue
        body = data[start + 8 : end - 4]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        keyword_bytes, _, rest = body.partition(b"\0")
        keyword = keyword_bytes.decode("latin-1").lower()
        if keyword not in _CARD_KEYWORDS:
            continue
        where = f"{source}: the '{keyword}' chunk"
        if zlib.crc32(data[start + 4 : end - 4]) != crc:
            raise ImportFormatError(f"{where} is damaged (its checksum does not match)")
        texts.append((keyword, _chunk_text(kind, rest, where)))
    return texts


def _chunk_text(kind: bytes, rest: bytes, where: str) -> str:
    if kind == b"tEXt":
        return rest.decode("latin-1")
    if kind == b"zTXt":
        return _inflate(rest[1:], where).decode("latin-1")
    # iTXt: compression flag, method, language\0, translated keyword\0, text (UTF-8)
    if len(rest) < 2:
        raise ImportFormatError(f"{where} is damaged (an iTXt chunk cut short)")
    compressed = rest[0] == 1
    _language, _, rest2 = rest[2:].partition(b"\0")
    _translated, _, text = rest2.partition(b"\0")
    raw = _inflate(text, where) if compressed else text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ImportFormatError(f"{where} is not UTF-8 text") from None


def _inflate(data: bytes, where: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_CARD_FILE_BYTES + 1)
    except zlib.error as exc:
        raise ImportFormatError(f"{where} is damaged ({exc})") from None
    if len(out) > MAX_CARD_FILE_BYTES or inflater.unconsumed_tail:
        raise ImportFormatError(f"{where} unpacks to more than the card limit")
    return out


def _strip_card_chunks(data: bytes, source: str) -> bytes:
    """The PNG without its card text chunks (``ccv3``, ``chara``): the picture alone."""
    kept = [data[: len(_PNG_SIGNATURE)]]
    for kind, start, end in _png_chunk_spans(data, source):
        if kind in _TEXT_CHUNKS:
            keyword = data[start + 8 : end - 4].partition(b"\0")[0].decode("latin-1").lower()
            if keyword in _CARD_KEYWORDS or keyword.startswith("chara-ext-asset_"):
                continue
        kept.append(data[start:end])
    return b"".join(kept)


def _with_text_chunk(png: bytes, keyword: str, text: str) -> bytes:
    """``png`` with one more tEXt chunk, just before IEND; the pixels are untouched."""
    body = keyword.encode("latin-1") + b"\0" + text.encode("latin-1")
    chunk = (
        struct.pack(">I", len(body))
        + b"tEXt"
        + body
        + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    )
    iend = _png_chunk_spans(png, "image")[-1][1]
    return png[:iend] + chunk + png[iend:]


def _stored_card(library: CharacterLibrary, character: Character) -> dict[str, Any] | None:
    """The card a character was imported from, kept in its primary image; None if none."""
    primary = character.primary_image
    if primary is None or primary.media_type != "image/png":
        return None
    try:
        texts = dict(reversed(_png_texts(library.image_bytes(primary), "image")))
        for keyword in _CARD_KEYWORDS:
            if keyword in texts:
                card = _decode_chunk(texts[keyword], "stored card")
                return _check_card(card, "stored card")
    except ImportFormatError:
        return None
    return None


# ---- a card as a castbook character -----------------------------------------------------------


def _entry(source: str, card: dict[str, Any], image: bytes | None) -> ParsedEntry:
    data = card["data"]
    name = data.get("name") if isinstance(data.get("name"), str) else None
    label = f"{source} ({name!r})" if name is not None else source
    bad = find_invalid_text(card)
    if bad is not None:
        return ParsedEntry(label, None, error=f"{bad.indexed()}: {bad.problem}")
    try:
        return ParsedEntry(label, name, _character(card, image))
    except InvalidInputError as exc:
        return ParsedEntry(label, name, error=str(exc))


def _character(card: dict[str, Any], image: bytes | None) -> NewCharacter:
    data = card["data"]
    extensions = expect(data.get("extensions"), dict, "data.extensions", optional=True) or {}
    own = expect(extensions.get(EXTENSION), dict, f"data.extensions.{EXTENSION}", optional=True)
    own = own or {}
    where = f"data.extensions.{EXTENSION}"
    story = {key: _card_text(data, key) for key in _STORY_FIELDS}
    description = own.get("description")
    if not (isinstance(description, str) and _split_description(description) == story):
        description = _joined_description(story)  # another tool wrote or changed the card
    physical = expect(own.get("physical"), dict, f"{where}.physical", optional=True) or {}
    values: dict[str, object] = {
        "name": data.get("name"),
        "description": description,
        "tags": _card_tags(data),
        "style_prompt": own.get("style_prompt"),
        "negative_prompt": own.get("negative_prompt"),
        "clothing": own.get("clothing"),
        "accessories": own.get("accessories"),
        "distinctive_features": own.get("distinctive_features"),
    }
    values.update({trait: physical.get(trait) for trait in PHYSICAL_TRAITS})
    fields = clean_fields(values)

    references = expect(own.get("references"), list, f"{where}.references", optional=True) or []
    images = []
    for index, reference in enumerate(references):
        at = f"{where}.references[{index}]"
        reference = expect(reference, dict, at)
        images.append(
            prepare_reference(decode_base64(reference.get("data"), f"{at}.data"), source=at)
        )
    primary_index = 0
    if image is not None:
        wanted = own.get("primary_index", 0)
        if not isinstance(wanted, int) or isinstance(wanted, bool):
            wanted = 0
        primary_index = min(max(wanted, 0), len(images))
        images.insert(primary_index, _card_image(image, card))
    character_id = own.get("id")
    if not (isinstance(character_id, str) and len(character_id) == 32 and character_id.isalnum()):
        character_id = None
    created = parse_timestamp(own.get("created_at"), f"{where}.created_at")
    updated = parse_timestamp(own.get("updated_at"), f"{where}.updated_at")
    return NewCharacter(
        fields=fields,
        images=tuple(images),
        primary_index=primary_index,
        id=character_id,
        created_at=created or _card_date(data.get("creation_date")),
        updated_at=updated or _card_date(data.get("modification_date")),
    )


def _card_image(image: bytes, card: dict[str, Any]) -> PreparedImage:
    """The card's picture as castbook stores it: a PNG keeps the card (less castbook's own
    extension) in a text chunk, so a later card export keeps the keys castbook ignores."""
    prepared = prepare_reference(image, source="card image")
    if prepared.format != "PNG":
        return prepared
    spec = card["spec"]
    keep = copy.deepcopy(card)
    keep["data"].get("extensions", {}).pop(EXTENSION, None)
    assets = keep["data"].get("assets")
    if isinstance(assets, list):  # the picture itself is stored; do not store it twice
        for asset in assets:
            is_icon = isinstance(asset, dict) and asset.get("type") == "icon"
            if is_icon and str(asset.get("uri", "")).startswith(("data:", "embeded://")):
                asset["uri"] = "ccdefault:"
    text = base64.b64encode(json.dumps(keep, ensure_ascii=False).encode("utf-8")).decode("ascii")
    return prepare_reference(
        _with_text_chunk(prepared.data, _SPECS[spec][2], text), source="card image"
    )


def _card_text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    return expect(value, str, f"data.{key}").strip()


def _card_tags(data: dict[str, Any]) -> list[str]:
    tags = expect(data.get("tags"), list, "data.tags", optional=True) or []
    kept: list[str] = []
    for index, tag in enumerate(tags):
        tag = expect(tag, str, f"data.tags[{index}]").strip()
        if tag and tag.casefold() not in (t.casefold() for t in kept):
            kept.append(_clip(tag, MAX_ITEM_LENGTH))
    return kept[:MAX_LIST_ITEMS]  # cards from other tools may carry more tags than castbook


def _card_date(value: object) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + _ELLIPSIS


def _joined_description(story: dict[str, str]) -> str:
    """The card's description, personality, scenario and creator notes as castbook's one
    description: headed paragraphs after the description, clipped to castbook's limit."""
    parts = [story["description"]] if story["description"] else []
    parts += [f"{heading}: {story[key]}" for key, heading in _SECTIONS if story[key]]
    return _clip("\n\n".join(parts), MAX_TEXT_LENGTH)


def _split_description(text: str) -> dict[str, str]:
    """The inverse of :func:`_joined_description` (for an unclipped text)."""
    story = dict.fromkeys(_STORY_FIELDS, "")
    current = "description"
    pieces: dict[str, list[str]] = {key: [] for key in _STORY_FIELDS}
    order = [key for key, _ in _SECTIONS]
    for paragraph in text.strip().split("\n\n"):
        for key, heading in _SECTIONS:
            allowed = order.index(key) > (order.index(current) if current in order else -1)
            if allowed and paragraph.startswith(f"{heading}: "):
                current = key
                paragraph = paragraph.removeprefix(f"{heading}: ")
                break
        pieces[current].append(paragraph)
    for key in _STORY_FIELDS:
        story[key] = "\n\n".join(pieces[key]).strip()
    return story


# ---- a castbook character as a card -----------------------------------------------------------


def export_card_json(library: CharacterLibrary, character: Character) -> dict[str, Any]:
    """A V3 card with the primary image as a ``data:`` URL icon, for a ``.json`` file."""
    return _card(library, character, embed_image=True)


def export_card_png(library: CharacterLibrary, character: Character) -> bytes:
    """The primary image as a PNG card: a V3 ``ccv3`` chunk and a V2 ``chara`` chunk."""
    primary = character.primary_image
    if primary is None:
        raise InvalidInputError(
            f"{character.name} has no reference image, and a PNG card is an image; "
            "add one, or export --format card-json"
        )
    v3 = _card(library, character, embed_image=False)
    v2 = _as_v2(v3)
    picture = decode_image(library.image_bytes(primary), source=f"{character.name}'s image").image
    if picture.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        picture = picture.convert("RGBA" if picture.has_transparency_data else "RGB")
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", _b64_json(v2))
    info.add_text("ccv3", _b64_json(v3))
    options: dict[str, Any] = {"pnginfo": info}
    if icc := picture.info.get("icc_profile"):
        options["icc_profile"] = icc
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", **options)
    return buffer.getvalue()


def _b64_json(card: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8")).decode("ascii")


def _card(library: CharacterLibrary, character: Character, *, embed_image: bool) -> dict[str, Any]:
    base = _stored_card(library, character) or {}
    card = {
        key: value for key, value in base.items() if key not in ("spec", "spec_version", "data")
    }
    data = copy.deepcopy(_V2_DEFAULTS)
    data["group_only_greetings"] = []
    data.update(copy.deepcopy(base.get("data", {})))
    data["name"] = character.name
    story = {key: data.get(key) if isinstance(data.get(key), str) else "" for key in _STORY_FIELDS}
    if (
        not base
        or _joined_description({k: v.strip() for k, v in story.items()}) != character.description
    ):
        data.update(_split_description(character.description))  # castbook's text, or edited
    data["tags"] = list(character.tags)
    if not isinstance(data.get("extensions"), dict):
        data["extensions"] = {}
    primary = character.primary_image
    data["extensions"][EXTENSION] = _extension(library, character)
    data["creation_date"] = int(character.created_at.timestamp())
    data["modification_date"] = int(character.updated_at.timestamp())
    assets = [
        a
        for a in data.get("assets") or []
        if not (isinstance(a, dict) and a.get("type") == "icon" and a.get("name", "main") == "main")
    ]
    if primary is not None:
        if embed_image:
            picture = library.image_bytes(primary)
            if primary.media_type == "image/png":  # the card is this JSON; not again inside
                picture = _strip_card_chunks(picture, "image")
            encoded = base64.b64encode(picture).decode("ascii")
            uri = f"data:{primary.media_type};base64,{encoded}"
            ext = primary.media_type.removeprefix("image/").replace("jpeg", "jpg")
        else:
            uri, ext = "ccdefault:", "png"
        assets.insert(0, {"type": "icon", "uri": uri, "name": "main", "ext": ext})
    data["assets"] = assets
    for key in _V1_MIRROR:  # keep legacy top-level copies, where the card had them, current
        if key in card:
            card[key] = data[key]
    return {"spec": SPEC_V3, "spec_version": "3.0", **card, "data": data}


def _extension(library: CharacterLibrary, character: Character) -> dict[str, Any]:
    primary = character.primary_image
    others = [image for image in character.images if image is not primary]
    return {
        "version": EXTENSION_VERSION,
        "id": character.id,
        "description": character.description,
        "style_prompt": character.style_prompt,
        "negative_prompt": character.negative_prompt,
        "physical": character.physical.model_dump(),
        "clothing": character.clothing,
        "accessories": list(character.accessories),
        "distinctive_features": list(character.distinctive_features),
        "primary_index": character.images.index(primary) if primary is not None else 0,
        "references": [
            {
                "media_type": image.media_type,
                "data": base64.b64encode(library.image_bytes(image)).decode("ascii"),
            }
            for image in others
        ],
        "created_at": format_timestamp(character.created_at),
        "updated_at": format_timestamp(character.updated_at),
    }


def _as_v2(v3: dict[str, Any]) -> dict[str, Any]:
    """The same card for V2 readers (as SillyTavern writes its ``chara`` chunk: the V3 data
    under the V2 spec), with the V1 fields mirrored at the top for the oldest readers.
    castbook's further reference images travel in the ``ccv3`` chunk only."""
    data = copy.deepcopy({k: v for k, v in v3["data"].items() if k != "extensions"})
    data["extensions"] = {k: v for k, v in v3["data"]["extensions"].items() if k != EXTENSION}
    own = dict(v3["data"]["extensions"][EXTENSION])
    own.pop("references", None)
    data["extensions"][EXTENSION] = own
    top = {k: v for k, v in v3.items() if k not in ("spec", "spec_version", "data")}
    top.update({key: data.get(key, "") for key in _V1_MIRROR})
    return {"spec": SPEC_V2, "spec_version": "2.0", **top, "data": data}


def check_one(characters: Sequence[Character]) -> Character:
    """A card holds one character."""
    if len(characters) != 1:
        raise InvalidInputError(
            f"a character card holds one character; name one (got {len(characters)})"
        )
    return characters[0]
