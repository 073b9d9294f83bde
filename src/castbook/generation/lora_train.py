"""Training a character LoRA: a small adapter on a Stable Diffusion 1.5 or SDXL UNet's attention
layers, learnt from the character's reference images.

What a kohya_ss or diffusers DreamBooth-LoRA user does by hand, from the library:

- **data**: the reference images (at least :data:`MIN_IMAGES`; more is better, 10–20 varied
  ones is what LoRA trainers recommend), each step one of them augmented: a random crop of
  80–100 % of its shorter side, mild colour jitter (±5 % brightness, contrast, saturation:
  enough to stop the adapter learning one exposure, too little to change hair or skin
  colour), and a horizontal flip only when the character is marked symmetric (the tag
  ``symmetric``) or the caller asks for it — a flip moves a scar or a parting to the other
  side;
- **captions** from the character's traits and style prompt (the same phrases generation
  injects), led by a unique trigger token (:func:`trigger_token`) that generation puts back
  into the prompt;
- **the step** is the standard noise-prediction loss: encode the image with the VAE, add
  noise at a random timestep with the pipeline's own scheduler (``add_noise``), and regress
  the UNet's prediction on the noise (or the velocity, for a v-prediction model) with MSE.
  The adapter is a ``peft.LoraConfig`` added with ``unet.add_adapter`` (the diffusers-native
  way); only its weights train. fp32 on CPU; on CUDA the frozen weights are fp16 (bf16 where
  the GPU has it) under autocast with gradient checkpointing, the adapter's weights fp32.
- **the result** is saved with ``StableDiffusionPipeline.save_lora_weights`` from
  ``get_peft_model_state_dict`` / ``convert_state_dict_to_diffusers``, so
  ``pipe.load_lora_weights`` (and ComfyUI, A1111) read it as any other SD 1.5 (or SDXL) LoRA.

- **prior preservation** (optional, off by default, as in diffusers' DreamBooth script):
  the base model first draws class images from the class prompt (the caption without the
  trigger token), kept in the run's folder; each step is then a batch of two — a character
  image and a class image — and the loss adds the class image's, weighted.

A checkpoint (the adapter's weights, the optimiser's state, the random generators and the
losses so far) is written every ``checkpoint_every`` steps and when a run is cancelled; a run
given the same folder and settings continues from it and ends with the same weights as one
that never stopped. Cancelling is done from the progress callback: when it raises
:class:`~castbook.errors.GenerationCancelled` the run saves a checkpoint and lets it through.

accelerate is not used: one process, one device, no gradient accumulation — the step is the
few lines below, and what accelerate would add (device placement, autocast) is one call each.

torch, diffusers and peft are imported on first use, never when this module is imported.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageEnhance

from castbook.errors import (
    FieldError,
    GenerationCancelled,
    GenerationError,
    InvalidInputError,
    MissingDependencyError,
    ModelNotAvailableError,
)
from castbook.generation.presets import Preset

if TYPE_CHECKING:
    from castbook.library import Character, CharacterLibrary, CharacterLora

__all__ = [
    "LORA_FAMILIES",
    "MIN_IMAGES",
    "TrainedLora",
    "TrainingProgress",
    "TrainingSettings",
    "caption_for",
    "character_work_dir",
    "check_character_training",
    "check_training",
    "checkpoint_step",
    "class_prompt_for",
    "import_training_stack",
    "model_folder_problem",
    "train_character",
    "train_lora",
    "trainable_preset_problem",
    "training_settings",
    "training_summary",
    "trigger_token",
]

MIN_IMAGES = 3
# Families whose UNet this trainer knows: SD 1.5, and SDXL (two text encoders, and the
# size and crop conditioning its UNet takes beside the text).
LORA_FAMILIES = ("sd15", "sdxl")
# The attention projections kohya_ss and diffusers' train_dreambooth_lora adapt.
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
CHECKPOINT = "checkpoint.pt"
_FAMILY_NAMES = {"sd15": "Stable Diffusion 1.5", "sdxl": "SDXL"}
_CROP_MIN = 0.8  # a crop keeps at least this share of the shorter side
_JITTER = 0.05  # colour jitter: ±5 % brightness, contrast and saturation
LIMITS: dict[str, tuple[int, int]] = {
    "steps": (1, 100_000),
    "rank": (1, 256),
    "resolution": (64, 2048),
    # the consistency report's prompts, each rendered without and with the LoRA (0: none)
    "report_prompts": (0, 8),
    # prior preservation: how many class images, and the denoising steps of each
    "class_images": (1, 1000),
    "class_steps": (1, 100),
    # as a generation's seed (generation/request.py): what torch's generators take
    "seed": (0, 2**32 - 1),
}
CLASS_FOLDER = "class-images"
_PRIOR_SETTINGS = (
    "prior_preservation",
    "class_prompt",
    "class_images",
    "class_steps",
    "prior_loss_weight",
)
MAX_CLASS_PROMPT = 1000


@dataclass(frozen=True)
class TrainingSettings:
    """How to train; :func:`check_training` refuses out-of-range values before any work."""

    steps: int = 800
    rank: int = 16
    resolution: int = 512
    learning_rate: float = 1e-4
    seed: int = 0
    checkpoint_every: int = 100
    flip: bool = False  # horizontal flips (only for symmetric characters)
    device: str | None = None  # default: cuda when there is one, else cpu
    # CUDA only: "fp16" or "bf16" for the frozen weights (default bf16 where the GPU has it)
    precision: str | None = None
    # prompts of the consistency report after training (castbook.render.lora_report)
    report_prompts: int = 4
    # DreamBooth's prior preservation: class images the base model renders from the class
    # prompt (default: the caption without the trigger word) train beside the character's,
    # so the adapter changes the trigger word and leaves the class as the model drew it.
    prior_preservation: bool = False
    class_prompt: str = ""
    class_images: int = 100
    class_steps: int = 25
    prior_loss_weight: float = 1.0
    # Not part of what is learnt, so a resumed run may change them:
    _RUN_ONLY = ("checkpoint_every", "device", "precision", "report_prompts")

    def fingerprint(self) -> str:
        """What a checkpoint must match to be continued (not how often it is written)."""
        values = {k: v for k, v in asdict(self).items() if k not in self._RUN_ONLY}
        if not self.prior_preservation:  # unused, and what checkpoints said before they existed
            for name in _PRIOR_SETTINGS:
                values.pop(name)
        return json.dumps(values, sort_keys=True)


@dataclass(frozen=True)
class TrainingProgress:
    step: int
    total: int
    loss: float
    message: str = ""


@dataclass(frozen=True)
class TrainedLora:
    """The adapter as ``.safetensors`` bytes, and how it was made."""

    data: bytes
    losses: tuple[float, ...]
    steps: int
    resumed_from: int  # the step a checkpoint gave (0: trained from the start)
    device: str
    dtype: str
    seconds: float
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())


# ----------------------------------------------------------------------------- checks


def trainable_preset_problem(preset: Preset) -> str | None:
    """Why a LoRA cannot be trained for ``preset``'s base model; None when it can."""
    if preset.backend != "diffusers":
        return (
            f"preset {preset.id!r} runs on the {preset.backend} backend, whose model has no UNet "
            "castbook can train; a LoRA trains a local diffusers Stable Diffusion 1.5 or SDXL "
            "model: choose a diffusers preset such as sd15-ip-adapter"
        )
    family = str(preset.options.get("family", "sd15"))
    if family not in LORA_FAMILIES:
        return (
            f"preset {preset.id!r} is a {family} model; castbook trains LoRAs for "
            f"{', '.join(LORA_FAMILIES)} base models so far: choose a preset such as "
            "sd15-ip-adapter or sdxl-ip-adapter-face"
        )
    return None


