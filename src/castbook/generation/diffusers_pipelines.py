"""Loading and keeping diffusers pipelines: where models are, the pipeline cache, references.

Loading a model is the slow part of local generation (seconds to minutes), so a
:class:`PipelineCache` keeps loaded pipelines keyed by everything that changes the weights in
memory (:class:`PipelineKey`). Derived pipelines (img2img made with ``from_pipe``) and the
encoded reference images live beside the pipeline they belong to, in its
:class:`LoadedPipeline`.

Nothing here imports torch or diffusers at module level; :func:`import_stack` does, and turns a
missing package into :class:`~castbook.errors.MissingDependencyError`.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from PIL import Image

from castbook.errors import (
    FieldError,
    GenerationError,
    InvalidInputError,
    MissingDependencyError,
    ModelNotAvailableError,
)
from castbook.generation.base import Progress, ProgressCallback
from castbook.models.cache import hub_cache_dir, snapshot_folder
from castbook.models.parts import is_hub_id

__all__ = [
    "FAMILIES",
    "IPAdapterSpec",
    "LoadedPipeline",
    "PipelineCache",
    "PipelineKey",
    "StepReporter",
    "derived_pipeline",
    "generators",
    "import_stack",
    "load_pipeline",
    "reference_embeddings",
    "run_in_chunks",
    "use_scheduler",
]

# family → the pipeline classes a model folder's model_index.json may name for it
_FOLDER_CLASSES = {
    "sd15": {"StableDiffusionPipeline"},
    "sdxl": {"StableDiffusionXLPipeline"},
    "animatediff": {"StableDiffusionPipeline", "AnimateDiffPipeline"},
    "svd": {"StableVideoDiffusionPipeline"},
}
# family → (main pipeline class, img2img pipeline class or None)
FAMILIES: dict[str, tuple[str, str | None]] = {
    "sd15": ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"),
    "sdxl": ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"),
    "animatediff": ("AnimateDiffPipeline", None),
    "svd": ("StableVideoDiffusionPipeline", None),
}


def import_stack() -> tuple[ModuleType, ModuleType]:
    """Import torch and diffusers (and check transformers), or say which extra is missing."""
    modules = []
    for name in ("torch", "diffusers", "transformers"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            raise MissingDependencyError("local generation", "diffusers", name) from None
    return modules[0], modules[1]


@dataclass(frozen=True)
class IPAdapterSpec:
    """Where an IP-Adapter's weights and image encoder are (``load_ip_adapter``'s arguments)."""

    location: str
    subfolder: str = ""
    weight_name: str = "ip-adapter_sd15.safetensors"
    image_encoder_folder: str = "image_encoder"
    revision: str = "main"


@dataclass(frozen=True)
class PipelineKey:
    """Everything that decides which weights are in memory; equal keys share one pipeline."""

    model: str
    family: str
    device: str
    dtype: str
    ip_adapter: IPAdapterSpec | None = None
    motion_adapter: str | None = None
    hf_cache: str | None = None
    revision: str = "main"
    variant: str = ""  # "fp16": load the *.fp16.safetensors files
    motion_adapter_revision: str = "main"
    motion_adapter_variant: str = ""
    offload: str = "none"  # "model": enable_model_cpu_offload instead of moving to device


@dataclass
class LoadedPipeline:
    """A loaded model: its pipeline, pipelines derived from it, and its encoded references.

    ``lock`` serialises generations on it: a pipeline's scheduler and IP-Adapter scale are
    state, so two threads must not run the same pipeline at once.
    """

    key: PipelineKey
    pipeline: Any
    derived: dict[str, Any] = field(default_factory=dict)
    # scheduler class name ("" = the model's own) → scheduler built from the model's config
    schedulers: dict[str, Any] = field(default_factory=dict)
    embeddings: OrderedDict[tuple[str, bool], tuple[Any, Any]] = field(default_factory=OrderedDict)
    # (mode, width, height, frames) → the most images that fitted in memory at once
    batch_limits: dict[tuple[Any, ...], int] = field(default_factory=dict)
    encodes: int = 0
    # LoRA adapters loaded into the UNet (by adapter name); unused ones are switched off.
    lora_adapters: set[str] = field(default_factory=set)
    lock: threading.RLock = field(default_factory=threading.RLock)


class PipelineCache:
    """Loaded pipelines, least recently used dropped first; share one between backends.

    ``loads`` counts how many times a model was actually loaded from disk. ``max_pipelines``
    bounds how many models stay in (GPU) memory at once; ``max_embeddings`` how many encoded
    reference images each keeps.
    """

    def __init__(self, max_pipelines: int = 2, max_embeddings: int = 64) -> None:
        if max_pipelines < 1:
            raise ValueError("max_pipelines must be at least 1")
        self.max_pipelines = max_pipelines
        self.max_embeddings = max_embeddings
        self.loads = 0
        self._entries: OrderedDict[PipelineKey, LoadedPipeline] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: PipelineKey, load: Callable[[PipelineKey], Any]) -> LoadedPipeline:
        """The loaded pipeline for ``key``, calling ``load(key)`` only when it is not here."""
        # Loading under the lock: two jobs asking for the same model load it once, and two
        # different models never load side by side into one GPU.
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = LoadedPipeline(key, load(key))
                self.loads += 1
                self._entries[key] = entry
                while len(self._entries) > self.max_pipelines:
                    self._entries.popitem(last=False)
            self._entries.move_to_end(key)
            return entry

    def entries(self) -> list[LoadedPipeline]:
        """The loaded pipelines, least recently used first."""
        with self._lock:
            return list(self._entries.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


# ---------------------------------------------------------------------------- locating models


def _not_available(preset_id: str, what: str, location: str, why: str) -> ModelNotAvailableError:
    option = "model" if what == "model" else f"options.{what}"
    return ModelNotAvailableError(
        f"preset {preset_id!r}: {what} {location!r} {why}. Download it with `castbook models "
        f"pull {preset_id}`, or put it anywhere on this machine and set {option} = "
        f'"/path/to/it" under [presets.{preset_id}] in $CASTBOOK_HOME/presets.toml'
    )


def resolve_location(
    preset_id: str,
    what: str,
    location: str,
    hf_cache: str | None = None,
    revision: str = "main",
) -> str:
    """A local folder for ``location``: the folder itself, or a hub id's cached snapshot.

    Never touches the network: a hub id that is not in the local Hugging Face cache raises
    :class:`ModelNotAvailableError` naming the preset and how to fix it.
    """
    folder = Path(location).expanduser()
    if folder.is_dir():
        return str(folder)
    if folder.exists():
        raise _not_available(preset_id, what, location, "is a file, not a model folder")
    if not is_hub_id(location):
        raise _not_available(preset_id, what, location, "is not a folder on this machine")
    cache = Path(hf_cache) if hf_cache else hub_cache_dir()
    snapshot = snapshot_folder(cache, location, revision)
    if snapshot is None:
        raise _not_available(
            preset_id, what, location, "is neither a folder nor in the local Hugging Face cache"
        )
    return str(snapshot)


# ---------------------------------------------------------------------------- loading


def _accelerate_available() -> bool:
    return importlib.util.find_spec("accelerate") is not None


def load_pipeline(key: PipelineKey, preset_id: str) -> Any:
    """Load ``key``'s pipeline from local files only, with its adapters, on its device."""
    torch, diffusers = import_stack()
    dtype = getattr(torch, key.dtype)
    pipeline_class = getattr(diffusers, FAMILIES[key.family][0])
    model_dir = resolve_location(preset_id, "model", key.model, key.hf_cache, key.revision)
    _check_family(preset_id, key, Path(model_dir))
    extra: dict[str, Any] = _without_absent_safety_checker(key, Path(model_dir))
    if key.family == "animatediff":
        if key.motion_adapter is None:
            raise ModelNotAvailableError(
                f"preset {preset_id!r}: family 'animatediff' needs options.motion_adapter "
                "(a MotionAdapter folder or hub id)"
            )
        adapter_dir = resolve_location(
            preset_id,
            "motion_adapter",
            key.motion_adapter,
            key.hf_cache,
            key.motion_adapter_revision,
        )
        extra["motion_adapter"] = _load_part(
            preset_id,
            "motion_adapter",
            key.motion_adapter,
            lambda: diffusers.MotionAdapter.from_pretrained(
                adapter_dir,
                local_files_only=True,
                dtype=dtype,
                variant=key.motion_adapter_variant or None,
            ),
        )
    pipe = _load_part(
        preset_id,
        "model",
        key.model,
        lambda: pipeline_class.from_pretrained(
            model_dir, local_files_only=True, dtype=dtype, variant=key.variant or None, **extra
        ),
    )
    if key.ip_adapter is not None:
        spec = key.ip_adapter
        adapter_dir = resolve_location(
            preset_id, "ip_adapter", spec.location, key.hf_cache, spec.revision
        )
        _load_part(
            preset_id,
            "ip_adapter",
            spec.location,
            lambda: pipe.load_ip_adapter(
                adapter_dir,
                subfolder=spec.subfolder,
                weight_name=spec.weight_name,
                image_encoder_folder=spec.image_encoder_folder,
                local_files_only=True,
                low_cpu_mem_usage=_accelerate_available(),
            ),
        )
    if key.offload == "model":
        # Each sub-model moves to the GPU only while it runs: fits in little memory.
        pipe.enable_model_cpu_offload(device=key.device)
    else:
        pipe.to(key.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _without_absent_safety_checker(key: PipelineKey, model_dir: Path) -> dict[str, Any]:
    """SD 1.5 folders name a safety checker in model_index.json; castbook does not download
    it (1.2 GB), so a folder without it loads without it instead of failing."""
    if key.family != "sd15" or (model_dir / "safety_checker").is_dir():
        return {}
    try:
        index = json.loads((model_dir / "model_index.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if isinstance(index, dict) and index.get("safety_checker") not in (None, [None, None]):
        return {"safety_checker": None, "requires_safety_checker": False}
    return {}


def _check_family(preset_id: str, key: PipelineKey, model_dir: Path) -> None:
    """A folder of another family would load half-way and fail inside the UNet; say so first."""
    try:
        class_name = json.loads((model_dir / "model_index.json").read_text("utf-8"))["_class_name"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # diffusers' own error will say what is wrong with the folder
    if class_name in _FOLDER_CLASSES[key.family]:
        return
    for family, classes in _FOLDER_CLASSES.items():
        if class_name in classes:
            raise InvalidInputError(
                f"preset {preset_id!r}: {key.model!r} is a {class_name} but options.family is "
                f"{key.family!r}; set family = {family!r} in the preset's options"
            )


def _load_part(preset_id: str, what: str, location: str, load: Callable[[], Any]) -> Any:
    try:
        return load()
    except OSError as exc:  # diffusers' and transformers' "file not found" family
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _not_available(
            preset_id, what, location, f"is incomplete or unreadable ({first_line})"
        ) from exc
    except (ValueError, KeyError, RuntimeError) as exc:
        raise GenerationError(
            f"preset {preset_id!r}: could not load {what} {location!r}: {exc}"
        ) from exc


def derived_pipeline(entry: LoadedPipeline, kind: str) -> Any:
    """The ``img2img`` pipeline built from the loaded one with ``from_pipe`` (same weights)."""
    pipe = entry.derived.get(kind)
    if pipe is None:
        _, diffusers = import_stack()
        class_name = FAMILIES[entry.key.family][1]
        if kind != "img2img" or class_name is None:
            raise GenerationError(f"family {entry.key.family!r} has no {kind} pipeline")
        # from_pipe casts to float32 unless told the dtype; the components are shared, so
        # that would silently change the main pipeline's dtype too.
        pipe = getattr(diffusers, class_name).from_pipe(entry.pipeline, dtype=entry.pipeline.dtype)
        pipe.set_progress_bar_config(disable=True)
        entry.derived[kind] = pipe
    return pipe


# ---------------------------------------------------------------------------- references


def reference_embeddings(
    entry: LoadedPipeline,
    images: Sequence[Image.Image],
    keys: Sequence[str],
    *,
    combine: str,
    guided: bool,
    max_cached: int,
) -> list[Any]:
    """``ip_adapter_image_embeds`` for ``images``: each image is encoded once per loaded model,
    cached under its key (``keys[i]``: its stored id, see ``PreparedRequest.reference_keys``).

    Several references for the one IP-Adapter are either concatenated (``combine="concat"``,
    diffusers' own behaviour for a list of images: 4 image tokens per reference, the UNet
    attends to all of them) or averaged into one embedding (``combine="mean"``: a blend,
    the cost of a single reference). With classifier-free guidance the negative (blank image)
    embeddings come first, as the pipelines expect.
    """
    torch, diffusers = import_stack()
    pipe = entry.pipeline
    projection = pipe.unet.encoder_hid_proj.image_projection_layers[0]
    hidden_states = not isinstance(projection, diffusers.models.embeddings.ImageProjection)
    device = pipe._execution_device
    positives, negatives = [], []
    with torch.no_grad():
        for image, image_id in zip(images, keys, strict=True):
            key = (image_id, hidden_states)
            cached = entry.embeddings.get(key)
            if cached is None:
                cached = pipe.encode_image(image.convert("RGB"), device, 1, hidden_states)
                entry.encodes += 1
                entry.embeddings[key] = cached
                while len(entry.embeddings) > max_cached:
                    entry.embeddings.popitem(last=False)
            entry.embeddings.move_to_end(key)
            positives.append(cached[0])
            negatives.append(cached[1])
        positive = torch.cat(positives)
        negative = torch.cat(negatives)
        if combine == "mean":
            positive = positive.mean(dim=0, keepdim=True)
            negative = negative.mean(dim=0, keepdim=True)
        positive, negative = positive[None], negative[None]
        return [torch.cat([negative, positive]) if guided else positive]


# ---------------------------------------------------------------------------- running


class StepReporter:
    """diffusers' ``callback_on_step_end``: one Progress per denoising step, across chunks."""

    def __init__(self, progress: ProgressCallback, chunk: int, chunks: int) -> None:
        self._progress = progress
        self._chunk = chunk
        self._chunks = chunks

    def __call__(self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> Any:
        total = int(pipe.num_timesteps)
        self._progress(Progress(self._chunk * total + step + 1, self._chunks * total))
        return tensors


def run_in_chunks(
    torch: Any,
    entry: LoadedPipeline,
    shape: tuple[Any, ...],
    batch: int,
    run: Callable[[int, int, StepReporter], list[Any]],
    progress: ProgressCallback,
    options: dict[str, Any],
) -> list[Any]:
    """``run`` the whole batch in one call; on out-of-memory, in halves, quarters, … ."""
    size = min(batch, entry.batch_limits.get(shape, batch), int(options.get("max_batch", batch)))
    size = max(1, size)
    while True:
        starts = range(0, batch, size)
        try:
            results: list[Any] = []
            for index, start in enumerate(starts):
                reporter = StepReporter(progress, index, len(starts))
                results.extend(run(start, min(size, batch - start), reporter))
            return results
        except Exception as exc:
            if not _out_of_memory(torch, exc):
                raise
            if size == 1:
                raise GenerationError(
                    f"out of memory generating one {shape[1]}×{shape[2]} output on "
                    f"{entry.key.device}; lower width/height or use a smaller dtype"
                ) from exc
        # Freed outside the handler: the traceback's frames hold the failed call's tensors.
        _release_memory(torch)
        size = max(1, size // 2)
        entry.batch_limits[shape] = size


def _out_of_memory(torch: Any, exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _release_memory(torch: Any) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def generators(torch: Any, seed: int, count: int) -> list[Any]:
    # CPU generators: the same seed gives the same noise on every device.
    return [torch.Generator(device="cpu").manual_seed(seed + i) for i in range(count)]


def use_scheduler(entry: LoadedPipeline, pipe: Any, name: Any) -> None:
    """Give ``pipe`` the preset's scheduler (built once per loaded model) or the model's own."""
    schedulers = entry.schedulers
    if "" not in schedulers:
        schedulers[""] = entry.pipeline.scheduler
    name = str(name or "")
    if name not in schedulers:
        _, diffusers = import_stack()
        scheduler_class = getattr(diffusers, name, None)
        if scheduler_class is None or not name.endswith("Scheduler"):
            raise FieldError("options.scheduler", f"{name!r} is not a diffusers scheduler class")
        schedulers[name] = scheduler_class.from_config(schedulers[""].config)
    pipe.scheduler = schedulers[name]
