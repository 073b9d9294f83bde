"""The storyboard as values, and what every view of it needs: each character's scores in
panel order, and each character's weakest panel."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from castbook.errors import FieldError
from castbook.images import decode_image
from castbook.render._drawing import flatten, shrink

__all__ = [
    "Panel",
    "PanelPictures",
    "Storyboard",
    "Weakest",
    "character_series",
    "weakest_panels",
]


@dataclass(frozen=True)
class Panel:
    number: int  # 1-based scene number
    caption: str  # scene prompt / shot notes as the user wrote them
    image: bytes  # PNG or JPEG (or WebP) bytes of the rendered panel
    scores: dict[str, float]  # character name -> 0-100 consistency score (may be empty)
    seed: int | None = None
    attempts: int = 1  # renders it took (consistency-gate re-rolls)

    def __post_init__(self) -> None:
        if self.number < 1:
            raise FieldError("number", f"scene numbers start at 1, got {self.number}")
        if self.attempts < 1:
            raise FieldError("attempts", f"scene {self.number}: at least 1, got {self.attempts}")
        for name, score in self.scores.items():
            if not (math.isfinite(score) and 0 <= score <= 100):
                raise FieldError(
                    "scores", f"scene {self.number}: {name}'s score must be 0-100, got {score}"
                )


@dataclass(frozen=True)
class Storyboard:
    title: str
    characters: tuple[str, ...]
    panels: tuple[Panel, ...]

    def __post_init__(self) -> None:
        if not self.panels:
            raise FieldError("panels", "a storyboard needs at least one panel")
        seen: set[int] = set()
        for panel in self.panels:
            if panel.number in seen:
                raise FieldError("panels", f"scene {panel.number} appears twice")
            seen.add(panel.number)

    @property
    def ordered_panels(self) -> tuple[Panel, ...]:
        return tuple(sorted(self.panels, key=lambda panel: panel.number))

    @property
    def scored_characters(self) -> tuple[str, ...]:
        """The board's characters, then anyone scored who is not listed, in panel order."""
        names = list(self.characters)
        for panel in self.ordered_panels:
            names.extend(name for name in panel.scores if name not in names)
        return tuple(names)

    @property
    def display_title(self) -> str:
        return self.title.strip() or "Storyboard"


@dataclass(frozen=True)
class Weakest:
    character: str
    number: int  # the panel's scene number
    score: float


def character_series(board: Storyboard) -> dict[str, list[tuple[int, float]]]:
    """Each character's (scene number, score) in scene order; characters never scored are
    left out."""
    series: dict[str, list[tuple[int, float]]] = {}
    for name in board.scored_characters:
        points = [(p.number, p.scores[name]) for p in board.ordered_panels if name in p.scores]
        if points:
            series[name] = points
    return series


def weakest_panels(board: Storyboard) -> list[Weakest]:
    """Each character's lowest-scoring panel (the earliest on a tie). A character scored in
    a single panel, or equally in all, has none: no panel stands out."""
    found = []
    for name, points in character_series(board).items():
        number, score = min(points, key=lambda point: point[1])
        if score == max(point[1] for point in points):
            continue
        found.append(Weakest(name, number, score))
    return found


@dataclass(frozen=True)
class _Picture:
    format: str  # "PNG" | "JPEG" | "WEBP"
    transposed: bool  # EXIF orientation turned it
    image: Image.Image  # RGB, transparency flattened onto white


class PanelPictures:
    """Each panel's image decoded once (castbook's size limits and errors, EXIF orientation
    applied, transparency flattened onto white) and shared by every output of one board."""

    def __init__(self, board: Storyboard) -> None:
        self._panels = {panel.number: panel for panel in board.panels}
        self._pictures: dict[int, _Picture] = {}
        self._fitted: dict[tuple[int, int], Image.Image] = {}

    def load_all(self, *, fit: int | None = None) -> PanelPictures:
        """Decode every panel not decoded yet, and shrink each to fit ``fit``×``fit`` when
        asked, several panels at once: Pillow decodes and resizes outside the GIL. A bad
        image raises its error, the earliest scene's first."""
        waiting = sorted(self._panels)
        if fit is None:
            waiting = [number for number in waiting if number not in self._pictures]
        if waiting:
            workers = max(1, min(8, os.cpu_count() or 1, len(waiting)))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(lambda number: self._prepare(number, fit), waiting))
        return self

    def image(self, number: int) -> Image.Image:
        return self._picture(number).image

    def fitted(self, number: int, side: int) -> Image.Image:
        """The picture shrunk to fit ``side``×``side`` (never enlarged), kept for reuse."""
        key = (number, side)
        if key not in self._fitted:
            image = self.image(number)
            scale = min(1.0, side / max(image.size))
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            self._fitted[key] = image if size == image.size else shrink(image, size)
        return self._fitted[key]

    def format(self, number: int) -> str:
        return self._picture(number).format

    def transposed(self, number: int) -> bool:
        return self._picture(number).transposed

    def _prepare(self, number: int, fit: int | None) -> None:
        self._picture(number)
        if fit is not None:
            self.fitted(number, fit)

    def _picture(self, number: int) -> _Picture:
        # Threads in load_all each work on their own panel, so no two fill the same key.
        if number not in self._pictures:
            decoded = decode_image(self._panels[number].image, source=f"scene {number}'s image")
            self._pictures[number] = _Picture(
                decoded.format, decoded.transposed, flatten(decoded.image)
            )
        return self._pictures[number]