def check_training(
    preset: Preset, settings: TrainingSettings, image_count: int, who: str = "the character"
) -> None:
    """Refuse, before anything is loaded, what cannot train: the one rule the CLI, the API
    and the job ask."""
    problem = trainable_preset_problem(preset)
    if problem is not None:
        raise FieldError("preset", problem)
    _check_whole_numbers(settings, ("steps", "rank", "resolution", "report_prompts", "seed"))
    if settings.resolution % 8:
        raise FieldError("resolution", f"must be a multiple of 8, got {settings.resolution}")
    if not 0 < settings.learning_rate <= 1:
        raise FieldError(
            "learning_rate", f"must be above 0 and at most 1, got {settings.learning_rate}"
        )
    if settings.checkpoint_every < 1:
        raise FieldError("checkpoint_every", f"must be at least 1, got {settings.checkpoint_every}")
    # Prior preservation's settings are checked with it off too: a bad value is refused,
    # not kept in the job's input unused.
    _check_whole_numbers(settings, ("class_images", "class_steps"))
    weight = settings.prior_loss_weight
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 10:
        raise FieldError("prior_loss_weight", f"must be above 0 and at most 10, got {weight!r}")
    if not isinstance(settings.class_prompt, str):
        raise FieldError("class_prompt", f"must be text, got {settings.class_prompt!r}")
    if len(settings.class_prompt) > MAX_CLASS_PROMPT:
        raise FieldError("class_prompt", f"must be at most {MAX_CLASS_PROMPT} characters long")
    if image_count == 0:
        raise FieldError(
            "images",
            f"{who} has no reference images; add at least {MIN_IMAGES} (10–20 varied ones "
            "train a better LoRA)",
        )
    if image_count < MIN_IMAGES:
        raise FieldError(
            "images",
            f"{who} has {image_count} reference image(s); a LoRA needs at least {MIN_IMAGES} "
            "(10–20 varied ones train a better one): add more before training",
        )
    problem = model_folder_problem(preset)
    if problem is not None:
        raise FieldError("preset", problem)


