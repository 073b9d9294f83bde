"""What a user asks a generation for, validated with the ranges users already know.

Every range lives in :data:`LIMITS`, once. The request model, the face-consistency API's
model, batch renders and stories, workflow nodes, the CLI's help and every error message
read it (through :func:`within`, :func:`range_text` and :func:`range_message`), so a range
changed here changes everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from castbook.errors import FieldError

__all__ = [
    "LIMITS",
    "PROMPT_MAX",
    "GenerationRequest",
    "Mode",
    "parse_request",
    "range_message",
    "range_text",
    "within",
]


class Mode(StrEnum):
    T2I = "t2i"  # text to image
    I2I = "i2i"  # image to image (init image + denoise)
    I2V = "i2v"  # image to video


# The face-consistency API's ranges (ARCHITECTURE.md), inclusive at both ends; the one
# definition every entry point uses.
LIMITS: dict[str, tuple[int | float, int | float]] = {
    "batch": (1, 8),
    "width": (256, 1536),
    "height": (256, 1536),
    "steps": (1, 50),
    "guidance": (1.0, 30.0),
    "denoise": (0.0, 1.0),
    "num_frames": (2, 64),
    "fps": (1, 60),
    "reference_scale": (0.0, 2.0),
    "lora_weight": (0.0, 2.0),
    "seed": (0, 2**32 - 1),
}
PROMPT_MAX = 4000  # characters, for prompts and negative prompts


def within(name: str) -> dict[str, Any]:
    """Pydantic constraints for the range ``name``: ``Field(**within("width"))``."""
    low, high = LIMITS[name]
    return {"ge": low, "le": high}


def range_text(name: str) -> str:
    """The range as help text shows it: ``256–1536``."""
    low, high = LIMITS[name]
    return f"{_number(low)}–{_number(high)}"


def range_message(name: str, given: object, show: Callable[[object], str] = repr) -> str:
    """What an out-of-range value is told, wherever it was sent."""
    low, high = LIMITS[name]
    return f"must be between {_number(low)} and {_number(high)}, got {show(given)}"


def _number(value: float) -> str:
    """1.0 as 1, 0.5 as 0.5, 4294967295 in full."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


_RENAMED = (
    "castbook calls it denoise: how much image to image changes the init image (0–1, "
    "diffusers' strength); in the face-consistency API (POST /getImagetoImage) strength means "
    "the opposite, how closely the output follows the reference"
)


class GenerationRequest(BaseModel):
    """A generation as the user asked for it; ids only, never pixels (it travels to workers).

    ``characters`` are character names or ids whose style prompt and traits are injected into
    the prompt and whose reference images go to the backend's image inputs. ``references``
    are extra reference images and ``init_image`` the source image for i2i/i2v, each as a
    blob id (sha256) or a file path.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode = Mode.T2I
    prompt: str = Field(default="", max_length=PROMPT_MAX)
    negative_prompt: str = Field(default="", max_length=PROMPT_MAX)
    width: int = Field(default=512, **within("width"))
    height: int = Field(default=512, **within("height"))
    steps: int = Field(default=30, **within("steps"))
    guidance: float = Field(default=7.5, **within("guidance"))
    denoise: float = Field(default=0.75, **within("denoise"))
    seed: int | None = Field(default=None, **within("seed"))
    batch: int = Field(default=1, **within("batch"))
    characters: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    init_image: str | None = None
    num_frames: int = Field(default=16, **within("num_frames"))
    fps: int = Field(default=8, **within("fps"))
    reference_scale: float = Field(default=0.6, **within("reference_scale"))
    # Every character LoRA applied at this weight; unset: each character's own weight.
    lora_weight: float | None = Field(default=None, **within("lora_weight"))

    # Refused with a pointer: the face-consistency API's ``strength`` means the opposite.
    strength: None = Field(default=None, exclude=True, description=f"Not accepted: {_RENAMED}")

    @field_validator("strength", mode="before")
    @classmethod
    def _renamed(cls, value: object) -> None:
        if value is not None:
            raise ValueError(_RENAMED)
        return None

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
        if field in LIMITS and error["type"] in _RANGE_ERRORS:
            raise FieldError(field, range_message(field, error.get("input"))) from None
        if error["type"] == "value_error":  # ours, written as it should be shown
            raise FieldError(field, error["msg"].removeprefix("Value error, ")) from None
        raise FieldError(field, error["msg"].lower()) from None


_RANGE_ERRORS = frozenset({"greater_than_equal", "less_than_equal", "greater_than", "less_than"})
