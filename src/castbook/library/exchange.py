"""Export to and import from files, choosing the format."""

from __future__ import annotations

import os
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from castbook.errors import ImportFormatError
from castbook.library import castbook_json, nbp_json
from castbook.library.models import Character
from castbook.library.service import CharacterLibrary
from castbook.library.transfer import (
    ImportReport,
    ParsedEntry,
    apply_import,
    read_json_file,
    write_json_atomically,
)

__all__ = [
    "ExportFormat",
    "export_characters",
    "export_to_file",
    "import_document",
    "import_file",
    "parse_any",
]


class ExportFormat(StrEnum):
    CASTBOOK = "castbook"
    NBP = "nbp"


def export_characters(
    library: CharacterLibrary,
    characters: Sequence[Character],
    fmt: ExportFormat = ExportFormat.CASTBOOK,
) -> dict[str, Any]:
    module = castbook_json if fmt == ExportFormat.CASTBOOK else nbp_json
    return module.export_document(library, characters)


def export_to_file(
    library: CharacterLibrary,
    characters: Sequence[Character],
    path: str | os.PathLike[str],
    fmt: ExportFormat = ExportFormat.CASTBOOK,
) -> None:
    write_json_atomically(path, export_characters(library, characters, fmt))


def parse_any(document: Any) -> list[ParsedEntry]:
    """Validate a whole export document of either format; the library is not touched."""
    if castbook_json.is_castbook_document(document):
        return castbook_json.parse_document(document)
    if nbp_json.is_nbp_document(document):
        return nbp_json.parse_document(document)
    raise ImportFormatError(
        "not a character export castbook knows: expected a castbook export "
        f'("format": "{castbook_json.FORMAT}") or an nbp character library ("type": "characters")'
    )


def import_document(
    library: CharacterLibrary, document: Any, *, strict: bool = False
) -> ImportReport:
    return apply_import(library, parse_any(document), strict=strict)


def import_file(
    library: CharacterLibrary, path: str | os.PathLike[str], *, strict: bool = False
) -> ImportReport:
    return import_document(library, read_json_file(path), strict=strict)