def _check_whole_numbers(settings: TrainingSettings, names: Sequence[str]) -> None:
    for name in names:
        value = getattr(settings, name)
        low, high = LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise FieldError(
                name, f"must be a whole number between {low} and {high}, got {value!r}"
            )


def model_folder_problem(preset: Preset) -> str | None:
    """Why the preset's model folder, when it is on this machine, has nothing this trainer
    adapts: no UNet (a DiT pipeline such as SD3, PixArt or Flux denoises with a transformer).
    Read from its ``model_index.json`` alone, before any weights load. None when it has a
    UNet, or when the folder is not here or unreadable (loading it says why)."""
    try:
        folder = _model_folder(preset)
        index = json.loads((Path(folder) / "model_index.json").read_text("utf-8"))
    except (ModelNotAvailableError, OSError, ValueError):
        return None
    if not isinstance(index, dict) or "unet" in index:
        return None
    kind = index.get("_class_name", "pipeline")
    denoiser = next((name for name in ("transformer", "prior") if name in index), None)
    has = f"its denoiser is a {denoiser}, not a UNet" if denoiser else "it has no UNet"
    return (
        f"preset {preset.id!r}: {preset.model!r} is a {kind} and {has}; castbook trains "
        "LoRAs on the UNet of Stable Diffusion 1.5 and SDXL models: choose a preset such as "
        "sd15-ip-adapter or sdxl-ip-adapter-face"
    )


def _model_folder(preset: Preset) -> str:
    """The preset's model folder on this machine (a folder, or the hub id's cached snapshot),
    or :class:`ModelNotAvailableError` saying what to pull."""
    from castbook.generation.diffusers_pipelines import resolve_location
    from castbook.models.cache import hub_cache_dir

    options = preset.options
    return resolve_location(
        preset.id,
        "model",
        preset.model,
        str(hub_cache_dir(options)),
        str(options.get("revision") or "main"),
    )


def trigger_token(character_id: str) -> str:
    """A rare word for the character, fixed by its id: ``cbk`` and 6 hex digits. Tokenisers
    split it into pieces no caption of anything else uses, so the adapter binds it to the
    character (what ``sks`` or ``ohwx`` are in DreamBooth guides, but one per character)."""
    return "cbk" + hashlib.sha256(character_id.encode()).hexdigest()[:6]


