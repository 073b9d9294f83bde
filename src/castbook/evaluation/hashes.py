"""Perceptual hashes as small immutable values: aHash, pHash and dHash.

``ahash`` keeps the original product's formula bit for bit — 8×8 grayscale, threshold at
the mean, score = 100·(1 − hamming/64) — so users can compare with the numbers they know.
The bit order and hex form match the ``imagehash`` package (row-major, most significant
bit first).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

__all__ = ["HASH_KINDS", "ImageHash", "average_hash", "difference_hash", "perceptual_hash"]

HASH_KINDS = ("ahash", "phash", "dhash")
_BITS = 64


@dataclass(frozen=True)
class ImageHash:
    kind: str
    bits: int

    def __post_init__(self) -> None:
        if self.kind not in HASH_KINDS:
            raise ValueError(f"unknown hash kind {self.kind!r}; known: {', '.join(HASH_KINDS)}")
        if not 0 <= self.bits < 1 << _BITS:
            raise ValueError(f"a {self.kind} has {_BITS} bits")

    def distance(self, other: ImageHash) -> int:
        """Hamming distance; only hashes of the same kind can be compared."""
        if not isinstance(other, ImageHash) or other.kind != self.kind:
            raise TypeError(f"cannot compare a {self.kind} with {other!r}")
        return (self.bits ^ other.bits).bit_count()

    def similarity(self, other: ImageHash) -> float:
        """0–100: 100·(1 − hamming/64)."""
        return 100.0 * (1.0 - self.distance(other) / _BITS)

    def hex(self) -> str:
        return f"{self.bits:016x}"

    @classmethod
    def from_hex(cls, kind: str, text: str) -> ImageHash:
        if len(text) != 16:
            raise ValueError(f"a {kind} hex string has 16 digits, got {len(text)}")
        return cls(kind, int(text, 16))

    @classmethod
    def from_bools(cls, kind: str, flags: np.ndarray) -> ImageHash:
        flat = np.asarray(flags, dtype=bool).ravel()
        if flat.size != _BITS:
            raise ValueError(f"a {kind} needs {_BITS} bits, got {flat.size}")
        return cls(kind, int.from_bytes(np.packbits(flat).tobytes(), "big"))


def _gray(image: Image.Image) -> Image.Image:
    return image if image.mode == "L" else image.convert("L")


def average_hash(image: Image.Image) -> ImageHash:
    pixels = np.asarray(_gray(image).resize((8, 8), Image.Resampling.LANCZOS))
    return ImageHash.from_bools("ahash", pixels > pixels.mean())


def difference_hash(image: Image.Image) -> ImageHash:
    pixels = np.asarray(_gray(image).resize((9, 8), Image.Resampling.LANCZOS))
    return ImageHash.from_bools("dhash", pixels[:, 1:] > pixels[:, :-1])


@cache
def _dct_matrix(n: int) -> np.ndarray:
    # Unnormalised DCT-II as in scipy.fftpack.dct, so no scipy is needed at run time.
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


def perceptual_hash(image: Image.Image) -> ImageHash:
    pixels = np.asarray(_gray(image).resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    matrix = _dct_matrix(32)
    low = (matrix @ pixels @ matrix.T)[:8, :8]
    return ImageHash.from_bools("phash", low > np.median(low))
