"""Local generation with 🤗 diffusers: SD 1.5 / SDXL images, IP-Adapter references, img2img,
and image-to-video (AnimateDiff, Stable Video Diffusion).

A preset says what to load::

    [presets.my-sd15]
    backend = "diffusers"
    model = "/models/stable-diffusion-v1-5"     # a folder, or a hub id already in the HF cache
    [presets.my-sd15.options]
    family = "sd15"                             # sd15 | sdxl | animatediff | svd (default sd15)
    ip_adapter = "/models/IP-Adapter"           # references go through this IP-Adapter
    ip_adapter_subfolder = "models"
    ip_adapter_weight = "ip-adapter_sd15.safetensors"
    image_encoder_folder = "image_encoder"      # relative to the subfolder unless it has a "/"
    ip_adapter_scale = 0.6                      # unless the request sets reference_scale
    reference_combine = "concat"                # several references: "concat" tokens or "mean"
    motion_adapter = "/models/animatediff-v1-5-2"   # family animatediff
    scheduler = "DPMSolverMultistepScheduler"   # a diffusers scheduler class (default: the model's)
    device = "cuda"                             # default: cuda, else mps, else cpu
    dtype = "float16"                           # default: float16 on cuda/mps, float32 on cpu
    max_batch = 8                               # most images per pipeline call (default: batch)
    hf_cache = "/data/hf-cache"                 # where hub ids are looked up (default: HF's)
    variant = "fp16"                            # load *.fp16.safetensors (built-ins do)
    revision = "main"                           # the hub branch/tag/commit of the model
    offload = "auto"                            # auto | model | none (model CPU offload)
    # family svd only: motion_bucket_id (127), noise_aug_strength (0.02), decode_chunk_size (8)

The backend's ``device``/``dtype`` arguments beat the options; ``PreparedRequest.options``
beat the preset's for one request.

Weights are never downloaded here: a hub id must already be in the local Hugging Face cache
(``castbook models pull`` puts it there). Before torch is even imported,
:func:`castbook.models.require_installed` checks every part the preset loads and raises one
:class:`~castbook.errors.ModelNotAvailableError` naming all that are missing and the pull
command. ``offload = "auto"`` turns on model CPU offload on a GPU with less memory than the
family needs (:data:`castbook.models.doctor.OFFLOAD_BELOW_GB`).

How a request runs:

- ``batch`` images (or videos) are ONE pipeline call with one generator per image seeded
  ``seed, seed + 1, …``, so image ``i`` of a batch equals a single generation with seed
  ``seed + i``. When a batch does not fit in GPU memory it is retried in halves, and the size
  that fitted is remembered for the next request of that shape.
- References feed the IP-Adapter as pre-computed image embeddings, cached per loaded model
  by the image's bytes: a batch or a series of requests with the same character encodes its
  references once. Without references the adapter's scale is 0, which is exactly the model
  without the adapter.
- Progress is reported after every denoising step, ``Progress(step, total)`` where ``total``
  is the number of steps the scheduler really runs (img2img runs ``int(steps × denoise)``,
  at least 1).
  A progress callback that raises :class:`~castbook.errors.GenerationCancelled` stops the
  generation between steps; the exception reaches the caller.

torch and diffusers are imported on first use, never when this module is imported.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

from PIL import Image

from castbook.errors import FieldError, GenerationError, InvalidInputError, MissingDependencyError
from castbook.generation.base import (
    GenerationResult,
    LoraUse,
    PreparedRequest,
    Progress,
    ProgressCallback,
    Video,
    image_key,
)
from castbook.generation.diffusers_pipelines import (
    FAMILIES,
    IPAdapterSpec,
    LoadedPipeline,
    PipelineCache,
    PipelineKey,
    StepReporter,
    derived_pipeline,
    generators,
    import_stack,
    load_pipeline,
    reference_embeddings,
    run_in_chunks,
    use_scheduler,
)
from castbook.generation.presets import Preset
from castbook.generation.request import Mode
from castbook.models.cache import hub_cache_dir
from castbook.models.doctor import detect_device, load_plan
from castbook.models.status import BACKEND_PACKAGES, require_installed

__all__ = ["DiffusersBackend", "PipelineCache"]

# How many reference images one IP-Adapter takes at once (each adds 4 image tokens).
IP_ADAPTER_MAX_REFERENCES = 4
_FAMILY_MODES = {
    "sd15": (Mode.T2I, Mode.I2I),
    "sdxl": (Mode.T2I, Mode.I2I),
    "animatediff": (Mode.I2V,),
    "svd": (Mode.I2V,),
}
_DTYPES = {
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}
_COMBINE = ("concat", "mean")
# Conditioning for "no reference": with the adapter's scale at 0 its content does not matter.
_BLANK = Image.new("RGB", (224, 224), (127, 127, 127))
_BLANK_KEY = image_key(_BLANK)


class DiffusersBackend:
    """Generates on this machine with diffusers; one instance per preset.

    ``cache`` holds loaded pipelines; pass one :class:`PipelineCache` to several backends
    (a worker's presets) so a model used by two presets is loaded once. ``device`` and
    ``dtype`` override the preset's options and the automatic choice.
    """

    name = "diffusers"

    def __init__(
        self,
        preset: Preset,
        *,
        device: str | None = None,
        dtype: str | None = None,
        cache: PipelineCache | None = None,
    ) -> None:
        missing = _missing_module()
        if missing is not None:
            raise MissingDependencyError("local generation", "diffusers", missing)
        self.preset = preset
        self.cache = cache if cache is not None else PipelineCache()
        self._device = device
        self._dtype = _dtype_name(dtype, "dtype") if dtype is not None else None
        self.family = _family(preset, preset.options)
        lacking = [m.value for m in preset.modes if m not in _FAMILY_MODES[self.family]]
        if lacking:
            modes = ", ".join(m.value for m in _FAMILY_MODES[self.family])
            raise FieldError(
                "mode",
                f"preset {preset.id!r} (family {self.family}) does {modes}, "
                f"not {', '.join(lacking)}",
            )
        self.max_references = _max_references(preset.options, self.family)

    # ------------------------------------------------------------------ the protocol

    def generate(self, request: PreparedRequest, progress: ProgressCallback) -> GenerationResult:
        options = {**self.preset.options, **request.options}
        family = _family(self.preset, options)
        self.require_models(options)
        torch, _ = import_stack()
        key = self._key(torch, options, family)
        entry = self.cache.get(key, lambda k: load_pipeline(k, self.preset.id))
        started = time.perf_counter()
        events = _CountingProgress(progress)
        with entry.lock:
            use_loras(entry, request.loras)
            if request.mode is Mode.I2V:
                result = self._videos(torch, entry, request, options, events)
            else:
                result = self._images(torch, entry, request, options, events)
        if events.count == 0:
            progress(Progress(0, 0, "nothing to denoise"))
        result.metadata["elapsed_s"] = round(time.perf_counter() - started, 3)
        return result

    def generate_variants(
        self, requests: Sequence[PreparedRequest], progress: ProgressCallback
    ) -> list[GenerationResult]:
        """Several single-image text-to-image requests in ONE pipeline call.

        They must differ only in prompt, negative prompt and seed (Batch Render's prompt
        variants of the same characters). Anything else runs one request at a time. Each
        image gets its own generator, so it equals what ``generate`` gives for its request.
        """
        if len(requests) < 2 or not _variants_of_one_request(requests):
            return [self.generate(request, progress) for request in requests]
        first = requests[0]
        options = {**self.preset.options, **first.options}
        family = _family(self.preset, options)
        if family not in ("sd15", "sdxl"):
            return [self.generate(request, progress) for request in requests]
        self.require_models(options)
        torch, _ = import_stack()
        entry = self.cache.get(
            self._key(torch, options, family), lambda k: load_pipeline(k, self.preset.id)
        )
        started = time.perf_counter()
        wanted = first.request
        count = len(requests)
        with entry.lock:
            use_loras(entry, first.loras)
            pipe = entry.pipeline
            use_scheduler(entry, pipe, options.get("scheduler"))
            call: dict[str, Any] = {
                "prompt": [r.prompt for r in requests],
                "negative_prompt": [r.negative_prompt or "" for r in requests],
                "num_inference_steps": wanted.steps,
                "guidance_scale": wanted.guidance,
                "width": _snap(wanted.width),
                "height": _snap(wanted.height),
                "output_type": "pil",
                "num_images_per_prompt": 1,
            }
            scale = self._condition(
                entry, pipe, first.references, first.reference_keys(), options, first, call
            )
            guided = (
                wanted.guidance > 1.0 and pipe.unet.config.get("time_cond_proj_dim", None) is None
            )
            if "ip_adapter_image_embeds" in call:
                # The pipeline repeats reference embeddings per image of one prompt, not per
                # prompt: give it one copy per variant, negatives first as it expects.
                call["ip_adapter_image_embeds"] = [
                    _repeat_embeds(torch, embeds, count, guided=guided)
                    for embeds in call["ip_adapter_image_embeds"]
                ]
            output = pipe(
                **call,
                generator=[generators(torch, r.seed, 1)[0] for r in requests],
                callback_on_step_end=StepReporter(progress, 0, 1),
            )
            images = list(output.images)
            results = []
            for request, image in zip(requests, images, strict=True):
                metadata = self._metadata(entry, pipe, request, scale)
                metadata["batched_variants"] = count
                results.append(
                    GenerationResult(
                        images=(_fit(image, wanted.width, wanted.height),),
                        seed=request.seed,
                        metadata=metadata,
                    )
                )
        elapsed = round(time.perf_counter() - started, 3)
        for result in results:
            result.metadata["elapsed_s"] = elapsed
        return results

    def require_models(self, options: dict[str, Any] | None = None) -> None:
        """Every part the preset loads is on this machine, or one error naming all that are
        missing and the command that fetches them (file checks only: no torch, no network)."""
        preset = self.preset
        if options is not None and options != preset.options:
            preset = dataclasses.replace(preset, options=options)
        require_installed(preset)

    # ------------------------------------------------------------------ images

    def _images(
        self,
        torch: Any,
        entry: LoadedPipeline,
        request: PreparedRequest,
        options: dict[str, Any],
        progress: ProgressCallback,
    ) -> GenerationResult:
        wanted = request.request
        image_to_image = request.mode is Mode.I2I
        if image_to_image and wanted.denoise == 0 and request.init_image is not None:
            return self._unchanged(entry, request)
        pipe = derived_pipeline(entry, "img2img") if image_to_image else entry.pipeline
        use_scheduler(entry, pipe, options.get("scheduler"))
        width, height = _snap(wanted.width), _snap(wanted.height)
        call: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or None,
            "num_inference_steps": wanted.steps,
            "guidance_scale": wanted.guidance,
            "output_type": "pil",
        }
        if request.init_image is not None and image_to_image:
            source = request.init_image.convert("RGB")
            call["image"] = source.resize((width, height), Image.Resampling.LANCZOS)
            call["strength"] = wanted.denoise  # diffusers' name for it
            call["num_inference_steps"] = img2img_schedule(wanted.steps, wanted.denoise)
        else:
            call.update(width=width, height=height)
        scale = self._condition(
            entry, pipe, request.references, request.reference_keys(), options, request, call
        )

        def run(start: int, count: int, on_step: StepReporter) -> list[Image.Image]:
            output = pipe(
                **call,
                num_images_per_prompt=count,
                generator=generators(torch, request.seed + start, count),
                callback_on_step_end=on_step,
            )
            return list(output.images)

        shape = (request.mode.value, width, height)
        images = run_in_chunks(torch, entry, shape, wanted.batch, run, progress, options)
        metadata = self._metadata(entry, pipe, request, scale)
        if image_to_image:
            metadata["denoise"] = wanted.denoise
            metadata["steps_run"] = int(call["num_inference_steps"] * wanted.denoise)
        return GenerationResult(
            images=tuple(_fit(image, wanted.width, wanted.height) for image in images),
            seed=request.seed,
            metadata=metadata,
        )

    def _unchanged(self, entry: LoadedPipeline, request: PreparedRequest) -> GenerationResult:
        """Image to image with denoise 0 changes nothing: the init image, at the asked size,
        once per batch image (a pipeline cannot run zero denoising steps)."""
        wanted = request.request
        image = _fit(request.init_image.convert("RGB"), wanted.width, wanted.height)  # type: ignore[union-attr]
        metadata = self._metadata(entry, entry.pipeline, request, None)
        metadata.update(denoise=0.0, steps_run=0)
        return GenerationResult(
            images=(image,) * wanted.batch, seed=request.seed, metadata=metadata
        )

    # ------------------------------------------------------------------ videos

    def _videos(
        self,
        torch: Any,
        entry: LoadedPipeline,
        request: PreparedRequest,
        options: dict[str, Any],
        progress: ProgressCallback,
    ) -> GenerationResult:
        wanted = request.request
        pipe = entry.pipeline
        use_scheduler(entry, pipe, options.get("scheduler"))
        width, height = _snap(wanted.width), _snap(wanted.height)
        call: dict[str, Any] = {
            "num_frames": wanted.num_frames,
            "num_inference_steps": wanted.steps,
            "width": width,
            "height": height,
            "output_type": "pil",
        }
        scale: float | None = None
        if entry.key.family == "svd":
            source = request.init_image or (request.references[0] if request.references else None)
            if source is None:
                raise FieldError("init_image", "Stable Video Diffusion animates an init image")
            call.update(
                image=source.convert("RGB").resize((width, height), Image.Resampling.LANCZOS),
                min_guidance_scale=1.0,
                max_guidance_scale=wanted.guidance,
                fps=wanted.fps,
                motion_bucket_id=int(options.get("motion_bucket_id", 127)),
                noise_aug_strength=float(options.get("noise_aug_strength", 0.02)),
                decode_chunk_size=int(options.get("decode_chunk_size", 8)),
            )
        else:
            # AnimateDiff: the init image (and any references) condition through IP-Adapter.
            images = list(request.references)
            keys = list(request.reference_keys())
            if request.init_image is not None:
                images.insert(0, request.init_image)
                keys.insert(0, image_key(request.init_image))
            call["guidance_scale"] = wanted.guidance
            scale = self._condition(entry, pipe, images, keys, options, request, call)

        def run(start: int, count: int, on_step: StepReporter) -> list[list[Image.Image]]:
            extra: dict[str, Any]
            if entry.key.family == "svd":
                extra = {"num_videos_per_prompt": count}
            else:
                # AnimateDiffPipeline ignores num_videos_per_prompt; a list of prompts batches.
                negative = request.negative_prompt
                extra = {
                    "prompt": [request.prompt] * count,
                    "negative_prompt": [negative] * count if negative else None,
                }
            output = pipe(
                **call,
                **extra,
                generator=generators(torch, request.seed + start, count),
                callback_on_step_end=on_step,
            )
            return [list(frames) for frames in output.frames]

        shape = (request.mode.value, width, height, wanted.num_frames)
        clips = run_in_chunks(torch, entry, shape, wanted.batch, run, progress, options)
        videos = tuple(
            Video(
                frames=tuple(_fit(frame, wanted.width, wanted.height) for frame in frames),
                fps=wanted.fps,
            )
            for frames in clips
        )
        metadata = self._metadata(entry, pipe, request, scale)
        metadata.update(num_frames=wanted.num_frames, fps=wanted.fps)
        return GenerationResult(videos=videos, seed=request.seed, metadata=metadata)

    # ------------------------------------------------------------------ helpers

    def _condition(
        self,
        entry: LoadedPipeline,
        pipe: Any,
        images: Sequence[Image.Image],
        keys: Sequence[str],
        options: dict[str, Any],
        request: PreparedRequest,
        call: dict[str, Any],
    ) -> float | None:
        """Put the references into ``call`` as IP-Adapter embeddings; returns the scale used."""
        if entry.key.ip_adapter is None:
            return None
        scale = _reference_scale(options, request) if images else 0.0
        combine = str(options.get("reference_combine", "concat"))
        if combine not in _COMBINE:
            raise FieldError("options.reference_combine", f"must be one of {', '.join(_COMBINE)}")
        guided = (
            request.request.guidance > 1.0
            and pipe.unet.config.get("time_cond_proj_dim", None) is None
        )
        pipe.set_ip_adapter_scale(scale)
        call["ip_adapter_image_embeds"] = reference_embeddings(
            entry,
            images or [_BLANK],
            keys if images else [_BLANK_KEY],
            combine=combine,
            guided=guided,
            max_cached=self.cache.max_embeddings,
        )
        return scale

    def _key(self, torch: Any, options: dict[str, Any], family: str) -> PipelineKey:
        device = self._device or options.get("device") or _best_device(torch)
        device = str(device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise GenerationError(
                f"preset {self.preset.id!r} asks for device {device!r} but torch sees no CUDA "
                'GPU here; set device = "cpu" or install a CUDA build of torch'
            )
        if self._dtype is not None:
            dtype = self._dtype
        elif options.get("dtype"):
            dtype = _dtype_name(options["dtype"], "options.dtype")
        else:
            dtype = "float32" if device == "cpu" else "float16"
        offload = load_plan(family, detect_device(), {**options, "device": device})["offload"]
        if offload not in ("none", "model"):
            raise FieldError("options.offload", f"must be auto, model or none, got {offload!r}")
        ip_adapter = None
        if options.get("ip_adapter") and family != "svd":
            ip_adapter = IPAdapterSpec(
                location=str(options["ip_adapter"]),
                subfolder=str(options.get("ip_adapter_subfolder", "")),
                weight_name=str(options.get("ip_adapter_weight", "ip-adapter_sd15.safetensors")),
                image_encoder_folder=str(options.get("image_encoder_folder", "image_encoder")),
                revision=str(options.get("ip_adapter_revision") or "main"),
            )
        motion_adapter = options.get("motion_adapter") if family == "animatediff" else None
        return PipelineKey(
            model=self.preset.model,
            family=family,
            device=device,
            dtype=dtype,
            ip_adapter=ip_adapter,
            motion_adapter=str(motion_adapter) if motion_adapter else None,
            hf_cache=str(hub_cache_dir(options)),
            revision=str(options.get("revision") or "main"),
            variant=str(options.get("variant") or ""),
            motion_adapter_revision=str(options.get("motion_adapter_revision") or "main"),
            motion_adapter_variant=str(options.get("motion_adapter_variant") or ""),
            offload=offload,
        )

    def _metadata(
        self, entry: LoadedPipeline, pipe: Any, request: PreparedRequest, scale: float | None
    ) -> dict[str, Any]:
        wanted = request.request
        metadata: dict[str, Any] = {
            "backend": self.name,
            "preset": self.preset.id,
            "model": entry.key.model,
            "family": entry.key.family,
            "scheduler": type(pipe.scheduler).__name__,
            "device": entry.key.device,
            "dtype": entry.key.dtype,
            "width": wanted.width,
            "height": wanted.height,
            "steps": wanted.steps,
            "guidance": wanted.guidance,
            "seed": request.seed,
            "seeds": [request.seed + i for i in range(wanted.batch)],
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "references": len(request.references),
            "reference_scale": scale,
        }
        if request.loras:
            metadata["loras"] = [lora.described() for lora in request.loras]
        if request.lora_notes:
            metadata["lora_notes"] = list(request.lora_notes)
        tokenizer = getattr(pipe, "tokenizer", None)
        if tokenizer is not None and request.prompt:
            tokens = len(tokenizer(request.prompt, truncation=False).input_ids)
            # CLIP reads 77 tokens; a long injected character prompt loses its tail.
            metadata["prompt_truncated"] = tokens > tokenizer.model_max_length
        return metadata


# ---------------------------------------------------------------------- small pieces


def use_loras(entry: LoadedPipeline, loras: Sequence[LoraUse]) -> None:
    """Make exactly ``loras`` active on the pipeline at their weights (under its lock).

    An adapter is loaded once per pipeline (named by its file's sha256) and stays loaded,
    switched off while a request does not use it: the next request of that character does
    not read the file again. Derived pipelines (img2img) share the UNet, so they follow.
    """
    pipe = entry.pipeline
    if not loras:
        if entry.lora_adapters:
            pipe.disable_lora()
        return
    from safetensors.torch import load_file

    names: list[str] = []
    weights: list[float] = []
    for lora in loras:
        name = "castbook_" + lora.sha256[:16]
        if name in names:  # two characters sharing one file: applied once
            continue
        if name not in entry.lora_adapters:
            try:
                pipe.load_lora_weights(load_file(lora.path), adapter_name=name)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise GenerationError(
                    f"{lora.character}'s LoRA ({lora.sha256[:12]}) does not load into "
                    f"{entry.key.model}: {exc}"
                ) from exc
            entry.lora_adapters.add(name)
        names.append(name)
        weights.append(lora.weight)
    pipe.enable_lora()
    pipe.set_adapters(names, adapter_weights=weights)


def img2img_schedule(steps: int, denoise: float) -> int:
    """The ``num_inference_steps`` to hand an img2img pipeline so that it runs
    ``int(steps × denoise)`` denoising steps, and at least one: diffusers runs
    ``int(n × strength)`` (its name for denoise) of a schedule of ``n``, which is 0 (an
    error deep in the scheduler) when ``steps × denoise < 1``. Then the schedule is
    lengthened until its low-noise end holds one step. ``denoise`` > 0."""
    schedule = steps
    while int(schedule * denoise) < 1:
        schedule = max(schedule + 1, math.ceil(1 / denoise))
    return schedule


def _variants_of_one_request(requests: Sequence[PreparedRequest]) -> bool:
    first = requests[0]
    shared = first.request.model_dump(exclude={"prompt", "negative_prompt", "seed", "characters"})
    keys = first.reference_keys()
    for request in requests:
        if request.mode is not Mode.T2I or request.request.batch != 1:
            return False
        if request.init_image is not None or request.options != first.options:
            return False
        other = request.request.model_dump(
            exclude={"prompt", "negative_prompt", "seed", "characters"}
        )
        if other != shared or request.reference_keys() != keys:
            return False
        if request.loras != first.loras:
            return False
    return True


def _repeat_embeds(torch: Any, embeds: Any, count: int, *, guided: bool) -> Any:
    if not guided:
        return embeds.repeat(count, *([1] * (embeds.dim() - 1)))
    negative, positive = embeds.chunk(2)
    ones = [1] * (embeds.dim() - 1)
    return torch.cat([negative.repeat(count, *ones), positive.repeat(count, *ones)])


class _CountingProgress:
    def __init__(self, progress: ProgressCallback) -> None:
        self._progress = progress
        self.count = 0

    def __call__(self, event: Progress) -> None:
        self.count += 1
        self._progress(event)


def _best_device(torch: Any) -> str:
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _dtype_name(value: Any, field: str) -> str:
    try:
        return _DTYPES[str(value).lower().removeprefix("torch.")]
    except KeyError:
        raise FieldError(field, f"must be float16, bfloat16 or float32, got {value!r}") from None


def _family(preset: Preset, options: dict[str, Any]) -> str:
    family = str(options.get("family", "sd15"))
    if family not in FAMILIES:
        raise InvalidInputError(
            f"preset {preset.id!r}: options.family must be one of {', '.join(FAMILIES)}, "
            f"got {family!r}"
        )
    return family


def _missing_module() -> str | None:
    """The first of torch, diffusers and transformers this Python cannot import, or None.
    A backend is built for every submitted request (to read its reference cap): a module
    already imported (or blocked, ``None`` in ``sys.modules``) is answered from there, and
    the others are looked up on disk once per process (a dozen ``stat`` calls each, under
    the import lock)."""
    for module in BACKEND_PACKAGES["diffusers"][0]:
        if module in sys.modules:
            if sys.modules[module] is None:
                return module
        elif not _findable(module):
            return module
    return None


@functools.cache
def _findable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _max_references(options: dict[str, Any], family: str) -> int:
    if "max_references" in options:
        return int(options["max_references"])
    if family == "svd":
        return 1  # the first reference is the image it animates when there is no init image
    return IP_ADAPTER_MAX_REFERENCES if options.get("ip_adapter") else 0


def _reference_scale(options: dict[str, Any], request: PreparedRequest) -> float:
    if "reference_scale" in request.request.model_fields_set:
        return request.request.reference_scale
    if "ip_adapter_scale" in options:
        return float(options["ip_adapter_scale"])
    return request.request.reference_scale


def _snap(size: int) -> int:
    """The pipelines need multiples of 8; the output is resized back to the exact size."""
    return max(8, size // 8 * 8)


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.LANCZOS)