def caption_for(trigger: str, description: str) -> str:
    """The training caption: the trigger token, then the character's injected phrases."""
    description = description.strip().strip(",").strip()
    return f"{trigger}, {description}" if description else trigger


# ----------------------------------------------------------------------------- training


def import_training_stack() -> tuple[ModuleType, ModuleType, ModuleType]:
    """torch, diffusers and peft, or which extra is missing."""
    modules = []
    for name in ("torch", "diffusers", "transformers", "peft"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            raise MissingDependencyError("LoRA training", "diffusers", name) from None
    return modules[0], modules[1], modules[3]


def train_lora(
    model_dir: str | os.PathLike[str],
    images: Sequence[Image.Image],
    caption: str,
    settings: TrainingSettings,
    work_dir: str | os.PathLike[str],
    progress: Callable[[TrainingProgress], None] | None = None,
    family: str = "sd15",
    keep: Callable[[TrainedLora], None] | None = None,
) -> TrainedLora:
    """Train a LoRA for the pipeline folder ``model_dir`` (an SD 1.5 or, with
    ``family="sdxl"``, an SDXL pipeline) on ``images``.

    ``work_dir`` keeps the checkpoint; a checkpoint there made with other settings is an
    error (a different run), not silently replaced. ``keep`` stores the finished LoRA before
    the checkpoint is deleted: if it fails, a checkpoint of the last step is left, and the
    same call again keeps that LoRA without training a step more.
    """
    import time

    torch, diffusers, peft = import_training_stack()
    started = time.perf_counter()
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} asked for, but torch sees no CUDA GPU here")
    weight_dtype = _weight_dtype(torch, on_gpu, settings.precision)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if family not in LORA_FAMILIES:
        raise FieldError("family", f"must be one of {', '.join(LORA_FAMILIES)}, got {family!r}")
    sdxl = family == "sdxl"
    saved = _checkpoint(torch, work, settings)
    pipeline_class = (
        diffusers.StableDiffusionXLPipeline if sdxl else diffusers.StableDiffusionPipeline
    )
    extra = {} if sdxl else {"safety_checker": None}
    try:
        pipe = pipeline_class.from_pretrained(
            str(model_dir), local_files_only=True, dtype=weight_dtype, **extra
        )
    except (OSError, ValueError, TypeError) as exc:
        raise GenerationError(
            f"{model_dir} does not load as a {_FAMILY_NAMES[family]} pipeline: {exc}"
        ) from exc
    unet, vae = pipe.unet, pipe.vae
    encoders = [pipe.text_encoder, getattr(pipe, "text_encoder_2", None)]
    for module in (unet, vae, *[e for e in encoders if e is not None]):
        module.requires_grad_(False)
        module.to(device)
    class_images: list[Image.Image] = []
    if settings.prior_preservation:
        # Drawn by the base model, before the adapter exists and before the seeds below.
        class_caption = class_prompt_for(settings, caption)
        drawn_by = f"{Path(model_dir).resolve()} ({family})"
        class_images = _class_images(torch, pipe, class_caption, settings, work, progress, drawn_by)
    if sdxl:
        vae.to(dtype=torch.float32)  # SDXL's VAE overflows in fp16 (diffusers' script does this)
    torch.manual_seed(settings.seed)  # the adapter's initial weights
    unet.add_adapter(
        peft.LoraConfig(
            r=settings.rank,
            lora_alpha=settings.rank,
            init_lora_weights="gaussian",
            target_modules=list(TARGET_MODULES),
        )
    )
    trainable = [p for p in unet.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.data = parameter.data.float()  # the adapter trains in fp32 whatever the base
    if on_gpu:
        unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=1e-2)
    # fp16 gradients underflow without loss scaling (bf16 has fp32's range and needs none).
    scaler = torch.amp.GradScaler("cuda", enabled=weight_dtype == torch.float16)
    scheduler = pipe.scheduler
    embeddings, pooled = _encode_caption(torch, pipe, caption, device, sdxl)
    if class_images:
        # Batch 2, as diffusers' DreamBooth script: the character's image, then a class image.
        class_states, class_pooled = _encode_caption(torch, pipe, class_caption, device, sdxl)
        embeddings = torch.cat([embeddings, class_states])
        if sdxl:
            pooled = torch.cat([pooled, class_pooled])
    generator = torch.Generator().manual_seed(settings.seed)  # noise and timesteps (on CPU)
    rng = random.Random(settings.seed)  # which image, and its augmentation
    losses: list[float] = []
    start = _resume(torch, unet, (optimizer, scaler), generator, rng, losses, saved)
    step = start
    total = settings.steps

    def checkpoint() -> None:
        _save_checkpoint(
            torch, unet, (optimizer, scaler), generator, rng, losses, step, work, settings
        )

    try:
        while step < total:
            pixels, sizes = _augmented(torch, images, rng, settings)
            batch_sizes = [sizes]
            if class_images:
                class_pixels, class_sizes = _augmented(torch, class_images, rng, settings)
                pixels = torch.cat([pixels, class_pixels])
                batch_sizes.append(class_sizes)
            pixels = pixels.to(device, vae.dtype)
            with torch.no_grad():
                latents = vae.encode(pixels).latent_dist.sample(generator=generator)
                latents = (latents * vae.config.scaling_factor).to(weight_dtype)
            noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
            count = scheduler.config.num_train_timesteps
            timesteps = torch.randint(0, count, (len(batch_sizes),), generator=generator)
            timesteps = timesteps.to(device)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            if scheduler.config.prediction_type == "v_prediction":
                target = scheduler.get_velocity(latents, noise, timesteps)
            else:
                target = noise
            conditions = None
            if sdxl:
                time_ids = torch.tensor(batch_sizes, dtype=embeddings.dtype, device=device)
                conditions = {"text_embeds": pooled, "time_ids": time_ids}
            with torch.autocast("cuda", dtype=weight_dtype, enabled=on_gpu):
                predicted = unet(noisy, timesteps, embeddings, added_cond_kwargs=conditions).sample
            if class_images:
                own, prior = predicted.float().chunk(2)
                own_target, prior_target = target.float().chunk(2)
                loss = torch.nn.functional.mse_loss(own, own_target)
                loss = loss + settings.prior_loss_weight * torch.nn.functional.mse_loss(
                    prior, prior_target
                )
            else:
                loss = torch.nn.functional.mse_loss(predicted.float(), target.float())
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(float(loss.detach()))
            if step % settings.checkpoint_every == 0 and step < total:
                checkpoint()
            if progress is not None:
                progress(TrainingProgress(step, total, losses[-1], f"step {step} of {total}"))
    except (GenerationCancelled, KeyboardInterrupt):
        checkpoint()  # a cancelled (or Ctrl-C'd) run continues from here when started again
        raise
    trained = TrainedLora(
        data=_lora_bytes(torch, pipeline_class, peft, unet),
        losses=tuple(losses),
        steps=total,
        resumed_from=start,
        device=device,
        dtype=str(weight_dtype).removeprefix("torch."),
        seconds=time.perf_counter() - started,
    )
    if keep is not None:
        try:
            keep(trained)
        except BaseException:
            if start < total:  # else the checkpoint there is this step's already
                checkpoint()  # the finished run, so that storing it is all a retry does
            raise
    (work / CHECKPOINT).unlink(missing_ok=True)
    return trained


