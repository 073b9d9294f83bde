"""The workflow node types: typed inputs, a type id, a version, typed output ports.

A node's *literal* inputs are the fields of its pydantic model (ranges as the API's, from
:data:`castbook.generation.request.LIMITS`); its *port* inputs take links to other nodes'
outputs and are declared in ``ports``. Wiring rules by port type: an ``image`` port takes an
image or a character (its primary reference image); an ``images`` port takes images or a
single image; ``character``, ``video`` and ``scores`` take only their own type; the output
node's ``value`` takes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from castbook.generation.request import LIMITS, Mode

__all__ = [
    "NODE_TYPES",
    "BatchRenderNode",
    "CharacterNode",
    "ConsistencyEvalNode",
    "ImageNode",
    "ImageToImageNode",
    "ImageToVideoNode",
    "Node",
    "OutputNode",
    "Port",
    "PortType",
    "TextToImageNode",
    "accepted_types",
    "accepts",
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


def _range(name: str) -> dict[str, float]:
    low, high = LIMITS[name]
    return {"ge": low, "le": high}


_Prompt = Annotated[str, Field(max_length=4000)]


class Node(BaseModel):
    """Base of every node: literal inputs as fields; ports and outputs as class data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    version: ClassVar[str] = "1.0"
    title: ClassVar[str] = ""
    mode: ClassVar[Mode | None] = None  # what its ``preset`` must do, for nodes that generate
    ports: ClassVar[dict[str, Port]] = {}
    outputs: ClassVar[dict[str, PortType]] = {}


class _Rendering(Node):
    """Fields the generation nodes share, with the API's ranges; None: the preset's default."""

    prompt: _Prompt = ""
    negative_prompt: _Prompt | None = None
    preset: str | None = None
    width: int | None = Field(default=None, **_range("width"))
    height: int | None = Field(default=None, **_range("height"))
    steps: int | None = Field(default=None, **_range("steps"))
    guidance: float | None = Field(default=None, **_range("guidance"))
    seed: int | None = Field(default=None, ge=0, lt=2**32)


class CharacterNode(Node):
    """A character from the owner's library, by name or id; its ``image`` output is the
    primary reference image, or the reference chosen with ``reference``."""

    type: Literal["character"]
    version: ClassVar[str] = "1.1"  # 1.1: optional ``reference``; 1.0 graphs still parse
    title: ClassVar[str] = "Character"
    character: str = Field(min_length=1, max_length=100)
    reference: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    outputs: ClassVar[dict[str, PortType]] = {
        "character": PortType.CHARACTER,
        "image": PortType.IMAGE,
    }


class ImageNode(Node):
    """A stored image by id (sha256): a reference image or an earlier task's result."""

    type: Literal["image"]
    title: ClassVar[str] = "Image"
    image: str = Field(pattern=r"^[0-9a-f]{64}$")
    outputs: ClassVar[dict[str, PortType]] = {"image": PortType.IMAGE}


class TextToImageNode(_Rendering):
    """Pictures from a prompt; wired characters are injected (style prompt, traits and
    reference images)."""

    type: Literal["text_to_image"]
    title: ClassVar[str] = "Text to image"
    mode: ClassVar[Mode | None] = Mode.T2I
    batch: int = Field(default=1, **_range("batch"))
    reference_scale: float | None = Field(default=None, **_range("reference_scale"))
    ports: ClassVar[dict[str, Port]] = {
        "characters": Port(PortType.CHARACTER, required=False, many=True, names=True),
    }
    outputs: ClassVar[dict[str, PortType]] = {"images": PortType.IMAGES}


class ImageToImageNode(_Rendering):
    """Redraws an image (``strength``: how much changes), with characters injected."""

    type: Literal["image_to_image"]
    title: ClassVar[str] = "Image to image"
    mode: ClassVar[Mode | None] = Mode.I2I
    strength: float = Field(default=0.75, **_range("strength"))
    batch: int = Field(default=1, **_range("batch"))
    ports: ClassVar[dict[str, Port]] = {
        "image": Port(PortType.IMAGE),
        "characters": Port(PortType.CHARACTER, required=False, many=True, names=True),
    }
    outputs: ClassVar[dict[str, PortType]] = {"images": PortType.IMAGES}


class ImageToVideoNode(_Rendering):
    """A short video that starts from an image."""

    type: Literal["image_to_video"]
    title: ClassVar[str] = "Image to video"
    mode: ClassVar[Mode | None] = Mode.I2V
    num_frames: int | None = Field(default=None, **_range("num_frames"))
    fps: int | None = Field(default=None, **_range("fps"))
    ports: ClassVar[dict[str, Port]] = {"image": Port(PortType.IMAGE)}
    outputs: ClassVar[dict[str, PortType]] = {"video": PortType.VIDEO}


class BatchRenderNode(Node):
    """Prompt variants of the same characters, each scored, the best marked."""

    type: Literal["batch_render"]
    title: ClassVar[str] = "Batch render"
    mode: ClassVar[Mode | None] = Mode.T2I
    prompts: list[_Prompt] = Field(min_length=1, max_length=8)
    preset: str | None = None
    min_score: float | None = Field(default=None, ge=0, le=100)
    max_attempts: int = Field(default=1, ge=1, le=10)
    width: int | None = Field(default=None, **_range("width"))
    height: int | None = Field(default=None, **_range("height"))
    steps: int | None = Field(default=None, **_range("steps"))
    guidance: float | None = Field(default=None, **_range("guidance"))
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    ports: ClassVar[dict[str, Port]] = {
        "characters": Port(PortType.CHARACTER, many=True, names=True),
    }
    outputs: ClassVar[dict[str, PortType]] = {
        "images": PortType.IMAGES,
        "scores": PortType.SCORES,
        "best": PortType.IMAGE,
    }


class ConsistencyEvalNode(Node):
    """Scores images against a character's reference images (0-100) and picks the best."""

    type: Literal["consistency_eval"]
    title: ClassVar[str] = "Consistency eval"
    ports: ClassVar[dict[str, Port]] = {
        "images": Port(PortType.IMAGES),
        "character": Port(PortType.CHARACTER),
    }
    outputs: ClassVar[dict[str, PortType]] = {"scores": PortType.SCORES, "best": PortType.IMAGE}


class OutputNode(Node):
    """Marks a value as a result of the workflow."""

    type: Literal["output"]
    title: ClassVar[str] = "Output"
    label: str | None = Field(default=None, max_length=100)
    ports: ClassVar[dict[str, Port]] = {"value": Port(PortType.ANY)}


NODE_TYPES: dict[str, type[Node]] = {
    "character": CharacterNode,
    "image": ImageNode,
    "text_to_image": TextToImageNode,
    "image_to_image": ImageToImageNode,
    "image_to_video": ImageToVideoNode,
    "batch_render": BatchRenderNode,
    "consistency_eval": ConsistencyEvalNode,
    "output": OutputNode,
}
