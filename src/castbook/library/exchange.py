"""Export to and import from files, choosing the format."""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from castbook.errors import ImportFormatError, InvalidInputError
from castbook.library import cards, castbook_json, nbp_json
from castbook.library.models import Character
from castbook.library.service import CharacterLibrary
from castbook.library.transfer import (
    ImportReport,
    ParsedEntry,
    apply_import,
    read_json_file,
    write_bytes_atomically,
    write_json_atomically,
)

__all__ = [
    "ExportFormat",
    "export_card",
    "export_characters",
    "export_to_file",
    "import_card_bytes",
    "import_document",
    "import_file",
    "lora_warnings",
    "parse_any",
    "write_bytes_atomically",
]


class ExportFormat(StrEnum):
    CASTBOOK = "castbook"
    NBP = "nbp"
    CARD = "card"  # a PNG character card (V3 and V2 chunks), one character
    CARD_JSON = "card-json"  # the card as JSON (Character Card V3), one character


def export_characters(
    library: CharacterLibrary,
    characters: Sequence[Character],
    fmt: ExportFormat = ExportFormat.CASTBOOK,
) -> dict[str, Any]:
    """A JSON export; ``card`` (a PNG) is bytes: use :func:`export_card`."""
    if fmt == ExportFormat.CARD:
        raise InvalidInputError("a PNG card is an image, not JSON; use export_card")
    if fmt == ExportFormat.CARD_JSON:
        return cards.export_card_json(library, cards.check_one(characters))
    module = castbook_json if fmt == ExportFormat.CASTBOOK else nbp_json
    return module.export_document(library, characters)


def lora_warnings(
    library: CharacterLibrary, characters: Sequence[Character], fmt: ExportFormat
) -> list[str]:
    """A line per character whose LoRA ``fmt`` leaves out: only castbook's own format
    carries trained adapters."""
    if fmt == ExportFormat.CASTBOOK:
        return []
    return [
        f"{character.name}'s LoRA is not in the {fmt.value} format; export with "
        "format castbook to keep it"
        for character in characters
        if library.loras(character)
    ]


def export_card(library: CharacterLibrary, characters: Sequence[Character]) -> bytes:
    """One character as a PNG character card."""
    return cards.export_card_png(library, cards.check_one(characters))


def export_to_file(
    library: CharacterLibrary,
    characters: Sequence[Character],
    path: str | os.PathLike[str],
    fmt: ExportFormat = ExportFormat.CASTBOOK,
) -> None:
    if fmt == ExportFormat.CARD:
        write_bytes_atomically(path, export_card(library, characters))
        return
    write_json_atomically(path, export_characters(library, characters, fmt))


def parse_any(document: Any) -> list[ParsedEntry]:
    """Validate a whole export document of either format; the library is not touched."""
    if castbook_json.is_castbook_document(document):
        return castbook_json.parse_document(document)
    if nbp_json.is_nbp_document(document):
        return nbp_json.parse_document(document)
    if cards.is_card_document(document):
        return cards.parse_document(document)
    raise ImportFormatError(
        "not a character export castbook knows: expected a castbook export "
        f'("format": "{castbook_json.FORMAT}"), an nbp character library ("type": "characters") '
        f'or a character card ("spec": "{cards.SPEC_V3}" or "{cards.SPEC_V2}")'
    )


def import_document(
    library: CharacterLibrary, document: Any, *, strict: bool = False
) -> ImportReport:
    return apply_import(library, parse_any(document), strict=strict)


def import_card_bytes(
    library: CharacterLibrary, data: bytes, *, source: str = "card", strict: bool = False
) -> ImportReport:
    """A PNG card, a .charx or a JSON card, as uploaded."""
    return apply_import(library, cards.parse_card_bytes(data, source=source), strict=strict)


def import_file(
    library: CharacterLibrary, path: str | os.PathLike[str], *, strict: bool = False
) -> ImportReport:
    """A castbook or nbp export or a JSON card (JSON), a PNG card or a .charx (zip)."""
    if _is_binary_card(path):
        with open(path, "rb") as handle:
            data = handle.read(cards.MAX_CARD_FILE_BYTES + 1)
        return import_card_bytes(library, data, source=Path(path).name, strict=strict)
    return import_document(library, read_json_file(path), strict=strict)


def _is_binary_card(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False  # read_json_file says what is wrong with the path
    return head.startswith((b"\x89PNG\r\n\x1a\n", b"PK\x03\x04"))