def _weight_dtype(torch: Any, on_gpu: bool, precision: str | None) -> Any:
    """fp32 on the CPU; on CUDA the asked precision, else bf16 where the GPU has it."""
    if not on_gpu:
        return torch.float32
    if precision is None:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if precision not in dtypes:
        raise FieldError("precision", f"must be fp16, bf16 or fp32, got {precision!r}")
    return dtypes[precision]


def _encode_caption(
    torch: Any, pipe: Any, caption: str, device: str, sdxl: bool
) -> tuple[Any, Any]:
    """The caption's text-encoder states (and SDXL's pooled embedding), once: the text
    encoders are frozen and the caption does not change between steps."""
    if sdxl:
        with torch.no_grad():
            states, _, pooled, _ = pipe.encode_prompt(
                caption, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
        return states, pooled
    tokens = pipe.tokenizer(
        caption,
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)
    with torch.no_grad():
        return pipe.text_encoder(tokens)[0], None


def class_prompt_for(settings: TrainingSettings, caption: str) -> str:
    """Prior preservation's class prompt: the one asked for, else the caption without its
    trigger word (DreamBooth's "a sks dog" → "a dog"), else "a character"."""
    if settings.class_prompt.strip():
        return settings.class_prompt.strip()
    _, _, description = caption.partition(", ")
    return description.strip() or "a character"


def _class_images(
    torch: Any,
    pipe: Any,
    prompt: str,
    settings: TrainingSettings,
    work: Path,
    progress: Callable[[TrainingProgress], None] | None,
    model: str,
) -> list[Image.Image]:
    """Prior preservation's class images: ``settings.class_images`` pictures the base
    pipeline (``model``, its folder) draws from ``prompt`` (seeded by the run's seed and
    their index), kept as PNGs in ``work`` so a resumed run, or the next training with the
    same model and class settings, reads the same pixels instead of drawing them again.
    Reported as step 0 of the run."""
    folder = work / CLASS_FOLDER
    key = json.dumps(
        {
            "model": model,
            "prompt": prompt,
            "steps": settings.class_steps,
            "size": settings.resolution,
            "seed": settings.seed,
        },
        sort_keys=True,
    )
    marker = folder / "class.json"
    if folder.exists() and (not marker.is_file() or marker.read_text("utf-8") != key):
        shutil.rmtree(folder)  # drawn for other class settings
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(key, "utf-8")
    pipe.set_progress_bar_config(disable=True)
    size = settings.resolution
    images = []
    count = settings.class_images
    for index in range(count):
        path = folder / f"{index:04d}.png"
        if not path.is_file():
            generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + index)
            drawn = pipe(
                prompt,
                height=size,
                width=size,
                num_inference_steps=settings.class_steps,
                generator=generator,
            ).images[0]
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=".class-", suffix=".png")
            os.close(handle)
            drawn.save(temporary, format="PNG")
            os.replace(temporary, path)
        with Image.open(path) as stored:
            images.append(stored.convert("RGB"))
        if progress is not None:
            message = f"prior preservation: class image {index + 1} of {count}"
            progress(TrainingProgress(0, settings.steps, math.nan, message))
    return images


