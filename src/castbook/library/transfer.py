"""What every import format shares: reading the file, checking values, and writing the result.

An import runs in two phases. First every entry of the file is parsed and validated —
fields, base64, image decoding, size limits — without touching the library. Then the valid
entries whose names are free are written in one transaction. Entries that fail validation
are reported as failed, names already in the library (or repeated in the file) as skipped.
An entry imported with something changed on the way in (an image converted, a name
shortened) is also listed under warnings.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from castbook.errors import CastbookError, ImportFormatError, InvalidInputError
from castbook.library.models import name_key
from castbook.library.service import CharacterLibrary, NewCharacter
from castbook.library.text import find_invalid_text

__all__ = [
    "MAX_IMPORT_FILE_BYTES",
    "ImportReport",
    "ParsedEntry",
    "apply_import",
    "decode_base64",
    "expect",
    "parse_timestamp",
    "read_json_file",
    "write_bytes_atomically",
    "write_json_atomically",
]

MAX_IMPORT_FILE_BYTES = 2 * 1024**3
_DATA_URI = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+)?(?:;[^,]*)?;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedEntry:
    """One character of an import file: either ready to write, or the reason it is not."""

    label: str
    name: str | None
    character: NewCharacter | None = None
    error: str | None = None
    warnings: tuple[str, ...] = ()  # what was changed to make the entry importable


# A format's entry parser returns the character, or the character and its warnings.
Built = NewCharacter | tuple[NewCharacter, Sequence[str]]


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    # (name as imported, what was changed): imported characters only.
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": len(self.imported),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "imported_names": self.imported,
            "skipped_details": [{"name": n, "reason": r} for n, r in self.skipped],
            "failed_details": [{"entry": e, "reason": r} for e, r in self.failed],
            "warnings": [{"name": n, "warning": w} for n, w in self.warnings],
        }


def parse_entry(label: str, raw: object, build: Callable[[dict[str, Any]], Built]) -> ParsedEntry:
    """Run one entry's parser, turning any validation problem into a failed entry."""
    name = raw.get("name") if isinstance(raw, dict) else None
    display = f"{label} ({name!r})" if isinstance(name, str) else label
    if not isinstance(raw, dict):
        return ParsedEntry(display, None, error=f"must be an object, got {type(raw).__name__}")
    bad_text = find_invalid_text(raw)
    if bad_text is not None:
        # Any field, even one the format ignores: such a file was not written by a tool
        # that keeps text intact. The entry fails alone; the others still import.
        return ParsedEntry(display, None, error=f"{bad_text.indexed()}: {bad_text.problem}")
    try:
        built = build(raw)
    except InvalidInputError as exc:
        return ParsedEntry(display, name if isinstance(name, str) else None, error=str(exc))
    character, warnings = built if isinstance(built, tuple) else (built, ())
    return ParsedEntry(
        display, name if isinstance(name, str) else None, character, warnings=tuple(warnings)
    )


def parse_entries(
    document: dict[str, Any], build: Callable[[dict[str, Any]], Built], kind: str
) -> list[ParsedEntry]:
    characters = document.get("characters")
    if not isinstance(characters, list):
        raise ImportFormatError(f"{kind} export has no 'characters' list")
    return [parse_entry(f"characters[{i}]", raw, build) for i, raw in enumerate(characters)]


def apply_import(
    library: CharacterLibrary, entries: Sequence[ParsedEntry], *, strict: bool = False
) -> ImportReport:
    """Write the valid entries whose names are free; never overwrite an existing character."""
    report = ImportReport()
    for entry in entries:
        if entry.error is not None:
            report.failed.append((entry.label, entry.error))
    if strict and report.failed:
        label, reason = report.failed[0]
        raise ImportFormatError(
            f"{len(report.failed)} of {len(entries)} characters are invalid, nothing was imported "
            f"(--strict); first: {label}: {reason}"
        )
    existing = {name_key(character.name): character.name for character in library.list()}
    taken = set(existing)
    to_write: list[NewCharacter] = []
    warnings: list[tuple[str, str]] = []
    for entry in entries:
        if entry.character is None:
            continue
        name = entry.character.fields.name
        key = name_key(name)
        if key in taken:
            report.skipped.append((name, _clash_reason(name, key, existing, to_write)))
            continue
        taken.add(key)
        to_write.append(entry.character)
        warnings.extend((name, warning) for warning in entry.warnings)
    library.create_many(to_write)
    report.imported = [character.fields.name for character in to_write]
    report.warnings = warnings
    return report


