"""Model management: what each preset loads, what is on this machine, pulling and removing.

- :mod:`~castbook.models.parts` — a preset's parts: hub repositories (or folders) and the
  exact files loaded from them. The one place that knows what a preset needs.
- :mod:`~castbook.models.cache` — their state in the standard Hugging Face cache
  (installed / missing / partial / local folder), read without the network.
- :mod:`~castbook.models.pull` — plan a download from the hub's file list, download with
  huggingface_hub, verify sizes and hashes.
- :mod:`~castbook.models.status` — per-preset status, the missing-model check every
  generation runs first, removal that keeps files other presets use.
- :mod:`~castbook.models.doctor` — the device, versions, cache and how presets load here.

Nothing here imports torch at import time; huggingface_hub is imported only to pull.
"""

from castbook.models.cache import PartState, PartStatus, hub_cache_dir, part_status
from castbook.models.parts import ModelPart, preset_parts
from castbook.models.pull import PlannedFile, PullPlan, PullProgress, plan_pull, pull
from castbook.models.status import (
    PresetModels,
    SizeBook,
    estimated_size,
    format_bytes,
    models_of,
    remove_preset,
    require_installed,
)

__all__ = [
    "ModelPart",
    "PartState",
    "PartStatus",
    "PlannedFile",
    "PresetModels",
    "PullPlan",
    "PullProgress",
    "SizeBook",
    "estimated_size",
    "format_bytes",
    "hub_cache_dir",
    "models_of",
    "part_status",
    "plan_pull",
    "preset_parts",
    "pull",
    "remove_preset",
    "require_installed",
]
