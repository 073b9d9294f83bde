"""What a user asks a generation for, validated with the ranges users already know."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from castbook.errors import FieldError

__all__ = ["LIMITS", "GenerationRequest", "Mode", "parse_request"]


class Mode(StrEnum):
    T2I = "t2i"  # text to image
    I2I = "i2i"  # image to image (init image + strength)
    I2V = "i2v"  # image to video


# The face-consistency API's ranges (ARCHITECTURE.md), shared by every entry point.
LIMITS = {
    "batch": (1, 8),
    "width": (256, 1536),
    "height": (256, 1536),
    "steps": (1, 50),
    "guidance": (1.0, 30.0),
    "strength": (0.0, 1.0),
    "num_frames": (2, 64),
    "fps": (1, 60),
    "reference_scale": (0.0, 2.0),
}


class GenerationRequest(BaseModel):
    """A generation as the user asked for it; ids only, never pixels (it travels to workers).

    ``characters`` are character names or ids whose style prompt and traits are injected into
    the prompt and whose reference images go to the backend's image inputs. ``references``
    are extra reference images and ``init_image`` the source image for i2i/i2v, each as a
    blob id (sha256) or a file path.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode = Mode.T2I
    prompt: str = Field(default="", max_length=4000)
    negative_prompt: str = Field(default="", max_length=4000)
    width: int = Field(default=512, ge=256, le=1536)
    height: int = Field(default=512, ge=256, le=1536)
    steps: int = Field(default=30, ge=1, le=50)
    guidance: float = Field(default=7.5, ge=1.0, le=30.0)
    strength: float = Field(default=0.75, ge=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    batch: int = Field(default=1, ge=1, le=8)
    characters: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    init_image: str | None = None
    num_frames: int = Field(default=16, ge=2, le=64)
    fps: int = Field(default=8, ge=1, le=60)
    reference_scale: float = Field(default=0.6, ge=0.0, le=2.0)

    @field_validator("characters", "references")
    @classmethod
    def _no_blanks(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        if any(not v.strip() for v in values):
            raise ValueError("must not contain empty entries")
        return values


def parse_request(values: dict[str, object]) -> GenerationRequest:
    """Build a request; the first problem becomes a FieldError naming the field and its range."""
    try:
        return GenerationRequest.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "request"
        limits = LIMITS.get(field)
        if limits is not None:
            given = error.get("input")
            raise FieldError(
                field, f"must be between {limits[0]} and {limits[1]}, got {given!r}"
            ) from None
        raise FieldError(field, error["msg"].lower()) from None
