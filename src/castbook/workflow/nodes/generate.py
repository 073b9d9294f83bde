"""Nodes that render with a preset: text to image, image to image, image to video."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from castbook.errors import FieldError
from castbook.generation import (
    GenerationRequest,
    Mode,
    PreparedRequest,
    Preset,
    prepare_request,
    resolve_request,
    run_generation,
)
from castbook.generation.outputs import encode_mp4, encode_png, generation_parameters
from castbook.jobs import JobOutput
from castbook.workflow.nodes.base import Node, Port, PortType, Prompt, limits, register

if TYPE_CHECKING:
    from castbook.workflow.context import NodeContext

__all__ = ["ImageToImageNode", "ImageToVideoNode", "TextToImageNode"]

_RENDER_FIELDS = ("negative_prompt", "width", "height", "steps", "guidance", "seed")


class _Rendering(Node):
    """Fields the generation nodes share, with the API's ranges; None: the preset's default."""

    prompt: Prompt = ""
    negative_prompt: Prompt | None = None
    preset: str | None = None
    width: int | None = Field(default=None, **limits("width"))
    height: int | None = Field(default=None, **limits("height"))
    steps: int | None = Field(default=None, **limits("steps"))
    guidance: float | None = Field(default=None, **limits("guidance"))
    seed: int | None = Field(default=None, ge=0, lt=2**32)

    def reusable(self) -> bool:
        return self.seed is not None  # without a seed every run is meant to differ

    def request_values(self) -> dict[str, Any]:
        """What this type adds to the request's values (its mode's own fields)."""
        return {}

    def prepare(
        self, request: GenerationRequest, preset: Preset, context: NodeContext
    ) -> PreparedRequest:
        """The request as the backend gets it: characters injected, images decoded."""
        return prepare_request(request, preset, library=context.library)

    def invoke(self, context: NodeContext) -> dict[str, Any]:
        assert self.mode is not None
        values: dict[str, Any] = {
            k: getattr(self, k) for k in _RENDER_FIELDS if getattr(self, k) is not None
        }
        values.update(prompt=self.prompt, mode=self.mode, **self.request_values())
        if "characters" in self.ports:
            values["characters"] = context.characters("characters")
        if "image" in self.ports:
            values["init_image"] = context.image("image")
        preset = context.preset(self.preset, self.mode)
        try:
            request = resolve_request(values, preset)
        except FieldError as exc:
            raise FieldError(f"{context.id}.{exc.field}", str(exc)) from None
        prepared = self.prepare(request, preset, context)
        # What the model is given, after the characters' style prompts and traits.
        context.report(
            prompt=prepared.prompt,
            negative_prompt=prepared.negative_prompt,
            preset=preset.id,
            characters=list(values.get("characters", [])),
        )
        context.progress(0, request.steps)
        result = run_generation(
            context.backend(preset),
            prepared,
            lambda event: context.progress(event.step, event.total),
        )
        if request.mode == Mode.I2V:
            video = result.videos[0]
            width, height = video.frames[0].size
            output = JobOutput("", "video", "video/mp4", width, height, result.seed)
            return {"video": context.keep(encode_mp4(video), output)}
        seeds = result.image_seeds()
        shas = []
        for index, image in enumerate(result.images):
            data = encode_png(image, generation_parameters(prepared, result, index))
            output = JobOutput("", "image", "image/png", image.width, image.height, seeds[index])
            shas.append(context.keep(data, output))
        return {"images": shas}


@register
class TextToImageNode(_Rendering):
    """Pictures from a prompt; wired characters are injected (style prompt, traits and
    reference images)."""

    type: Literal["text_to_image"]
    title: ClassVar[str] = "Text to image"
    mode: ClassVar[Mode | None] = Mode.T2I
    batch: int = Field(default=1, **limits("batch"))
    reference_scale: float | None = Field(default=None, **limits("reference_scale"))
    ports: ClassVar[dict[str, Port]] = {
        "characters": Port(PortType.CHARACTER, required=False, many=True, names=True),
    }
    outputs: ClassVar[dict[str, PortType]] = {"images": PortType.IMAGES}

    def request_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {"batch": self.batch}
        if self.reference_scale is not None:
            values["reference_scale"] = self.reference_scale
        return values


@register
class ImageToImageNode(_Rendering):
    """Redraws an image (``denoise``: how much changes), with characters injected."""

    type: Literal["image_to_image"]
    title: ClassVar[str] = "Image to image"
    mode: ClassVar[Mode | None] = Mode.I2I
    denoise: float = Field(default=0.75, **limits("denoise"))
    renamed: ClassVar[dict[str, str]] = {"strength": "denoise"}
    batch: int = Field(default=1, **limits("batch"))
    ports: ClassVar[dict[str, Port]] = {
        "image": Port(PortType.IMAGE),
        "characters": Port(PortType.CHARACTER, required=False, many=True, names=True),
    }
    outputs: ClassVar[dict[str, PortType]] = {"images": PortType.IMAGES}

    def request_values(self) -> dict[str, Any]:
        return {"batch": self.batch, "denoise": self.denoise}


@register
class ImageToVideoNode(_Rendering):
    """A short video that starts from an image; wired characters are injected (style prompt,
    traits and negative prompt; the image is what moves, so their reference images are not
    sent)."""

    type: Literal["image_to_video"]
    version: ClassVar[str] = "1.1"  # 1.1: ``characters``
    title: ClassVar[str] = "Image to video"
    mode: ClassVar[Mode | None] = Mode.I2V
    num_frames: int | None = Field(default=None, **limits("num_frames"))
    fps: int | None = Field(default=None, **limits("fps"))
    ports: ClassVar[dict[str, Port]] = {
        "image": Port(PortType.IMAGE),
        "characters": Port(PortType.CHARACTER, required=False, many=True, names=True),
    }
    outputs: ClassVar[dict[str, PortType]] = {"video": PortType.VIDEO}
    character_images: ClassVar[bool] = False

    def request_values(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("num_frames", "fps") if getattr(self, k)}

    def prepare(
        self, request: GenerationRequest, preset: Preset, context: NodeContext
    ) -> PreparedRequest:
        # The characters' words only: a video model animates the wired image and takes no
        # reference images beside it (AnimateDiff without an IP-Adapter takes none at all).
        prepared = super().prepare(request, preset, context)
        return replace(prepared, references=(), reference_ids=(), reference_data=())
