"""The decode budget of one evaluation request: frames × pixels, checked before decoding.

Decoding is what an evaluation costs, and its cost grows with the pixels of every frame
decoded, not with the upload's bytes: a GIF of 30 flat 6000×6000 frames is under 1 MB and
takes seconds to decode. So each request gets a budget of decoded pixels
(``CASTBOOK_EVAL_PIXEL_BUDGET``, in megapixels). :func:`check_budget` measures every candidate
from its header (an animated GIF/WebP/PNG: frame count × canvas; an MP4/MKV: ffmpeg's
demux-only count × the stream's frame size; a still: its size) and refuses the request as a
whole, before anything is decoded; :class:`PixelBudget` is then charged frame by frame while
the frames are decoded, so a file whose header undercounts stops at the limit too.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from castbook.errors import CastbookError, FieldError

__all__ = [
    "BudgetExceededError",
    "Cost",
    "PixelBudget",
    "check_budget",
    "measure",
]

_SETTING = "CASTBOOK_EVAL_PIXEL_BUDGET"
_MP = 1_000_000


class BudgetExceededError(FieldError):
    """The request's candidates would decode more frames × pixels than the budget allows."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self._parts = (field, message)

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # It crosses from an evaluation worker process; FieldError's args are not its
        # constructor's, so say how to rebuild it.
        return (type(self), self._parts)


@dataclass(frozen=True)
class Cost:
    """What decoding one candidate takes: ``frames`` of ``width``×``height``."""

    name: str
    frames: int
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.frames * self.width * self.height

    def describe(self) -> str:
        if self.frames == 1:
            return f"{self.name} is {self.width}×{self.height} ({_mp(self.pixels)} MP)"
        return (
            f"{self.name} has {self.frames} frames of {self.width}×{self.height} "
            f"({_mp(self.pixels)} MP)"
        )


class PixelBudget:
    """Decoded pixels left to one request; :meth:`charge` raises once they would run out."""

    def __init__(self, limit_pixels: int, spent: int = 0) -> None:
        self.limit = limit_pixels
        self.spent = spent

    def charge(self, pixels: int, name: str) -> None:
        if self.spent + pixels > self.limit:
            raise BudgetExceededError(
                "image",
                f"{name} decodes more frames × pixels than this request may: over "
                f"{_mp(self.spent + pixels)} MP so far; {_limit_text(self.limit)}. "
                f"{_ADVICE}",
            )
        self.spent += pixels


_ADVICE = (
    "Send shorter or smaller clips (fewer frames, scaled down), or split the candidates "
    "over several requests"
)


def measure(candidate: bytes, name: str, *, probe_clips: bool = True) -> Cost | None:
    """The decode cost of one candidate, read from its header without decoding pixels.

    ``None`` when it cannot be told: unreadable data (scoring reports it as that candidate's
    error) or, with ``probe_clips`` false, an MP4/MKV clip (counting its frames runs ffmpeg).
    """
    from castbook.evaluation.video import clip_dimensions, container_kind

    kind = container_kind(candidate)
    if kind is not None:
        if kind in ("mov", "matroska") and not probe_clips:
            return None
        try:
            counted = clip_dimensions(candidate, label=name)
        except CastbookError:
            return None
        if counted is not None:
            frames, width, height = counted
            return Cost(name, frames, width, height)
    return _still(candidate, name)


def _still(candidate: bytes, name: str) -> Cost | None:
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(candidate)) as image:
                width, height = image.size
    except Exception:
        return None
    return Cost(name, 1, width, height)


def check_budget(
    candidates: Sequence[bytes],
    names: Sequence[str],
    limit_pixels: int,
    *,
    probe_clips: bool = True,
) -> list[Cost | None]:
    """Each candidate's :class:`Cost`; raises :class:`BudgetExceededError` naming the limit,
    the request's total and its largest candidates when they add up to more than it."""
    costs = [
        measure(data, name, probe_clips=probe_clips)
        for data, name in zip(candidates, names, strict=True)
    ]
    known = [cost for cost in costs if cost is not None]
    total = sum(cost.pixels for cost in known)
    if total > limit_pixels:
        largest = sorted(known, key=lambda cost: -cost.pixels)[:3]
        raise BudgetExceededError(
            "image",
            f"this request would decode {_mp(total)} MP (frames × pixels, over "
            f"{len(known)} candidate(s)): {'; '.join(c.describe() for c in largest)}; "
            f"{_limit_text(limit_pixels)}. {_ADVICE}",
        )
    return costs


def _limit_text(limit_pixels: int) -> str:
    return f"the limit is {_mp(limit_pixels)} MP per evaluation request ({_SETTING})"


def _mp(pixels: int) -> str:
    # Rounded up to a tenth, so a figure just over a limit never prints as equal to it.
    whole, tenth = divmod(-(-pixels * 10 // _MP), 10)
    return f"{whole}.{tenth}" if tenth else f"{whole}"
