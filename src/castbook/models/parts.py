"""What a preset needs on disk: its *parts*, each a hub repository (or a local folder) and
the files of it that castbook actually loads.

This is the one place that knows it. Loading (:mod:`castbook.generation.diffusers_pipelines`),
status (:mod:`castbook.models.cache`), pulling (:mod:`castbook.models.pull`) and removing all
read the parts from here, so a file that is downloaded is a file that is loaded, and nothing
else: never a whole repository with every checkpoint format in it.

Parts come from a preset's ``model`` and ``options`` (built-in presets and the user's
``presets.toml`` alike)::

    model = "stable-diffusion-v1-5/stable-diffusion-v1-5"   # a hub id, or a folder
    [presets.x.options]
    family = "sd15"                  # which files a pipeline of this family loads
    variant = "fp16"                 # load unet/diffusion_pytorch_model.fp16.safetensors …
    revision = "main"                # the model's branch, tag or commit
    ip_adapter = "h94/IP-Adapter"    # + ip_adapter_subfolder, ip_adapter_weight,
    image_encoder_folder = "image_encoder"   # relative to the subfolder unless it has a "/"
    ip_adapter_revision = "main"
    motion_adapter = "guoyww/animatediff-motion-adapter-v1-5-2"   # family animatediff
    motion_adapter_variant = ""      # its weight file's variant ("" = none)
    motion_adapter_revision = "main"

Nothing here touches the network or imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "ModelPart",
    "PresetLike",
    "image_encoder_path",
    "is_hub_id",
    "preset_parts",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class PresetLike(Protocol):
    """What parts are computed from (a :class:`castbook.generation.Preset`)."""

    @property
    def id(self) -> str: ...

    @property
    def backend(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def options(self) -> dict[str, Any]: ...


def _weights(folder: str, stem: str, variant: str) -> list[str]:
    suffix = f".{variant}" if variant else ""
    return [f"{folder}/config.json", f"{folder}/{stem}{suffix}.safetensors"]


def _pipeline_files(family: str, variant: str) -> tuple[str, ...]:
    """The files a diffusers pipeline folder of ``family`` is loaded from (globs allowed:
    a tokenizer's files differ between its slow and fast forms).

    The safety checker (1.2 GB for SD 1.5) is left out: castbook loads pipelines without it
    when its folder is absent, as ComfyUI and InvokeAI do by default.
    """
    files = ["model_index.json", "scheduler/*.json"]
    unet = _weights("unet", "diffusion_pytorch_model", variant)
    vae = _weights("vae", "diffusion_pytorch_model", variant)
    if family in ("sd15", "animatediff"):
        files += [*_weights("text_encoder", "model", variant), "tokenizer/*", *unet, *vae]
    elif family == "sdxl":
        files += [*_weights("text_encoder", "model", variant), "tokenizer/*"]
        files += [*_weights("text_encoder_2", "model", variant), "tokenizer_2/*", *unet, *vae]
    elif family == "svd":
        files += ["feature_extractor/*.json"]
        files += _weights("image_encoder", "model", variant) + unet + vae
    return tuple(files)


# Loaded when the repository has them, not needed when it does not.
_OPTIONAL = {"sd15": ("feature_extractor/*.json",), "animatediff": ("feature_extractor/*.json",)}


def is_hub_id(location: str) -> bool:
    """``org/name`` (or ``name``) that is not a path on this machine."""
    if location.startswith((".", "~", "/")) or Path(location).expanduser().exists():
        return False
    return bool(_HUB_ID.match(location))


@dataclass(frozen=True)
class ModelPart:
    """One thing a preset loads: a hub repository at a revision (or a local folder), and the
    files of it that are loaded.

    ``files`` are patterns (``fnmatch``): each must match at least one file of the
    repository; ``optional`` patterns are fetched when the repository has such files.
    ``role`` is what it is for (``model``, ``ip_adapter``, ``image_encoder``,
    ``motion_adapter``); ``setting`` is where a preset sets it (``model`` or
    ``options.ip_adapter``), for messages that say what to change.
    """

    role: str
    location: str
    files: tuple[str, ...]
    revision: str = "main"
    setting: str = "model"
    optional: tuple[str, ...] = ()

    @property
    def is_hub(self) -> bool:
        return is_hub_id(self.location)

    @property
    def label(self) -> str:
        return self.role.replace("_", " ")

    def matches(self, name: str) -> bool:
        """Whether the file ``name`` (a repository path) is one this part loads."""
        return any(fnmatch(name, pattern) for pattern in self.files + self.optional)

    def unmatched(self, names: Iterable[str]) -> tuple[str, ...]:
        """The required patterns that none of ``names`` matches."""
        names = list(names)
        return tuple(p for p in self.files if not any(fnmatch(n, p) for n in names))


def image_encoder_path(options: Mapping[str, Any]) -> str:
    """The IP-Adapter image encoder's folder inside its repository (as diffusers reads it)."""
    subfolder = str(options.get("ip_adapter_subfolder", "")).strip("/")
    folder = str(options.get("image_encoder_folder", "image_encoder")).strip("/")
    if "/" in folder or not subfolder:
        return folder
    return f"{subfolder}/{folder}"


def preset_parts(preset: PresetLike) -> list[ModelPart]:
    """Every part ``preset`` loads, in loading order; empty for remote backends (OpenAI,
    ComfyUI), whose models live on someone else's machine."""
    if preset.backend != "diffusers":
        return []
    options = preset.options
    family = str(options.get("family", "sd15"))
    variant = str(options.get("variant") or "")
    parts = [
        ModelPart(
            role="model",
            location=preset.model,
            files=_pipeline_files(family, variant),
            revision=str(options.get("revision") or "main"),
            optional=_OPTIONAL.get(family, ()),
        )
    ]
    if options.get("ip_adapter") and family != "svd":
        location = str(options["ip_adapter"])
        revision = str(options.get("ip_adapter_revision") or "main")
        subfolder = str(options.get("ip_adapter_subfolder", "")).strip("/")
        weight = str(options.get("ip_adapter_weight", "ip-adapter_sd15.safetensors"))
        encoder = image_encoder_path(options)
        parts.append(
            ModelPart(
                role="ip_adapter",
                location=location,
                files=(f"{subfolder}/{weight}" if subfolder else weight,),
                revision=revision,
                setting="options.ip_adapter",
            )
        )
        parts.append(
            ModelPart(
                role="image_encoder",
                location=location,
                files=tuple(_weights(encoder, "model", "")),
                revision=revision,
                setting="options.image_encoder_folder",
            )
        )
    if family == "animatediff" and options.get("motion_adapter"):
        parts.append(
            ModelPart(
                role="motion_adapter",
                location=str(options["motion_adapter"]),
                files=(
                    "config.json",
                    "diffusion_pytorch_model"
                    + (f".{v}" if (v := str(options.get("motion_adapter_variant") or "")) else "")
                    + ".safetensors",
                ),
                revision=str(options.get("motion_adapter_revision") or "main"),
                setting="options.motion_adapter",
            )
        )
    return parts