def _clash_reason(
    name: str, key: str, existing: dict[str, str], to_write: Sequence[NewCharacter]
) -> str:
    earlier = next((c.fields.name for c in to_write if name_key(c.fields.name) == key), None)
    if earlier is not None:
        return "the name appears earlier in the same file"
    if existing[key] == name:
        return "a character with this name already exists"
    # Another tool may keep "alice" and "Alice" apart; castbook cannot, so say which one.
    return (
        f"a character with this name already exists: {existing[key]!r} "
        "(names are unique ignoring case; rename one to keep both)"
    )


# ---- value checks shared by the format parsers ---------------------------------------------


def expect(
    value: object, kind: type | tuple[type, ...], where: str, *, optional: bool = False
) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        value_kind = "boolean"
    elif isinstance(value, kind):
        return value
    else:
        value_kind = "null" if value is None else type(value).__name__
    names = {
        str: "text",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
        bool: "true/false",
    }
    wanted = " or ".join(
        names.get(k, k.__name__) for k in (kind if isinstance(kind, tuple) else (kind,))
    )
    raise InvalidInputError(f"{where} must be {wanted}, got {value_kind}")


def decode_base64(value: object, where: str) -> bytes:
    """Decode base64 text, with or without a ``data:image/...;base64,`` prefix."""
    text = expect(value, str, where)
    match = _DATA_URI.match(text)
    if match:
        text = text[match.end() :]
    text = "".join(text.split())
    if not text:
        raise InvalidInputError(f"{where} is empty")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(
            f"{where} is not valid base64 ({exc}); the file may be cut short"
        ) from None


def parse_timestamp(value: object, where: str) -> datetime | None:
    """ISO 8601 text or a JavaScript millisecond timestamp; ``None`` when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidInputError(f"{where} is not a usable timestamp: {value!r}") from None
    text = expect(value, str, where)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"{where} is not an ISO 8601 date: {text!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---- files --------------------------------------------------------------------------------


def read_json_file(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidInputError(f"import file not found: {path}") from None
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder; give the exported .json file")
    if size > MAX_IMPORT_FILE_BYTES:
        raise ImportFormatError(f"{path} is {size / 1024**3:.1f} GB; the import limit is 2 GB")
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except RecursionError:
        raise ImportFormatError(
            f"{path} nests its JSON too deeply to read (an export is a few levels deep); "
            "it is not a character export"
        ) from None
    except UnicodeDecodeError:
        raise ImportFormatError(f"{path} is not a JSON text file") from None
    except json.JSONDecodeError as exc:
        raise ImportFormatError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "was the file cut short?"
        ) from None


@contextmanager
def _atomic_file(path: Path, mode: str, **options: Any) -> Iterator[IO[Any]]:
    """A file that appears under ``path`` only once it is complete: the target is either
    the old file or the whole new one, never half of it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CastbookError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, mode, **options) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomically(path: str | os.PathLike[str], document: Any) -> None:
    """Write JSON so that the target is either the old file or the complete new one."""
    with _atomic_file(Path(path), "w", encoding="utf-8") as handle:
        json.dump(document, handle, ensure_ascii=False, indent=2)
        handle.write("\n")


def write_bytes_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes (a PNG card) so that the target is the old file or the complete new one."""
    with _atomic_file(Path(path), "wb") as handle:
        handle.write(data)
