"""Learned image embeddings for Consistency Eval: a CLIP or DINOv2 encoder from a local folder.

Optional: needs the ``embeddings`` extra (``torch`` and ``transformers``), imported only when a
model is loaded, so importing this module stays cheap and works without them. Models are only
ever read from a folder on disk (``local_files_only``, no remote code); castbook never
downloads weights. The folder is what ``save_pretrained`` writes (or a Hugging Face snapshot):
``config.json``, the weights (``*.safetensors`` or ``*.bin``) and ``preprocessor_config.json``.

Families, told apart by ``model_type`` in ``config.json``:

* CLIP (``clip``, ``clip_vision_model``): the vision tower with its projection; the vector is
  ``image_embeds``. A whole CLIP checkpoint works; its text tower is not loaded.
* DINOv2 (``dinov2``): the normalised CLS token (``pooler_output``).

Every vector comes back L2-normalised as float32, so cosine similarity is a dot product.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from castbook.errors import InvalidInputError, MissingDependencyError
from castbook.settings import Settings

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "EMBEDDING_MODEL_ENV",
    "SUPPORTED_MODEL_TYPES",
    "LearnedEmbedder",
    "configured_embedder",
    "load_learned_embedder",
]

EMBEDDING_MODEL_ENV = "CASTBOOK_EVAL_EMBEDDING_MODEL"

# model_type in config.json -> family
SUPPORTED_MODEL_TYPES: Mapping[str, str] = {
    "clip": "clip",
    "clip_vision_model": "clip",
    "dinov2": "dinov2",
}

_FEATURE = "learned embeddings"
_EXTRA = "embeddings"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
# Bytes read from each end of a weights file for the fingerprint: enough to tell retrained
# weights apart (tensor data follows the header) without reading gigabytes.
_SAMPLE_BYTES = 1 << 20
_EXPECTED_LAYOUT = (
    "a folder written by save_pretrained() (config.json, model.safetensors or "
    "pytorch_model.bin, preprocessor_config.json)"
)


def _fail(message: str) -> InvalidInputError:
    return InvalidInputError(" ".join(message.split()))


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class _ModelFolder:
    """What can be learned about a model folder without torch."""

    path: Path
    model_type: str
    family: str
    name: str


def _inspect_folder(model_dir: str | os.PathLike[str]) -> _ModelFolder:
    path = Path(model_dir).expanduser()
    if not path.exists():
        raise _fail(
            f"embedding model folder {str(path)!r} does not exist; point {EMBEDDING_MODEL_ENV} "
            f"at a local CLIP or DINOv2 model, {_EXPECTED_LAYOUT}"
        )
    if not path.is_dir():
        raise _fail(
            f"embedding model path {str(path)!r} is a file, not a folder; point "
            f"{EMBEDDING_MODEL_ENV} at the folder that holds config.json"
        )
    path = path.resolve()
    config_file = path / "config.json"
    if not config_file.is_file():
        raise _fail(
            f"embedding model folder {str(path)!r} has no config.json; it must be "
            f"{_EXPECTED_LAYOUT}"
        )
    try:
        config_bytes = config_file.read_bytes()
        config = json.loads(config_bytes)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(
            f"cannot read {str(config_file)!r} ({_first_line(exc)}); it must be the "
            "config.json written by save_pretrained()"
        ) from exc
    model_type = config.get("model_type") if isinstance(config, dict) else None
    supported = ", ".join(sorted(SUPPORTED_MODEL_TYPES))
    if not isinstance(model_type, str) or not model_type:
        raise _fail(
            f"{str(config_file)!r} names no model_type; castbook's learned embeddings "
            f"support model_type {supported} (CLIP or DINOv2)"
        )
    family = SUPPORTED_MODEL_TYPES.get(model_type)
    if family is None:
        raise _fail(
            f"embedding model in {str(path)!r} has model_type {model_type!r}, which castbook "
            f"cannot use; supported model_type values: {supported} (CLIP or DINOv2 image "
            "encoders)"
        )
    weights = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if not weights:
        raise _fail(
            f"embedding model folder {str(path)!r} has no weights (model.safetensors or "
            "pytorch_model.bin); save the model there with save_pretrained() or copy the "
            "whole snapshot"
        )
    processor_files = [path / name for name in _PROCESSOR_FILES if (path / name).is_file()]
    if not processor_files:
        raise _fail(
            f"embedding model folder {str(path)!r} has no preprocessor_config.json; save the "
            "model's image processor there too (AutoImageProcessor ... .save_pretrained())"
        )
    return _ModelFolder(
        path=path,
        model_type=model_type,
        family=family,
        name=f"{family}:{_fingerprint(config_bytes, processor_files, weights)}",
    )


def _fingerprint(config_bytes: bytes, processor_files: list[Path], weights: list[Path]) -> str:
    """12 hex digits that change when the config, the preprocessing or the weights change."""
    digest = hashlib.sha256()
    digest.update(b"config.json\0" + config_bytes + b"\0")
    for file in [*processor_files, *weights]:
        size = file.stat().st_size
        digest.update(f"{file.name}\0{size}\0".encode())
        with file.open("rb") as handle:
            if file in processor_files or size <= 2 * _SAMPLE_BYTES:
                digest.update(handle.read())
            else:
                digest.update(handle.read(_SAMPLE_BYTES))
                handle.seek(size - _SAMPLE_BYTES)
                digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()[:12]


def _import_backend() -> tuple[Any, Any]:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(_FEATURE, _EXTRA, "torch") from exc
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(_FEATURE, _EXTRA, "transformers") from exc
    return torch, transformers


@functools.cache
def _clip_image_tower_class() -> Any:
    from transformers import CLIPVisionModelWithProjection

    class _CLIPImageTower(CLIPVisionModelWithProjection):
        # A whole CLIP checkpoint also holds the text tower; it is not needed, so loading
        # should not report its weights as unexpected.
        _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [
            r"^text_model\.",
            r"^text_projection\.",
            r"^logit_scale$",
        ]

    return _CLIPImageTower


def _resolve_device(torch: Any, device: str | None) -> Any:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise _fail(
            f"unknown torch device {device!r} ({_first_line(exc)}); use 'cpu', 'cuda' or 'cuda:N'"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise _fail(f"device {device!r} asked for, but torch sees no CUDA GPU; use 'cpu'")
    return resolved


class LearnedEmbedder:
    """A CLIP or DINOv2 image encoder loaded from a local folder.

    ``name`` identifies the model for caching (family plus a fingerprint of its config,
    preprocessing and weights); ``dim`` is the length of each vector.
    """

    name: str
    dim: int
    family: str
    model_type: str
    model_dir: Path
    device: str

    def __init__(self, model_dir: str | os.PathLike[str], *, device: str | None = None) -> None:
        folder = _inspect_folder(model_dir)
        torch, transformers = _import_backend()
        self.model_dir = folder.path
        self.model_type = folder.model_type
        self.family = folder.family
        self.name = folder.name
        self._torch = torch
        self._device = _resolve_device(torch, device)
        self.device = str(self._device)
        location = str(folder.path)

        try:
            self._processor = transformers.AutoImageProcessor.from_pretrained(
                location, local_files_only=True, trust_remote_code=False
            )
        except MemoryError:
            raise
        except Exception as exc:
            raise _fail(
                f"cannot load the image processor from {location!r} ({_first_line(exc)}); "
                "its preprocessor_config.json must be the one saved with the model"
            ) from exc

        try:
            if folder.family == "clip":
                model, info = self._load_clip(transformers, location, folder.model_type)
            else:
                model, info = transformers.Dinov2Model.from_pretrained(
                    location,
                    local_files_only=True,
                    trust_remote_code=False,
                    output_loading_info=True,
                )
        except (InvalidInputError, MemoryError):
            raise
        except Exception as exc:  # a damaged folder fails in many ways (safetensors, torch, json)
            raise _fail(
                f"cannot load the {folder.family} model from {location!r} "
                f"({_first_line(exc)}); the folder must be {_EXPECTED_LAYOUT}"
            ) from exc
        broken = sorted(set(info.get("missing_keys") or ())) + sorted(
            str(key[0] if isinstance(key, tuple) else key)
            for key in info.get("mismatched_keys") or ()
        )
        if broken:
            shown = ", ".join(broken[:3]) + (
                f" and {len(broken) - 3} more" if len(broken) > 3 else ""
            )
            raise _fail(
                f"the weights in {location!r} do not fit its config.json (missing or mismatched: "
                f"{shown}); the folder must hold the whole {folder.family} model"
            )

        model.eval()
        model.requires_grad_(False)
        self._model = model.to(device=self._device, dtype=torch.float32)
        if folder.family == "clip":
            self.dim = int(model.config.projection_dim)
        else:
            self.dim = int(model.config.hidden_size)

    @staticmethod
    def _load_clip(transformers: Any, location: str, model_type: str) -> tuple[Any, Any]:
        if model_type == "clip":
            whole = transformers.CLIPConfig.from_pretrained(location, local_files_only=True)
            config = whole.vision_config
            # The projection's width lives at the top level; vision_config may carry a stale
            # default.
            config.projection_dim = whole.projection_dim
        else:
            config = transformers.CLIPVisionConfig.from_pretrained(location, local_files_only=True)
        return _clip_image_tower_class().from_pretrained(
            location,
            config=config,
            local_files_only=True,
            trust_remote_code=False,
            output_loading_info=True,
        )

    def __repr__(self) -> str:
        return f"LearnedEmbedder(name={self.name!r}, dim={self.dim}, device={self.device!r})"

    def embed(self, images: Sequence[Image.Image], batch_size: int = 16) -> np.ndarray:
        """One L2-normalised float32 row per image, shape ``(len(images), dim)``."""
        import numpy as np
        from PIL import Image as PILImage

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
        images = list(images)
        for index, image in enumerate(images):
            if not isinstance(image, PILImage.Image):
                raise TypeError(f"images[{index}] is {type(image).__name__}, not a PIL image")
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)

        torch = self._torch
        rows = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = [
                    image if image.mode == "RGB" else image.convert("RGB")
                    for image in images[start : start + batch_size]
                ]
                pixels = self._processor(images=batch, return_tensors="pt")["pixel_values"]
                pixels = pixels.to(device=self._device, dtype=torch.float32)
                vectors = self._forward(pixels)
                vectors = torch.nn.functional.normalize(vectors.float(), p=2, dim=-1)
                rows.append(vectors.cpu().numpy())
        return np.ascontiguousarray(np.concatenate(rows, axis=0), dtype=np.float32)

    def _forward(self, pixels: Any) -> Any:
        outputs = self._model(pixel_values=pixels)
        if self.family == "clip":
            return outputs.image_embeds
        pooled = getattr(outputs, "pooler_output", None)
        return pooled if pooled is not None else outputs.last_hidden_state[:, 0]

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        """Cosine similarity of two vectors of the same shape, in [-1, 1].

        Each may be 1-D or a single row ``(1, dim)``; ``ValueError`` if the shapes differ,
        either holds more than one vector, or either is all zeros.
        """
        import numpy as np

        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"cannot compare embeddings of shapes {a.shape} and {b.shape}")
        if a.ndim not in (1, 2) or (a.ndim == 2 and a.shape[0] != 1) or a.size == 0:
            raise ValueError(f"expected one vector (dim,) or (1, dim), got shape {a.shape}")
        a, b = a.ravel(), b.ravel()
        norm = float(np.linalg.norm(a) * np.linalg.norm(b))
        if norm == 0.0 or not np.isfinite(norm):
            raise ValueError("cannot compare an all-zero or non-finite embedding")
        return float(np.clip(np.dot(a, b) / norm, -1.0, 1.0))


_cache_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, device: str | None, name: str) -> LearnedEmbedder:
    return LearnedEmbedder(path, device=device)


def load_learned_embedder(
    model_dir: str | os.PathLike[str], *, device: str | None = None
) -> LearnedEmbedder:
    """The embedder for ``model_dir``, loaded once per (resolved folder, device).

    A folder whose config, preprocessing or weights changed on disk is loaded again.
    """
    folder = _inspect_folder(model_dir)
    with _cache_lock:
        return _load_cached(str(folder.path), device, folder.name)


def configured_embedder(environ: Mapping[str, str] | None = None) -> LearnedEmbedder | None:
    """The embedder named by ``CASTBOOK_EVAL_EMBEDDING_MODEL``; ``None`` when it is unset."""
    model_dir = Settings.from_env(environ).eval_embedding_model
    if not model_dir:
        return None
    return load_learned_embedder(model_dir)
