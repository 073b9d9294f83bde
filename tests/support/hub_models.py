"""Tiny random-weight model repositories laid out file for file like the real ones on the hub.

The built-in preset ``sd15-ip-adapter`` loads ``stable-diffusion-v1-5/stable-diffusion-v1-5``
(fp16 variant files, no safety checker) and ``h94/IP-Adapter`` (``models/ip-adapter_sd15
.safetensors`` and ``models/image_encoder/``). :func:`build_hub_repos` writes tiny models in
those layouts — with the files castbook must *not* download beside them (fp32 copies, the
safety checker, a single-file checkpoint, other adapters) — so a test can serve them from
:class:`~tests.support.fake_hub.FakeHub` and pull and run the real built-in preset.

Needs torch, diffusers and transformers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPImageProcessor

from tests.support.tiny_diffusers import (
    IMAGE_ENCODER_SIZE,
    IP_ADAPTER_WEIGHT,
    make_tiny_ip_adapter,
    make_tiny_sd15,
)

__all__ = ["IP_ADAPTER_REPO", "SD15_REPO", "build_hub_repos", "decoys"]

SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
IP_ADAPTER_REPO = "h94/IP-Adapter"
_DECOY_BYTES = 3 * 2**20


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def _decoy(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(_DECOY_BYTES))


def decoys() -> dict[str, tuple[str, ...]]:
    """Files of each repository that a pull of ``sd15-ip-adapter`` must leave on the hub."""
    return {
        SD15_REPO: (
            "v1-5-pruned-emaonly.safetensors",
            "safety_checker/config.json",
            "safety_checker/model.fp16.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors",
        ),
        IP_ADAPTER_REPO: (
            "models/ip-adapter-plus_sd15.safetensors",
            "models/image_encoder/pytorch_model.bin",
            "sdxl_models/ip-adapter_sdxl.safetensors",
        ),
    }


def build_hub_repos(root: Path) -> dict[str, dict[str, Path]]:
    """Write both repositories under ``root``; returns ``{repo_id: {path: file}}``."""
    work = root / "work"
    sd15 = root / "sd15"
    pipe = StableDiffusionPipeline.from_pretrained(make_tiny_sd15(work / "sd15"))
    pipe.save_pretrained(sd15 / "fp32")  # the fp32 files are decoys, as on the hub
    pipe.to(torch.float16).save_pretrained(sd15 / "repo", variant="fp16")
    repo = sd15 / "repo"
    index = json.loads((repo / "model_index.json").read_text())
    # What the real model_index.json names: a safety checker and a feature extractor.
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    index["requires_safety_checker"] = True
    (repo / "model_index.json").write_text(json.dumps(index, indent=2))
    # The real one suits the real image encoder (224 px); this one suits the tiny encoder.
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_ENCODER_SIZE},
        crop_size={"height": IMAGE_ENCODER_SIZE, "width": IMAGE_ENCODER_SIZE},
    ).save_pretrained(repo / "feature_extractor")
    for name in decoys()[SD15_REPO]:
        source = sd15 / "fp32" / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, repo / name)
        elif name.endswith(".json"):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_text("{}")
        else:
            _decoy(repo / name)

    adapter = root / "ip-adapter"
    make_tiny_ip_adapter(work / "ip")
    (adapter / "models").mkdir(parents=True)
    shutil.copyfile(
        work / "ip" / IP_ADAPTER_WEIGHT, adapter / "models" / "ip-adapter_sd15.safetensors"
    )
    shutil.copytree(work / "ip" / "image_encoder", adapter / "models" / "image_encoder")
    for name in decoys()[IP_ADAPTER_REPO]:
        _decoy(adapter / name)
    shutil.rmtree(work)
    return {SD15_REPO: _files(repo), IP_ADAPTER_REPO: _files(adapter)}
