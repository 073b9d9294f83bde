"""Tiny random-weight vision encoders, saved like a user's local model folder.

Built from configs with a fixed seed (the way transformers' own tests do it), so nothing is
downloaded. Each maker writes ``config.json``, ``model.safetensors`` and
``preprocessor_config.json`` into ``path`` and returns it, ready for
``castbook.evaluation.learned.LearnedEmbedder(path)``.

Needs ``torch`` and ``transformers``; import this module only after checking both exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import transformers

__all__ = [
    "HIDDEN_SIZE",
    "IMAGE_SIZE",
    "PROJECTION_DIM",
    "VISION_CONFIG",
    "make_tiny_clip",
    "make_tiny_dinov2",
    "write_legacy_clip_preprocessor",
]

IMAGE_SIZE = 32
PATCH_SIZE = 8
HIDDEN_SIZE = 32
PROJECTION_DIM = 16

VISION_CONFIG = {
    "hidden_size": HIDDEN_SIZE,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": IMAGE_SIZE,
    "patch_size": PATCH_SIZE,
    "num_channels": 3,
}
_TEXT = {
    "vocab_size": 99,
    "hidden_size": HIDDEN_SIZE,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 16,
    "bos_token_id": 0,
    "pad_token_id": 1,
    "eos_token_id": 2,
}
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]


def _processor_class(name: str) -> Any:
    # transformers 5 splits image processors into a torchvision class and a PIL one; the PIL
    # one needs nothing extra. Both save the same preprocessor_config.json.
    return getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)


def _save_processor(path: Path, name: str, mean: list[float], std: list[float]) -> None:
    processor = _processor_class(name)(
        do_resize=True,
        size={"shortest_edge": IMAGE_SIZE},
        do_center_crop=True,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_normalize=True,
        image_mean=mean,
        image_std=std,
        do_convert_rgb=True,
    )
    processor.save_pretrained(path)


def make_tiny_clip(path: str | Path, *, seed: int = 0, vision_only: bool = False) -> Path:
    """A tiny CLIP in ``path``: a whole ``CLIPModel`` (model_type "clip", the shape of
    openai/clip-vit-* folders), or with ``vision_only`` a ``CLIPVisionModelWithProjection``
    (model_type "clip_vision_model"). Image embeddings have ``PROJECTION_DIM`` values.

    The whole model sets ``projection_dim`` only at the top level, as many real configs do, so
    the loader must carry it into the vision config itself.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if vision_only:
        config = transformers.CLIPVisionConfig(**VISION_CONFIG, projection_dim=PROJECTION_DIM)
        model = transformers.CLIPVisionModelWithProjection(config)
    else:
        config = transformers.CLIPConfig(
            text_config=_TEXT, vision_config=VISION_CONFIG, projection_dim=PROJECTION_DIM
        )
        model = transformers.CLIPModel(config)
    model.eval()
    model.save_pretrained(path)
    _save_processor(path, "CLIPImageProcessor", _CLIP_MEAN, _CLIP_STD)
    return path


def make_tiny_dinov2(path: str | Path, *, seed: int = 0) -> Path:
    """A tiny DINOv2 (``Dinov2Model``, model_type "dinov2") in ``path``, with the
    ``BitImageProcessor`` config DINOv2 folders ship. Embeddings have ``HIDDEN_SIZE`` values."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = transformers.Dinov2Config(**VISION_CONFIG)
    model = transformers.Dinov2Model(config)
    model.eval()
    model.save_pretrained(path)
    _save_processor(path, "BitImageProcessor", _IMAGENET_MEAN, _IMAGENET_STD)
    return path


def write_legacy_clip_preprocessor(path: str | Path) -> Path:
    """Replace the processor config with the older format openai/clip-vit-* folders still ship
    (``feature_extractor_type``, integer sizes), describing the same preprocessing."""
    path = Path(path)
    legacy = {
        "crop_size": IMAGE_SIZE,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": _CLIP_MEAN,
        "image_std": _CLIP_STD,
        "resample": 3,
        "size": IMAGE_SIZE,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(legacy, indent=2))
    return path
