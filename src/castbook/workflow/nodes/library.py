"""Nodes that bring the owner's data in: a character, a stored image."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from castbook.errors import FieldError
from castbook.workflow.nodes.base import Node, PortType, register
from castbook.workflow.values import CharacterValue, reference_of

if TYPE_CHECKING:
    from castbook.library import Character
    from castbook.workflow.context import NodeContext
    from castbook.workflow.validate import CheckContext

__all__ = ["CharacterNode", "ImageNode"]

_SHA256 = r"^[0-9a-f]{64}$"


@register
class CharacterNode(Node):
    """A character from the owner's library, by name or id; its ``image`` output is the
    primary reference image, or the reference chosen with ``reference``."""

    type: Literal["character"]
    version: ClassVar[str] = "1.1"  # 1.1: optional ``reference``; 1.0 graphs still parse
    title: ClassVar[str] = "Character"
    character: str = Field(min_length=1, max_length=100)
    reference: str | None = Field(default=None, pattern=_SHA256)
    outputs: ClassVar[dict[str, PortType]] = {
        "character": PortType.CHARACTER,
        "image": PortType.IMAGE,
    }

    def check(self, context: CheckContext) -> None:
        found = context.character("character", self.character)
        if found is not None and self.reference and not _has_image(found, self.reference):
            context.problem(
                "reference", f"{self.character} has no reference image {self.reference[:12]}"
            )
        super().check(context)

    def invoke(self, context: NodeContext) -> dict[str, Any]:
        character = context.library.find(self.character)
        if self.reference and not _has_image(character, self.reference):
            raise FieldError(
                f"{context.id}.reference",
                f"{character.name} has no reference image {self.reference[:12]}",
            )
        value = CharacterValue(character.id, character.name, self.reference)
        image = self.reference or (reference_of(character) if character.images else None)
        return {"character": value, "image": image}


def _has_image(character: Character, sha256: str) -> bool:
    return any(image.sha256 == sha256 for image in character.images)


@register
class ImageNode(Node):
    """A stored image by id (sha256): a reference image or an earlier task's result."""

    type: Literal["image"]
    title: ClassVar[str] = "Image"
    image: str = Field(pattern=_SHA256)
    outputs: ClassVar[dict[str, PortType]] = {"image": PortType.IMAGE}

    def check(self, context: CheckContext) -> None:
        if not context.owns_image(self.image):
            context.problem("image", f"no stored image {self.image[:12]}")
        super().check(context)

    def invoke(self, context: NodeContext) -> dict[str, Any]:
        if not context.blobs.exists(self.image):
            raise FieldError(f"{context.id}.image", f"no stored image {self.image[:12]}")
        return {"image": self.image}