def _augmented(
    torch: Any, images: Sequence[Image.Image], rng: random.Random, settings: TrainingSettings
) -> tuple[Any, tuple[int, ...]]:
    """One training image, chosen and augmented with ``rng``, as a (1, 3, H, W) tensor in
    [-1, 1], and SDXL's size conditioning for it: the source's size, where the crop starts
    (in the resized image's pixels) and the size trained at, as diffusers' SDXL script
    gives its UNet (``original_size + crops_coords_top_left + target_size``)."""
    image = images[rng.randrange(len(images))].convert("RGB")
    side = min(image.size)
    crop = max(1, round(side * rng.uniform(_CROP_MIN, 1.0)))
    left = rng.randint(0, image.width - crop)
    top = rng.randint(0, image.height - crop)
    original = (image.height, image.width)
    image = image.crop((left, top, left + crop, top + crop))
    size = settings.resolution
    scale = size / crop
    sizes = (*original, round(top * scale), round(left * scale), size, size)
    image = image.resize((size, size), Image.Resampling.BICUBIC)
    if settings.flip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(1 + rng.uniform(-_JITTER, _JITTER))
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    pixels = pixels.view(size, size, 3).permute(2, 0, 1).float() / 127.5 - 1.0
    return pixels.unsqueeze(0), sizes


def _trainable_state(unet: Any) -> dict[str, Any]:
    return {
        name: p.detach().cpu().clone() for name, p in unet.named_parameters() if p.requires_grad
    }


