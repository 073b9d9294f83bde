"""Presets: a named backend + model + defaults. A preset's id is the API's ``app_id``.

Built-in presets cover the common set-ups; users add or override presets in
``$CASTBOOK_HOME/presets.toml``::

    [presets.my-sd15]
    backend = "diffusers"
    model = "/models/stable-diffusion-v1-5"        # a local folder (or a hub id)
    modes = ["t2i", "i2i"]
    description = "SD 1.5 from my disk, IP-Adapter for references"

    [presets.my-sd15.defaults]                      # request defaults
    steps = 25
    guidance = 7.0

    [presets.my-sd15.options]                       # backend options
    family = "sd15"
    ip_adapter = "/models/ip-adapter"
    ip_adapter_weight = "ip-adapter_sd15.safetensors"
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from castbook.errors import FieldError, InvalidInputError, NotFoundError
from castbook.generation.request import GenerationRequest, Mode
from castbook.models import models_of

__all__ = ["BACKENDS", "BUILTIN_PRESETS", "Preset", "PresetCatalog", "load_presets"]

BACKENDS = ("diffusers", "openai", "gemini", "comfyui")
PRESETS_FILE = "presets.toml"


@dataclass(frozen=True)
class Preset:
    id: str
    backend: str
    model: str
    modes: tuple[Mode, ...]
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    source: str = "built-in"

    def supports(self, mode: Mode) -> bool:
        return mode in self.modes


_IP_ADAPTER_SD15 = {
    "ip_adapter": "h94/IP-Adapter",
    "ip_adapter_subfolder": "models",
    "ip_adapter_weight": "ip-adapter_sd15.safetensors",
    "image_encoder_folder": "image_encoder",
}

BUILTIN_PRESETS: tuple[Preset, ...] = (
    Preset(
        id="sd15-ip-adapter",
        backend="diffusers",
        model="stable-diffusion-v1-5/stable-diffusion-v1-5",
        modes=(Mode.T2I, Mode.I2I),
        description="Stable Diffusion 1.5; character references through IP-Adapter",
        defaults={"width": 512, "height": 512, "steps": 30, "guidance": 7.5},
        options={"family": "sd15", "variant": "fp16", **_IP_ADAPTER_SD15},
    ),
    Preset(
        id="sdxl-ip-adapter-face",
        backend="diffusers",
        model="stabilityai/stable-diffusion-xl-base-1.0",
        modes=(Mode.T2I, Mode.I2I),
        description="SDXL; references through IP-Adapter plus-face (ViT-H encoder)",
        defaults={"width": 1024, "height": 1024, "steps": 30, "guidance": 6.0},
        options={
            "family": "sdxl",
            "variant": "fp16",
            "ip_adapter": "h94/IP-Adapter",
            "ip_adapter_subfolder": "sdxl_models",
            "ip_adapter_weight": "ip-adapter-plus-face_sdxl_vit-h.safetensors",
            "image_encoder_folder": "models/image_encoder",
        },
    ),
    Preset(
        id="animatediff-sd15",
        backend="diffusers",
        model="stable-diffusion-v1-5/stable-diffusion-v1-5",
        modes=(Mode.I2V,),
        description="SD 1.5 + AnimateDiff motion adapter; the image conditions through IP-Adapter",
        defaults={"width": 512, "height": 512, "steps": 25, "guidance": 7.5, "num_frames": 16},
        options={
            "family": "animatediff",
            "variant": "fp16",
            "motion_adapter": "guoyww/animatediff-motion-adapter-v1-5-2",
            **_IP_ADAPTER_SD15,
        },
    ),
    Preset(
        id="svd-i2v",
        backend="diffusers",
        model="stabilityai/stable-video-diffusion-img2vid-xt",
        modes=(Mode.I2V,),
        description="Stable Video Diffusion: animates the init image (or the primary reference)",
        defaults={"width": 1024, "height": 576, "steps": 25, "guidance": 3.0, "num_frames": 25},
        options={"family": "svd", "variant": "fp16"},
    ),
    Preset(
        id="openai-images",
        backend="openai",
        model="gpt-image-1",
        modes=(Mode.T2I, Mode.I2I),
        description="An OpenAI-compatible images API (generations; edits with references)",
        defaults={"width": 1024, "height": 1024},
        options={
            "base_url_env": "CASTBOOK_OPENAI_BASE_URL",
            "api_key_env": "OPENAI_API_KEY",
            # gpt-image-1 accepts only these; other sizes are asked as the closest shape
            # and resized to what the user asked for.
            "sizes": ["1024x1024", "1536x1024", "1024x1536"],
        },
    ),
    Preset(
        id="gemini-image",
        backend="gemini",
        model="gemini-2.5-flash-image",
        modes=(Mode.T2I, Mode.I2I),
        description="Google's Gemini image model (Nano Banana); references as image parts "
        "(GEMINI_API_KEY or a gemini provider in providers.toml)",
        defaults={"width": 1024, "height": 1024},
        # One request per image; this many at a time. The model takes 3 images per
        # request (init image included); set max_images for a model that takes more.
        options={"max_concurrent": 4},
    ),
    Preset(
        id="comfyui",
        backend="comfyui",
        model="workflow:sd15-ip-adapter",
        modes=(Mode.T2I, Mode.I2I),
        description="A ComfyUI server (CASTBOOK_COMFYUI_URL) running a workflow template",
        defaults={"width": 512, "height": 512, "steps": 25},
        options={
            "server_env": "CASTBOOK_COMFYUI_URL",
            "server": "http://127.0.0.1:8188",
            # what its default checkpoint (v1-5-pruned-emaonly) is: the LoRAs it applies
            "base_model": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        },
    ),
)


class PresetCatalog:
    """Built-in presets overlaid with the user's; looked up by id (the API's app_id)."""

    def __init__(self, presets: Mapping[str, Preset]) -> None:
        self._presets = dict(presets)

    def get(self, preset_id: str) -> Preset:
        try:
            return self._presets[preset_id]
        except KeyError:
            known = ", ".join(sorted(self._presets))
            raise NotFoundError(
                f"no preset {preset_id!r}; known presets: {known} "
                f"(add your own in $CASTBOOK_HOME/{PRESETS_FILE})"
            ) from None

    def __iter__(self):
        return iter(sorted(self._presets.values(), key=lambda p: p.id))

    def __len__(self) -> int:
        return len(self._presets)

    def default_for(self, mode: Mode) -> Preset:
        """The local (diffusers) preset for ``mode`` whose models are all on this machine;
        the first by id when none is, so the error names what to pull."""
        local = [p for p in self if p.supports(mode) and p.backend == "diffusers"]
        if not local:
            raise NotFoundError(f"no preset supports {mode.value}")
        return next((p for p in local if models_of(p).runnable), local[0])


def load_presets(home: Path | None) -> PresetCatalog:
    presets = {preset.id: preset for preset in BUILTIN_PRESETS}
    if home is not None and (home / PRESETS_FILE).is_file():
        for preset in _read_user_presets(home / PRESETS_FILE):
            presets[preset.id] = preset
    return PresetCatalog(presets)


def _read_user_presets(path: Path) -> list[Preset]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path} is not valid TOML: {exc}") from None
    table = document.get("presets", {})
    if not isinstance(table, dict):
        raise InvalidInputError(f"{path}: [presets] must be a table of presets")
    return [_user_preset(path, preset_id, raw) for preset_id, raw in table.items()]


_DEFAULT_KEYS = set(GenerationRequest.model_fields) - {
    "mode",
    "prompt",
    "characters",
    "references",
    "init_image",
}


def _user_preset(path: Path, preset_id: str, raw: object) -> Preset:
    where = f"{path} [presets.{preset_id}]"
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{where} must be a table")
    unknown = set(raw) - {"backend", "model", "modes", "description", "defaults", "options"}
    if unknown:
        raise InvalidInputError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    backend = raw.get("backend")
    if backend not in BACKENDS:
        raise InvalidInputError(f"{where}: backend must be one of {', '.join(BACKENDS)}")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidInputError(f"{where}: model must be a hub id, a folder or a model name")
    try:
        modes = tuple(Mode(m) for m in raw.get("modes", ["t2i", "i2i"]))
    except ValueError:
        raise InvalidInputError(f"{where}: modes must be a list of t2i, i2i, i2v") from None
    defaults = raw.get("defaults", {})
    options = raw.get("options", {})
    if not isinstance(defaults, dict) or not isinstance(options, dict):
        raise InvalidInputError(f"{where}: defaults and options must be tables")
    bad = set(defaults) - _DEFAULT_KEYS
    if bad:
        raise InvalidInputError(f"{where}: defaults cannot set {', '.join(sorted(bad))}")
    try:
        GenerationRequest.model_validate(defaults)
    except Exception as exc:  # pydantic's message names the field and the range
        raise FieldError(f"{where}.defaults", str(exc).splitlines()[1]) from None
    return Preset(
        id=preset_id,
        backend=backend,
        model=model,
        modes=modes,
        description=str(raw.get("description", "")),
        defaults=dict(defaults),
        options=dict(options),
        source=str(path),
    )
