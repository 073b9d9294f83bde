"""Drawn test characters: a background, hair, a face, eyes and a shirt, in chosen colours.

``character(**ALICE)`` and ``character(**BOB)`` are two different characters; ``seed`` moves
their details a little (the same character drawn again).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from castbook.evaluation.features import ImageFeatures

__all__ = ["ALICE", "BOB", "character", "png_bytes"]

ALICE = dict(hair=(20, 20, 24), shirt=(245, 245, 245))
BOB = dict(hair=(200, 90, 30), shirt=(40, 90, 160))


def character(
    hair: tuple[int, int, int],
    shirt: tuple[int, int, int],
    *,
    seed: int = 0,
    size: int = 256,
    background: tuple[int, int, int] = (235, 230, 220),
) -> Image.Image:
    """A simple drawn character: background, hair, face, eyes, shirt; ``seed`` moves details."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    s = size / 256
    jitter = rng.integers(-6, 7, size=4) * s
    draw.rectangle((30 * s, 170 * s, 226 * s, 256 * s), fill=shirt)
    draw.ellipse((35 * s + jitter[0], 10 * s, 221 * s + jitter[1], 200 * s), fill=hair)
    draw.ellipse((98 * s, 80 * s + jitter[2], 158 * s, 160 * s), fill=(245, 214, 190))
    for x in (110, 134):
        draw.ellipse(
            (x * s, 110 * s + jitter[3], (x + 10) * s, 120 * s + jitter[3]), fill=(40, 80, 190)
        )
    return image


def png_bytes(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def drawn_features(image: Image.Image) -> ImageFeatures:
    """Hashes and appearance only, of the image as it is: what a drawn character is scored
    by (no face model)."""
    from castbook.evaluation.features import LoadedImage, extract_features

    return extract_features(LoadedImage(image, None, image.width, image.height))