def _save_checkpoint(
    torch: Any,
    unet: Any,
    optimisers: tuple[Any, Any],
    generator: Any,
    rng: random.Random,
    losses: list[float],
    step: int,
    work: Path,
    settings: TrainingSettings,
) -> None:
    state = {
        "fingerprint": settings.fingerprint(),
        "step": step,
        "adapter": _trainable_state(unet),
        "optimizer": optimisers[0].state_dict(),
        "scaler": optimisers[1].state_dict(),
        "generator": generator.get_state(),
        "rng": rng.getstate(),
        "losses": list(losses),
    }
    # Written beside and renamed: a run killed while saving keeps the previous checkpoint.
    handle, temporary = tempfile.mkstemp(dir=work, prefix=".checkpoint-", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(state, temporary)
        os.replace(temporary, work / CHECKPOINT)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _checkpoint(torch: Any, work: Path, settings: TrainingSettings) -> dict[str, Any] | None:
    """``work``'s checkpoint, checked against ``settings`` before any model loads; None
    without one."""
    path = work / CHECKPOINT
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != settings.fingerprint():
        raise InvalidInputError(
            f"{path} is the checkpoint of a run with other settings "
            f"({state.get('fingerprint')}); delete it to start over with {settings.fingerprint()}"
        )
    # At the last step: a finished run whose LoRA could not be stored (train_lora's keep).
    if state["step"] > settings.steps:
        raise InvalidInputError(f"{path} is already at step {state['step']} of {settings.steps}")
    return state


def checkpoint_step(work_dir: str | os.PathLike[str]) -> int | None:
    """The step ``work_dir``'s checkpoint reached; None without a readable one."""
    path = Path(work_dir) / CHECKPOINT
    if not path.is_file():
        return None
    torch = importlib.import_module("torch")
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError):
        return None


def _resume(
    torch: Any,
    unet: Any,
    optimisers: tuple[Any, Any],
    generator: Any,
    rng: random.Random,
    losses: list[float],
    state: dict[str, Any] | None,
) -> int:
    """Load a checkpoint into the run; the step it reached (0 without one)."""
    if state is None:
        return 0
    parameters = dict(unet.named_parameters())
    with torch.no_grad():
        for name, value in state["adapter"].items():
            parameters[name].copy_(value)
    optimisers[0].load_state_dict(state["optimizer"])
    if state.get("scaler"):
        optimisers[1].load_state_dict(state["scaler"])
    generator.set_state(state["generator"])
    rng.setstate(state["rng"])
    losses.extend(state["losses"])
    return int(state["step"])


def _lora_bytes(torch: Any, pipeline_class: Any, peft: Any, unet: Any) -> bytes:
    """The adapter as the ``.safetensors`` file ``pipe.load_lora_weights`` reads."""
    from diffusers.utils import convert_state_dict_to_diffusers

    layers = convert_state_dict_to_diffusers(peft.get_peft_model_state_dict(unet))
    layers = {
        name: value.detach().to("cpu", torch.float32).contiguous() for name, value in layers.items()
    }
    with tempfile.TemporaryDirectory(prefix="castbook-lora-") as folder:
        pipeline_class.save_lora_weights(
            save_directory=folder, unet_lora_layers=layers, safe_serialization=True
        )
        return (Path(folder) / "pytorch_lora_weights.safetensors").read_bytes()


def lora_state_dict(data: bytes) -> dict[str, Any]:
    """A stored LoRA's tensors, for ``pipe.load_lora_weights``."""
    from safetensors.torch import load

    return load(data)


# ----------------------------------------------------------------------------- a character


def training_settings(values: dict[str, Any]) -> TrainingSettings:
    """Settings from a job's stored input or a request body; unknown keys are refused."""
    known = {f for f in TrainingSettings.__dataclass_fields__}
    unknown = sorted(set(values) - known)
    if unknown:
        raise FieldError(
            unknown[0], f"is not a training setting (known: {', '.join(sorted(known))})"
        )
    try:
        return TrainingSettings(**values)
    except TypeError as exc:
        raise FieldError("training", str(exc)) from None


