"""The one small protocol every generation backend implements, and what flows through it.

A backend receives a :class:`PreparedRequest` — the user's request with the characters
already injected into the prompt and every image input decoded — and a progress callback.
It returns a :class:`GenerationResult`. Cancelling is done from the callback: when it
raises :class:`~castbook.errors.GenerationCancelled` the backend stops between steps and
lets the exception through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from castbook.generation.request import GenerationRequest, Mode

__all__ = [
    "Backend",
    "GenerationResult",
    "LoraUse",
    "PreparedRequest",
    "Progress",
    "ProgressCallback",
    "Video",
    "image_key",
    "no_progress",
]


@dataclass(frozen=True)
class Progress:
    """``step`` of ``total`` denoising (or polling) steps done; ``message`` is for humans."""

    step: int
    total: int
    message: str = ""


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    return None


@dataclass(frozen=True)
class LoraUse:
    """A character's LoRA to apply: its stored file (``path``, named by ``sha256``), the
    weight to apply it at, and who it is for (for metadata)."""

    character: str
    sha256: str
    path: str
    weight: float
    trigger: str
    base_model: str

    def described(self) -> dict[str, Any]:
        return {
            "character": self.character,
            "sha256": self.sha256,
            "weight": self.weight,
            "trigger": self.trigger,
            "base_model": self.base_model,
        }


@dataclass(frozen=True)
class PreparedRequest:
    """A request ready for a backend: final prompts, decoded image inputs, a fixed seed."""

    request: GenerationRequest
    prompt: str
    negative_prompt: str
    seed: int
    # Character and user reference images, for the backend's image-prompt input
    # (IP-Adapter for diffusers, image[] for OpenAI edits, an upload for ComfyUI).
    references: tuple[Image.Image, ...] = ()
    # The source image for i2i and i2v.
    init_image: Image.Image | None = None
    # Options from the preset that only the backend understands (model paths, scales …).
    options: dict[str, Any] = field(default_factory=dict)
    # The stored id (sha256 of the file) of references[i], for the first references; an
    # image added later without one (a story's previous panel) is keyed by its pixels.
    reference_ids: tuple[str, ...] = ()
    # The stored bytes of references[i] where castbook has them (a character's reference, a
    # stored or file reference): a hosted backend may send them as they are instead of
    # re-encoding the decoded picture (Gemini's inline image parts).
    reference_data: tuple[bytes, ...] = ()
    # The characters' LoRAs for this preset's base model (diffusers applies them), and what
    # was not applied and why (another base model, a backend that takes none).
    loras: tuple[LoraUse, ...] = ()
    lora_notes: tuple[str, ...] = ()

    @property
    def mode(self) -> Mode:
        return self.request.mode

    def reference_keys(self) -> tuple[str, ...]:
        """One key per reference image, equal for equal images: caches (the IP-Adapter's
        embeddings) key on it. Stored ids cost nothing; others hash their pixels."""
        known = self.reference_ids[: len(self.references)]
        return (*known, *(image_key(image) for image in self.references[len(known) :]))


def image_key(image: Image.Image) -> str:
    """A key for an image that has no stored id: sha256 of its size and RGB pixels."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return "pixels:" + digest.hexdigest()


@dataclass(frozen=True)
class Video:
    frames: tuple[Image.Image, ...]
    fps: int


@dataclass(frozen=True)
class GenerationResult:
    """``images`` for t2i/i2i (``batch`` of them); ``videos`` for i2v (``batch`` of them)."""

    images: tuple[Image.Image, ...] = ()
    videos: tuple[Video, ...] = ()
    seed: int = 0
    # What produced it (backend, model, sizes …), recorded beside the outputs.
    metadata: dict[str, Any] = field(default_factory=dict)

    def image_seeds(self) -> list[int | None]:
        """Each image's seed: the backend's own list (``metadata["seeds"]``), else the
        request's seed for a single image (what every backend draws it with); None where a
        batch's backend did not say."""
        seeds = self.metadata.get("seeds")
        if isinstance(seeds, list | tuple) and len(seeds) == len(self.images):
            return list(seeds)
        if len(self.images) == 1:
            return [self.seed]
        return [None] * len(self.images)


@runtime_checkable
class Backend(Protocol):
    """Turns a prepared request into images or videos.

    ``max_references`` says how many reference images it can take at once (0 = none);
    asking for more is refused before ``generate`` is called.
    """

    name: str
    max_references: int

    def generate(
        self, request: PreparedRequest, progress: ProgressCallback
    ) -> GenerationResult: ...
