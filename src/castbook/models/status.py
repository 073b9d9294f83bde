"""Presets and their models: status, the missing-model check, sizes, removal.

``castbook models list``, ``GET /v1/models``, the web app's preset pickers and every
generation's first step read the same :class:`PresetModels`. Sizes the hub reported are
remembered in ``$CASTBOOK_HOME/model-sizes.json`` so the offline answers (and the
missing-model error) can still say how big a download is.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from castbook.errors import FieldError, ModelNotAvailableError
from castbook.models.cache import (
    PartState,
    PartStatus,
    cached_files,
    hub_cache_dir,
    part_status,
    remove_files,
    summarise,
)
from castbook.models.parts import ModelPart, PresetLike, preset_parts
from castbook.models.pull import PullPlan

__all__ = [
    "STARTER_PRESET",
    "PresetModels",
    "SizeBook",
    "estimated_size",
    "format_bytes",
    "models_of",
    "remove_preset",
    "require_installed",
]

SIZES_FILE = "model-sizes.json"
ESTIMATES_FILE = "estimated_sizes.json"
# The preset a new user is pointed at first: the smallest that takes character references.
STARTER_PRESET = "sd15-ip-adapter"
# The Python packages a backend imports when it first runs, and the extra that installs them:
# a preset whose backend lacks one is not runnable, whatever its model files.
BACKEND_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "diffusers": (("torch", "diffusers", "transformers"), "diffusers"),
    "gemini": (("google.genai",), "gemini"),
}


def format_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


class SizeBook:
    """File sizes the hub reported, by repository and revision, kept between runs."""

    def __init__(self, home: Path | None) -> None:
        self.path = home / SIZES_FILE if home is not None else None
        self._sizes: dict[str, dict[str, int]] = {}
        if self.path is not None and self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text("utf-8"))
                if isinstance(loaded, dict):
                    self._sizes = {k: dict(v) for k, v in loaded.items() if isinstance(v, dict)}
            except (OSError, ValueError, TypeError):
                self._sizes = {}  # a damaged cache of sizes only costs the offline figures

    def record(self, plan: PullPlan) -> None:
        for planned in plan.files:
            key = f"{planned.repo_id}@{planned.revision}"
            self._sizes.setdefault(key, {})[planned.filename] = planned.size
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{SIZES_FILE}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self._sizes, indent=1, sort_keys=True), "utf-8")
        temporary.replace(self.path)

    def reported_size(self, part: ModelPart) -> int | None:
        """The part's whole download size, when the hub told us every file's size."""
        known = self._sizes.get(f"{part.location}@{part.revision}")
        if not known or part.unmatched(known):
            return None
        return sum(size for name, size in known.items() if part.matches(name))


@functools.cache
def _estimates() -> dict[str, int]:
    path = Path(__file__).with_name(ESTIMATES_FILE)
    return dict(json.loads(path.read_text("utf-8"))["bytes"])


def estimated_size(part: ModelPart) -> int | None:
    """The weights of a built-in part, computed from its architecture by
    ``benchmarks/model_sizes.py`` (parameters × bytes in the published dtype, the exact
    safetensors layout); configs and tokenizers (a few MB) are not counted. None for parts
    it has not sized, and for any part once the hub reported the real sizes."""
    table = _estimates()
    weights = [f for f in part.files if f.endswith(".safetensors")]
    keys = [f"{part.location}/{f}" for f in weights]
    if not weights or not all(key in table for key in keys):
        return None
    return sum(table[key] for key in keys)


@dataclass(frozen=True)
class PresetModels:
    """A preset's parts and how far they are on this machine."""

    preset_id: str
    backend: str
    parts: tuple[PartStatus, ...]
    download_size: int | None  # all parts: the hub's figures, else estimates, else None
    missing_size: int | None  # what a pull would still fetch, roughly (whole parts)
    estimated: bool = False  # a size is computed from the architecture, not the hub's
    missing_packages: tuple[str, ...] = ()  # Python packages the backend needs and lacks

    @property
    def state(self) -> str:
        if self.missing_packages:
            return "missing packages"
        return summarise(self.parts)

    @property
    def runnable(self) -> bool:
        return not self.missing_packages and all(part.ready for part in self.parts)

    @property
    def install_command(self) -> str | None:
        """What installs the missing packages, or None when none is missing."""
        if not self.missing_packages:
            return None
        extra = BACKEND_PACKAGES[self.backend][1]
        return f"pip install 'castbook[{extra}]'"

    @property
    def size_on_disk(self) -> int:
        return sum(part.size_on_disk for part in self.parts)

    @property
    def pullable(self) -> bool:
        return any(not p.ready and p.part.is_hub for p in self.parts)

    def pull_command(self) -> str:
        about = "≈" if self.estimated else ""
        size = f"  ({about}{format_bytes(self.missing_size)})" if self.missing_size else ""
        return f"castbook models pull {self.preset_id}{size}"

    def to_json(self) -> dict[str, Any]:
        return {
            "preset": self.preset_id,
            "backend": self.backend,
            "state": self.state,
            "runnable": self.runnable,
            "size_on_disk": self.size_on_disk,
            "download_size": self.download_size,
            "missing_size": self.missing_size,
            "size_estimated": self.estimated,
            "pull": self.pull_command() if self.pullable else None,
            "missing_packages": list(self.missing_packages),
            "install": self.install_command,
            "parts": [part.to_json() for part in self.parts],
        }


