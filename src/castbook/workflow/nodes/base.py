"""What every node type is made of: typed ports, the :class:`Node` base and the registry.

A node type is one class: its literal inputs are pydantic fields, its ports, outputs, title
and mode are class data, :meth:`Node.check` says what only the owner's data can tell of it,
and :meth:`Node.invoke` runs it. :func:`register` adds it to :data:`NODE_TYPES`, which the
graph parser, the validator, the runner and the catalogue all read.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from castbook.errors import FieldError
from castbook.generation.request import PROMPT_MAX, Mode, within

if TYPE_CHECKING:
    from castbook.workflow.context import NodeContext
    from castbook.workflow.validate import CheckContext

__all__ = [
    "NODE_TYPES",
    "Node",
    "Port",
    "PortType",
    "Prompt",
    "accepted_types",
    "accepts",
    "limits",
    "register",
]


class PortType(StrEnum):
    IMAGE = "image"
    IMAGES = "images"
    CHARACTER = "character"
    VIDEO = "video"
    SCORES = "scores"
    ANY = "any"


# What a port of each type takes, besides its own type.
_ALSO_ACCEPTS: dict[PortType, frozenset[PortType]] = {
    PortType.IMAGE: frozenset({PortType.CHARACTER}),
    PortType.IMAGES: frozenset({PortType.IMAGE, PortType.CHARACTER}),
}


def accepts(port: PortType, given: PortType) -> bool:
    """Whether an input port of type ``port`` may be wired to an output of type ``given``."""
    if port == PortType.ANY or port == given:
        return True
    return given in _ALSO_ACCEPTS.get(port, frozenset())


def accepted_types(port: PortType) -> list[str]:
    """The output types an input port of type ``port`` takes: its own first, then the others
    sorted; ``["*"]`` for a port that takes anything."""
    if port == PortType.ANY:
        return ["*"]
    return [port.value, *sorted(t.value for t in _ALSO_ACCEPTS.get(port, ()))]


@dataclass(frozen=True)
class Port:
    """An input that takes links. ``many``: a list of links; ``names``: items may also be
    character names or ids instead of links."""

    type: PortType
    required: bool = True
    many: bool = False
    names: bool = False

    def rule(self) -> str:
        if self.type == PortType.ANY:
            return "anything"
        return " or ".join(sorted(accepted_types(self.type)))


limits = within  # the API's range of a request field, as ``Field`` keywords


Prompt = Annotated[str, Field(max_length=PROMPT_MAX)]


class Node(BaseModel):
    """Base of every node: literal inputs as fields; ports, outputs and behaviour as class
    data and methods."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    version: ClassVar[str] = "1.0"
    title: ClassVar[str] = ""
    mode: ClassVar[Mode | None] = None  # what its ``preset`` field must do, if it renders
    ports: ClassVar[dict[str, Port]] = {}
    outputs: ClassVar[dict[str, PortType]] = {}
    scored: ClassVar[bool] = False  # uses the scorer: its feature set is in the signature
    workflow_output: ClassVar[bool] = False  # its ``value`` is one of the workflow's outputs
    renamed: ClassVar[dict[str, str]] = {}  # old input name -> its name now (saved graphs)
    # Its ``characters`` send their reference images to the model too, so the preset must
    # have room for them; False: only their words (style prompt, traits, negative prompt).
    character_images: ClassVar[bool] = True

    @classmethod
    def type_id(cls) -> str:
        """The ``type`` a graph names it by (the literal of its ``type`` field)."""
        return str(cls.model_fields["type"].annotation.__args__[0])  # type: ignore[union-attr]

    def reusable(self) -> bool:
        """Whether its outputs follow from its inputs alone, so that a re-run may take an
        earlier run's (see :mod:`castbook.workflow.cache`); cheap nodes say no."""
        return False

    def check(self, context: CheckContext) -> None:
        """Report (``context.problem``) what only the owner's data can tell of this node. By
        default: a rendering node's preset exists, does ``mode`` and has room for its
        ``characters`` (when it sends their images); every character named in a port exists
        and has a reference image."""
        if self.mode is not None:
            preset = context.preset(getattr(self, "preset", None), self.mode)
            count = context.character_count("characters") if self.character_images else 0
            if preset is not None and count and (problem := context.room(preset, count, self.mode)):
                context.problem("characters", problem)
        for name, port in self.ports.items():
            if port.names:
                for index, ref in context.names(name):
                    context.character(f"{name}.{index}", ref)

    def invoke(self, context: NodeContext) -> dict[str, Any]:
        """Run the node: its outputs by name (ids, never pixels; files kept with
        ``context.keep``)."""
        raise FieldError(context.id, f"node type {self.type!r} does not run")


NODE_TYPES: dict[str, type[Node]] = {}
"""Every node type by its ``type``, in the order the catalogue lists them."""

N = TypeVar("N", bound=type[Node])


def register(cls: N) -> N:
    """Class decorator: make a node type known to graphs, the runner and the catalogue."""
    kind = cls.type_id()
    if kind in NODE_TYPES:
        raise ValueError(f"node type {kind!r} is registered already")
    NODE_TYPES[kind] = cls
    return cls
