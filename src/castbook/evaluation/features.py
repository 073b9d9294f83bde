"""Everything scoring needs to know about one image, computed once and storable as JSON.

A reference image's features are computed once and kept (the library stores them by the
image's sha256), so scoring N candidates costs N extractions, not 2N.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from castbook.evaluation.appearance import (
    APPEARANCE_VERSION,
    AppearanceDescriptor,
    describe_appearance,
)
from castbook.evaluation.hashes import ImageHash, average_hash, difference_hash, perceptual_hash
from castbook.images import decode_image, read_image_file

__all__ = [
    "FEATURES_VERSION",
    "REDUCED_SIDE",
    "ImageFeatures",
    "ImageSource",
    "LearnedVector",
    "extract_features",
    "features_key",
    "load_for_scoring",
]

FEATURES_VERSION = 1
# Hashes and the appearance descriptor look at a small picture; decoding JPEGs at 1/8 scale
# (draft mode) down to this shorter side is what makes hash scoring fast.
REDUCED_SIDE = 128

ImageSource = str | os.PathLike[str] | bytes | Image.Image | np.ndarray


@dataclass(frozen=True)
class LearnedVector:
    model: str
    vector: tuple[float, ...]

    def similarity(self, other: LearnedVector) -> float:
        if other.model != self.model:
            raise ValueError(f"embeddings of different models: {self.model} vs {other.model}")
        a = np.asarray(self.vector, dtype=np.float64)
        b = np.asarray(other.vector, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"embedding sizes differ: {a.shape} vs {b.shape}")
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


@dataclass(frozen=True)
class ImageFeatures:
    width: int
    height: int
    ahash: ImageHash
    phash: ImageHash
    dhash: ImageHash
    appearance: AppearanceDescriptor
    # None: faces were not looked for (extra missing or turned off); (): looked, none found.
    faces: tuple[Any, ...] | None = None
    learned: LearnedVector | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FEATURES_VERSION,
            "width": self.width,
            "height": self.height,
            "ahash": self.ahash.hex(),
            "phash": self.phash.hex(),
            "dhash": self.dhash.hex(),
            "appearance": self.appearance.to_json(),
            "faces": None if self.faces is None else [face.to_json() for face in self.faces],
            "learned": None
            if self.learned is None
            else {"model": self.learned.model, "vector": list(self.learned.vector)},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageFeatures:
        if data.get("version") != FEATURES_VERSION:
            raise ValueError(f"stored features have version {data.get('version')!r}")
        faces = None
        if data.get("faces") is not None:
            from castbook.evaluation.faces import FaceEmbedding

            faces = tuple(FaceEmbedding.from_json(face) for face in data["faces"])
        learned = data.get("learned")
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            ahash=ImageHash.from_hex("ahash", data["ahash"]),
            phash=ImageHash.from_hex("phash", data["phash"]),
            dhash=ImageHash.from_hex("dhash", data["dhash"]),
            appearance=AppearanceDescriptor.from_json(data["appearance"]),
            faces=faces,
            learned=None
            if learned is None
            else LearnedVector(learned["model"], tuple(float(v) for v in learned["vector"])),
        )


def features_key(*, faces: bool, learned_model: str | None) -> str:
    """Names what a stored feature set holds, so a change of settings never reuses stale data."""
    parts = [f"features-v{FEATURES_VERSION}", APPEARANCE_VERSION]
    if faces:
        from castbook.evaluation.faces import MODEL_ID, PIPELINE_ID

        parts += [MODEL_ID, PIPELINE_ID]
    if learned_model:
        parts.append(f"learned:{learned_model}")
    return "+".join(parts)


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image: ``full`` only when faces need full resolution, ``reduced`` always.

    ``reduced_by``: block-average copies of ``full`` (``Image.reduce``) by their factor, made
    on the way to ``reduced``; face detection uses one instead of shrinking ``full`` again.
    """

    reduced: Image.Image
    full: Image.Image | None
    width: int
    height: int
    reduced_by: Mapping[int, Image.Image] = field(default_factory=dict)