def missing_packages(backend: str) -> tuple[str, ...]:
    """The packages ``backend`` imports that this Python cannot find (nothing is imported:
    a check costs a few file lookups)."""
    modules, _extra = BACKEND_PACKAGES.get(backend, ((), ""))
    return tuple(name for name in modules if not _findable(name))


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken install
        return False


def models_of(preset: PresetLike, sizes: SizeBook | None = None) -> PresetModels:
    """Read from the local cache only: instant, and the same offline."""
    statuses = tuple(part_status(part, preset.options) for part in preset_parts(preset))
    lacking = missing_packages(preset.backend)
    hub_parts = [s for s in statuses if s.part.is_hub]
    if not hub_parts:
        return PresetModels(preset.id, preset.backend, statuses, None, None, False, lacking)
    download: int | None = 0
    missing: int | None = 0
    estimated = False
    for status in hub_parts:
        size = sizes.reported_size(status.part) if sizes is not None else None
        if size is None:
            size = estimated_size(status.part)
            estimated = estimated or size is not None
        if size is None:
            download = missing = None
            break
        assert download is not None and missing is not None
        download += size
        if not status.ready:
            missing += max(size - status.size_on_disk, 0)
    return PresetModels(
        preset.id, preset.backend, statuses, download, missing or None, estimated, lacking
    )


def require_installed(preset: PresetLike, sizes: SizeBook | None = None) -> None:
    """Raise :class:`ModelNotAvailableError` naming every part ``preset`` lacks and the one
    command that fetches them; return at once (a few file checks) when all are here."""
    models = models_of(preset, sizes)
    if models.runnable:
        return
    problems = []
    if models.missing_packages:
        problems.append(
            f"the {preset.backend} backend needs {', '.join(models.missing_packages)} "
            f"(not installed: {models.install_command})"
        )
    for status in models.parts:
        if status.ready:
            continue
        if not status.part.is_hub:
            problems.append(f"{status.part.label}: {status.note}")
            continue
        how = "interrupted download" if status.state is PartState.PARTIAL else "not downloaded"
        problems.append(f"{status.part.label} {status.part.location} ({how})")
    fix = "point the preset at folders on this machine in $CASTBOOK_HOME/presets.toml"
    if not any(not status.ready for status in models.parts):
        fix = f"run `{models.install_command}`"
    elif models.pullable:
        fix = f"run `{models.pull_command()}` (or add --pull to generate/render/story), or " + fix
    raise ModelNotAvailableError(
        f"preset {preset.id!r} cannot run yet: {'; '.join(problems)}. To fix it, {fix}"
    )


def remove_preset(preset: PresetLike, keep: Iterable[PresetLike]) -> tuple[list[str], int]:
    """Delete ``preset``'s downloaded files, except those another runnable preset in ``keep``
    loads.

    Returns the files removed (``repo/file``) and the bytes freed. Local folders are never
    touched: castbook did not put them there.
    """
    if not preset_parts(preset):
        raise FieldError("preset", f"preset {preset.id!r} has no downloaded model to remove")
    kept: set[tuple[Path, str, str, str]] = set()
    for other in keep:
        if other.id == preset.id or not models_of(other).runnable:
            continue
        cache = hub_cache_dir(other.options)
        for part in preset_parts(other):
            if part.is_hub:
                here = cached_files(cache, part)
                kept.update((cache, part.location, part.revision, n) for n in here)
    removed: list[str] = []
    freed = 0
    for part in preset_parts(preset):
        if not part.is_hub:
            continue
        cache = hub_cache_dir(preset.options)
        here = cached_files(cache, part)
        names = [n for n in here if (cache, part.location, part.revision, n) not in kept]
        removal = remove_files(cache, part.location, part.revision, names)
        removed += [f"{part.location}/{name}" for name in removal.files]
        freed += removal.freed
    return removed, freed
