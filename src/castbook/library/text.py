"""Text castbook can keep: every string it stores or sends must be valid Unicode.

A JSON ``"\\ud800"`` escape, or command-line bytes that are not UTF-8 (Python decodes them
with ``surrogateescape``), give strings holding *lone surrogates*. No database, file or HTTP
answer can encode them, so they are refused where they come in, naming the field, instead of
failing later in the middle of a write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from castbook.errors import FieldError

__all__ = ["InvalidText", "check_text_fields", "find_invalid_text", "invalid_text"]


def invalid_text(text: str) -> str | None:
    """Why ``text`` cannot be kept (one phrase), or ``None`` when it is fine."""
    if text.isascii():  # the common case, checked at C speed
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        return (
            f"contains {bad[:1]!r} at position {exc.start}, a lone surrogate that is not "
            "valid Unicode text; send the text as UTF-8"
        )
    return None


@dataclass(frozen=True)
class InvalidText:
    """Where a string that cannot be kept was found, and why."""

    path: tuple[str | int, ...]  # keys and list positions from the top, () for the top
    problem: str

    def dotted(self) -> str:
        """``traits.hair``, ``prompts.2``: how the HTTP API names fields."""
        return ".".join(str(part) for part in self.path)

    def indexed(self) -> str:
        """``images[0].name``: how import reports name the parts of an entry."""
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else f".{part}"
        return text.removeprefix(".")


def find_invalid_text(value: object) -> InvalidText | None:
    """The first string in a JSON-like value (keys included) that cannot be kept; ``None``
    when every string is fine. Walks with its own stack, so any depth is safe."""
    stack: list[tuple[tuple[str | int, ...], object]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            problem = invalid_text(item)
            if problem is not None:
                return InvalidText(path, problem)
        elif isinstance(item, Mapping):
            children: list[tuple[tuple[str | int, ...], object]] = []
            for key, child in item.items():
                key_text = str(key)
                problem = invalid_text(key_text)
                if problem is not None:
                    return InvalidText((*path, ascii(key_text)), f"the key {problem}")
                children.append(((*path, key_text), child))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend(reversed([((*path, i), child) for i, child in enumerate(item)]))
    return None


def check_text_fields(values: Mapping[str, object]) -> None:
    """Raise :class:`FieldError` naming the first field whose text cannot be kept."""
    found = find_invalid_text(values)
    if found is not None:
        raise FieldError(found.dotted(), found.problem)