def load_for_scoring(
    source: ImageSource, *, name: str, full: bool, face_embedder: Any | None = None
) -> LoadedImage:
    """Decode ``source`` once; images already in memory are used as they are.

    ``face_embedder`` (with ``full``): the copy its first detection pass searches is made
    here, and ``reduced`` from it when the factors allow (for 1024×1024: ``reduce(4)``, then
    ``reduce(2)`` of that), so the full picture is averaged down once, not twice.
    """
    if isinstance(source, np.ndarray):
        source = Image.fromarray(np.ascontiguousarray(source[..., :3]).astype(np.uint8, copy=False))
    if isinstance(source, Image.Image):
        image = source if source.mode == "RGB" else source.convert("RGB")
        if full:
            return _loaded_full(image, face_embedder)
        return LoadedImage(_reduce(image), None, *image.size)
    data = source if isinstance(source, bytes) else read_image_file(Path(source))
    decoded = decode_image(
        data, source=name, reduce_to=None if full else REDUCED_SIDE, pixels_only=True
    )
    image = decoded.image if decoded.image.mode == "RGB" else decoded.image.convert("RGB")
    if full:
        return _loaded_full(image, face_embedder)
    # Draft decoding changed the size; report the size the file declares.
    return LoadedImage(image, None, *_declared_size(data, image))


def _loaded_full(image: Image.Image, face_embedder: Any | None) -> LoadedImage:
    factor = min(image.size) // REDUCED_SIDE
    first = face_embedder.first_reduce_factor(*image.size) if face_embedder is not None else None
    if first is None or factor < first or factor % first:
        return LoadedImage(_reduce(image), image, *image.size)
    copy = image.reduce(first)
    small = copy.reduce(factor // first) if factor > first else copy
    return LoadedImage(small, image, *image.size, reduced_by={first: copy})


def _declared_size(data: bytes, decoded: Image.Image) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as header:
        width, height = header.size
    # EXIF rotation swaps the sides; the decoded picture's orientation tells which way.
    if (decoded.width > decoded.height) != (width > height):
        width, height = height, width
    return width, height


def _reduce(image: Image.Image) -> Image.Image:
    factor = min(image.size) // REDUCED_SIDE
    return image.reduce(factor) if factor >= 2 else image


def extract_features_many(
    loaded: Sequence[LoadedImage],
    *,
    face_embedder: Any | None = None,
    learned_embedder: Any | None = None,
) -> list[ImageFeatures]:
    """:func:`extract_features` of each image, with all their faces embedded in one batch of
    the face network (cheaper per face on torch; the same embeddings). One image that cannot
    be read as RGB raises for all: callers score such a batch one image at a time."""
    if face_embedder is None:
        return [extract_features(item, learned_embedder=learned_embedder) for item in loaded]
    located = [face_embedder.locate(_face_input(item), reduced=item.reduced_by) for item in loaded]
    found = face_embedder.embed_located(located)
    return [
        extract_features(item, learned_embedder=learned_embedder, faces=tuple(faces))
        for item, faces in zip(loaded, found, strict=True)
    ]


def _face_input(loaded: LoadedImage) -> Image.Image:
    return loaded.full if loaded.full is not None else loaded.reduced


def extract_features(
    loaded: LoadedImage,
    *,
    face_embedder: Any | None = None,
    learned_embedder: Any | None = None,
    faces: tuple[Any, ...] | None = None,
) -> ImageFeatures:
    """The features of one image; ``faces``: its faces embedded already (else found with
    ``face_embedder``, when given)."""
    small = loaded.reduced
    if faces is None and face_embedder is not None:
        located = face_embedder.locate(_face_input(loaded), reduced=loaded.reduced_by)
        faces = tuple(face_embedder.embed_located([located])[0])
    learned = None
    if learned_embedder is not None:
        vector = learned_embedder.embed([loaded.full if loaded.full is not None else small])[0]
        learned = LearnedVector(learned_embedder.name, tuple(float(v) for v in vector))
    return ImageFeatures(
        width=loaded.width,
        height=loaded.height,
        ahash=average_hash(small),
        phash=perceptual_hash(small),
        dhash=difference_hash(small),
        appearance=describe_appearance(small),
        faces=faces,
        learned=learned,
    )
