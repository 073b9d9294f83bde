"""Values passed between nodes: ids, never pixels. An image is its blob id (sha256); a
character is a :class:`CharacterValue`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from castbook.errors import FieldError
from castbook.library import Character

__all__ = ["CharacterValue", "reference_of", "to_json"]


@dataclass(frozen=True)
class CharacterValue:
    id: str
    name: str
    reference: str | None = None  # the chosen reference image; None: the primary one

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}


def reference_of(character: Character) -> str:
    """The character's primary reference image."""
    primary = character.primary_image
    if primary is None:
        raise FieldError("image", f"{character.name} has no reference image; upload one first")
    return primary.sha256


def to_json(value: Any) -> Any:
    """A node's output as the task's result shows it."""
    if isinstance(value, CharacterValue):
        return value.to_json()
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value