def check_character_training(
    library: CharacterLibrary, character: Character, preset: Preset, settings: TrainingSettings
) -> None:
    """:func:`check_training` for a character of the library (what the API and CLI ask
    before they queue or start anything)."""
    check_training(preset, settings, len(character.images), f"character {character.name!r}")


def character_work_dir(home: Path, character: Character, preset: Preset) -> Path:
    """Where the CLI keeps a character's checkpoint for one base model between runs."""
    base = hashlib.sha256(preset.model.encode()).hexdigest()[:12]
    return home / "training" / f"{character.id}-{base}"


def training_summary(
    character: Character, preset: Preset, lora: CharacterLora, trained: TrainedLora
) -> dict[str, Any]:
    """What a finished training reports (the task's result, ``castbook character train
    --json``)."""
    return {
        "character": character.name,
        "character_id": character.id,
        "preset": preset.id,
        "base_model": lora.base_model,
        "sha256": lora.sha256,
        "byte_size": lora.byte_size,
        "trigger": lora.trigger,
        "rank": lora.rank,
        "steps": lora.steps,
        "resolution": lora.resolution,
        "resumed_from": trained.resumed_from,
        "loss_first": lora.training["loss_first"],
        "loss_last": lora.training["loss_last"],
        "device": trained.device,
        "dtype": trained.dtype,
        "seconds": round(trained.seconds, 2),
    }


def _prior_record(settings: TrainingSettings, caption: str) -> dict[str, Any]:
    """What a LoRA's record keeps of prior preservation (nothing when it was off)."""
    if not settings.prior_preservation:
        return {}
    return {
        "prior_preservation": {
            "class_prompt": class_prompt_for(settings, caption),
            "class_images": settings.class_images,
            "class_steps": settings.class_steps,
            "prior_loss_weight": settings.prior_loss_weight,
        }
    }


def train_character(
    library: CharacterLibrary,
    character: Character,
    preset: Preset,
    settings: TrainingSettings,
    work_dir: Path,
    progress: Callable[[TrainingProgress], None] | None = None,
) -> tuple[CharacterLora, TrainedLora]:
    """Train ``character``'s LoRA for ``preset``'s base model and store it with the
    character (replacing its LoRA for that base model)."""
    from castbook.images import open_image
    from castbook.library import inject_characters

    check_character_training(library, character, preset, settings)
    # Flips only for a symmetric character: a flip moves a scar or a parting to the other side.
    settings = replace(settings, flip=settings.flip or "symmetric" in character.tags)
    images = [
        open_image(library.image_bytes(image), source=f"{character.name}'s reference {i + 1}")
        for i, image in enumerate(character.images)
    ]
    trigger = trigger_token(character.id)
    caption = caption_for(trigger, inject_characters("", [character]).prompt)
    model_dir = _model_folder(preset)
    family = str(preset.options.get("family", "sd15"))
    stored: list[CharacterLora] = []

    def keep(trained: TrainedLora) -> None:
        stored.append(_store(library, character, preset, settings, trained, trigger, caption))

    trained = train_lora(model_dir, images, caption, settings, work_dir, progress, family, keep)
    return stored[0], trained


def _store(
    library: CharacterLibrary,
    character: Character,
    preset: Preset,
    settings: TrainingSettings,
    trained: TrainedLora,
    trigger: str,
    caption: str,
) -> CharacterLora:
    from castbook.library.service import NewLora

    losses = trained.losses
    tail = max(1, len(losses) // 10)
    family = str(preset.options.get("family", "sd15"))
    return library.save_lora(
        character,
        NewLora(
            data=trained.data,
            base_model=preset.model,
            family=family,
            trigger=trigger,
            rank=settings.rank,
            steps=settings.steps,
            resolution=settings.resolution,
            training={
                "preset": preset.id,
                "caption": caption,
                "images": len(character.images),
                "learning_rate": settings.learning_rate,
                "seed": settings.seed,
                "flip": settings.flip,
                "device": trained.device,
                "dtype": trained.dtype,
                "loss_first": round(sum(losses[:tail]) / tail, 6),
                "loss_last": round(sum(losses[-tail:]) / tail, 6),
                **_prior_record(settings, caption),
            },
        ),
    )
