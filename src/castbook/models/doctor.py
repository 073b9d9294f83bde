"""``castbook doctor``: what this machine can run, and why not.

The device torch sees (CUDA with its memory, Apple MPS, or the CPU), the versions of the
generation stack, every preset's models, the Hugging Face cache and the disk space it has
left, and how each local preset would be loaded here (dtype, CPU offload).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from castbook.models.cache import hub_cache_dir
from castbook.models.parts import PresetLike
from castbook.models.status import PresetModels, SizeBook, models_of

__all__ = ["OFFLOAD_BELOW_GB", "Device", "DoctorReport", "detect_device", "diagnose", "load_plan"]

# Below this much GPU memory a family's pipeline is loaded with model CPU offload (each
# sub-model moves to the GPU only while it runs): slower, but it fits. The figures are the
# fp16 weights of each family plus room for a 1-image batch's activations.
OFFLOAD_BELOW_GB = {"sd15": 6.0, "animatediff": 10.0, "sdxl": 12.0, "svd": 16.0}


@dataclass(frozen=True)
class Device:
    kind: str  # cuda | mps | cpu
    name: str
    memory_gb: float | None  # GPU memory; None for the CPU and MPS (shared memory)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "memory_gb": self.memory_gb}


@functools.cache
def detect_device() -> Device | None:
    """The device generation would use, or None when torch is not installed (asked once per
    process: every generation's load plan reads it)."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Device("cuda", props.name, round(props.total_memory / 2**30, 1))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Device("mps", "Apple GPU", None)
    return Device("cpu", "CPU", None)


def load_plan(family: str, device: Device | None, options: dict[str, Any]) -> dict[str, Any]:
    """How a diffusers preset is loaded on ``device``: dtype and offload, and why."""
    kind = str(options.get("device") or (device.kind if device else "cpu"))
    dtype = str(options.get("dtype") or ("float32" if kind == "cpu" else "float16"))
    offload = str(options.get("offload", "auto"))
    reason = "set in the preset" if "offload" in options else ""
    if offload == "auto":
        limit = OFFLOAD_BELOW_GB.get(family, 8.0)
        memory = device.memory_gb if device is not None and device.kind == kind else None
        if kind.startswith("cuda") and memory is not None and memory < limit:
            offload, reason = "model", f"{memory} GB of GPU memory < {limit} GB for {family}"
        else:
            offload = "none"
    return {"device": kind, "dtype": dtype, "offload": offload, "offload_reason": reason}


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class DoctorReport:
    device: Device | None
    versions: dict[str, str | None]
    cache: str
    cache_free_bytes: int | None
    presets: list[tuple[PresetModels, dict[str, Any] | None]]

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device.to_json() if self.device else None,
            "versions": self.versions,
            "hf_cache": self.cache,
            "hf_cache_free_bytes": self.cache_free_bytes,
            "presets": [{**models.to_json(), "load": load} for models, load in self.presets],
            "runnable": [models.preset_id for models, _ in self.presets if models.runnable],
        }


def diagnose(presets: Iterable[PresetLike], sizes: SizeBook | None = None) -> DoctorReport:
    device = detect_device()
    cache = hub_cache_dir()
    probe = cache
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        free = None
    versions = {
        name: _version(name)
        for name in ("torch", "diffusers", "transformers", "accelerate", "huggingface_hub")
    }
    rows = []
    for preset in presets:
        load = None
        if preset.backend == "diffusers":
            load = load_plan(str(preset.options.get("family", "sd15")), device, preset.options)
        rows.append((models_of(preset, sizes), load))
    return DoctorReport(device, versions, str(cache), free, rows)
