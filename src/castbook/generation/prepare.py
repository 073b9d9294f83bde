"""From a user's request to what a backend gets: preset defaults, injected characters,
decoded image inputs and a fixed seed; then running it with the checks every backend shares.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from castbook.blobs import is_blob_id
from castbook.errors import (
    CastbookError,
    FieldError,
    GenerationError,
    ImageError,
    InvalidInputError,
)
from castbook.generation.base import (
    Backend,
    GenerationResult,
    LoraUse,
    PreparedRequest,
    ProgressCallback,
)
from castbook.generation.presets import Preset
from castbook.generation.request import GenerationRequest, Mode, parse_request
from castbook.images import open_image, read_image_file

if TYPE_CHECKING:
    from castbook.library import Character, CharacterLibrary

__all__ = [
    "LORA_BACKENDS",
    "LORA_FAMILY_OF",
    "BackendPool",
    "FinalPrompt",
    "character_loras",
    "check_references",
    "create_backend",
    "final_prompt",
    "lora_base_model",
    "mode_problem",
    "prepare_request",
    "preset_room_problem",
    "preview_prompt",
    "reference_room",
    "references_problem",
    "request_room_problem",
    "resolve_request",
    "run_generation",
]


def resolve_request(values: Mapping[str, Any], preset: Preset) -> GenerationRequest:
    """The one check a request gets, when it is submitted: fields and ranges, the preset's
    modes, the preset's defaults for every field the user did not set, and something to draw
    for text-to-image. What it returns is stored and trusted: workers and backends do not
    check it again."""
    request = parse_request(dict(values))
    problem = mode_problem(preset, request.mode)
    if problem is not None:
        raise FieldError("mode", problem)
    if preset.defaults:
        request = parse_request({**preset.defaults, **request.model_dump(exclude_unset=True)})
    if request.mode == Mode.T2I and not request.prompt.strip() and not request.characters:
        raise FieldError("prompt", "is empty; describe the picture or choose a character")
    return request


def mode_problem(preset: Preset, mode: Mode) -> str | None:
    """Why ``preset`` cannot run ``mode``; None when it can. The one rule every entry point
    (requests, workflow nodes) asks."""
    if preset.supports(mode):
        return None
    modes = ", ".join(m.value for m in preset.modes)
    return f"preset {preset.id!r} does {modes}, not {mode.value}"


def reference_room(preset: Preset) -> int | None:
    """How many reference images the preset's backend takes; None when it cannot say before
    it runs (a missing dependency or model: the run itself reports that)."""
    try:
        return create_backend(preset).max_references
    except CastbookError:
        return None


def preset_room_problem(preset: Preset, characters: int, mode: Mode | None = None) -> str | None:
    """Why ``characters`` characters (one reference image each) do not fit the preset's
    backend in ``mode`` (an i2i init image takes a place where the backend counts it); None
    when they do or when it cannot tell yet (see :func:`reference_room`)."""
    found = _room(preset, mode)
    if found is None:
        return None
    room, who = found
    return references_problem(who, room, characters, characters, 0)


def request_room_problem(
    preset: Preset, request: GenerationRequest, pictured_characters: int
) -> str | None:
    """Why a resolved request's pictures do not fit the preset's backend: its
    ``pictured_characters`` (characters with a reference image) and extra references, and,
    for a backend whose cap counts it (``init_image_counts``: Gemini's images per request),
    the i2i init image. None when they fit or when it cannot tell yet. Asked at submission,
    so what the backend would refuse before any call is a 422, not a failed task."""
    found = _room(preset, request.mode)
    if found is None:
        return None
    room, who = found
    count = pictured_characters + len(request.references)
    return references_problem(who, room, count, pictured_characters, len(request.references))


def _room(preset: Preset, mode: Mode | None) -> tuple[int, str] | None:
    """How many reference images the preset's backend takes in ``mode``, and who says so;
    None when it cannot tell before it runs."""
    try:
        backend = create_backend(preset)
    except CastbookError:
        return None
    room = backend.max_references
    who = f"preset {preset.id!r}"
    if mode is Mode.I2I and getattr(backend, "init_image_counts", False):
        room -= 1
        who += f" (with the init image: {backend.max_references} images per request)"
    return max(room, 0), who


def references_problem(who: str, room: int, count: int, characters: int, extra: int) -> str | None:
    """Why ``count`` reference images (from ``characters`` characters and ``extra`` extra
    references) do not fit ``who`` (a preset or backend taking ``room``); None when they do.
    The one rule submissions (one image per character) and run_generation use."""
    if count <= room:
        return None
    return (
        f"{who} takes at most {room} reference image(s); this request has {count} "
        f"({characters} character(s) + {extra} reference(s)); use fewer characters or a "
        "preset whose backend takes more"
    )


def prepare_request(
    request: GenerationRequest,
    preset: Preset,
    *,
    library: CharacterLibrary | None = None,
    options: dict[str, Any] | None = None,
    apply_loras: bool = True,
) -> PreparedRequest:
    """The request made ready for a backend: the characters injected, their references
    loaded, their LoRAs looked up. ``apply_loras=False`` prepares it as if no character had
    a LoRA (no adapter, no trigger word): the "before" of a LoRA's consistency report."""
    characters = _characters(request.characters, library)
    sent = final_prompt(request, preset, characters, library, apply_loras=apply_loras)
    references: list[Image.Image] = []
    ids: list[str] = []
    stored: list[bytes] = []
    for character in characters:
        primary = character.primary_image
        if primary is not None:
            assert library is not None
            data = library.image_bytes(primary)
            references.append(open_image(data, source=f"{character.name}'s reference"))
            ids.append(primary.sha256)
            stored.append(data)
    for ref in request.references:
        image, sha256, data = _load(ref, library, "references")
        references.append(image)
        ids.append(sha256)
        stored.append(data)
    init_image = None
    if request.init_image is not None:
        init_image, _, _ = _load(request.init_image, library, "init_image")
    elif request.mode in (Mode.I2I, Mode.I2V):
        if not references:
            raise FieldError(
                "init_image",
                f"{request.mode.value} needs an image to start from: give an init image, "
                "a reference, or a character with a reference image",
            )
        init_image = references[0]
    if not sent.prompt and request.mode == Mode.T2I:
        raise FieldError("prompt", "is empty; describe the picture or choose a character")
    return PreparedRequest(
        request=request,
        prompt=sent.prompt,
        negative_prompt=sent.negative_prompt,
        seed=request.seed if request.seed is not None else secrets.randbelow(2**32),
        references=tuple(references),
        init_image=init_image,
        options={**preset.options, **(options or {})},
        reference_ids=tuple(ids),
        reference_data=tuple(stored),
        loras=tuple(sent.loras),
        lora_notes=tuple(sent.lora_notes),
    )


@dataclass(frozen=True)
class FinalPrompt:
    """What the model is given as text: the prompt after the characters' style prompts,
    traits and LoRA triggers, and the negative prompt with theirs; the LoRAs applied and a
    note for each that is not."""

    prompt: str
    negative_prompt: str
    loras: tuple[LoraUse, ...]
    lora_notes: tuple[str, ...]


def final_prompt(
    request: GenerationRequest,
    preset: Preset,
    characters: Sequence[Character],
    library: CharacterLibrary | None,
    *,
    apply_loras: bool = True,
) -> FinalPrompt:
    """The one injection step: :func:`prepare_request` (every generation) and the prompt
    preview (``POST /v1/prompt/preview``, before a run) both call it, so what the preview
    shows is what the model gets. ``apply_loras=False``: as if no character had a LoRA."""
    from castbook.library import inject_characters

    injected = inject_characters(request.prompt, characters, request.negative_prompt)
    loras, lora_notes = (
        character_loras(characters, preset, library, request.lora_weight)
        if apply_loras
        else ([], [])
    )
    triggers = [lora.trigger for lora in loras if lora.trigger not in injected.prompt]
    return FinalPrompt(
        prompt=", ".join(part for part in (*triggers, injected.prompt) if part),
        negative_prompt=injected.negative_prompt,
        loras=tuple(loras),
        lora_notes=tuple(lora_notes),
    )


def preview_prompt(
    request: GenerationRequest, preset: Preset, library: CharacterLibrary | None
) -> FinalPrompt:
    """What :func:`prepare_request` would send for ``request`` as text, without decoding an
    image or loading a model."""
    return final_prompt(request, preset, _characters(request.characters, library), library)


# Backends that apply character LoRAs (OpenAI-compatible and Gemini models take none).
LORA_BACKENDS = ("diffusers", "comfyui")
# A preset family → the family of the LoRAs it loads, where they differ.
LORA_FAMILY_OF = {"animatediff": "sd15"}


def lora_base_model(preset: Preset) -> str | None:
    """The base model a preset's LoRAs must have been trained on: a diffusers preset's
    ``model``; a ComfyUI preset's ``base_model`` option (its checkpoint is a file name on
    the server, so the preset says which model it is); None where it does not say."""
    if preset.backend == "comfyui":
        base = preset.options.get("base_model")
        return str(base) if base else None
    return preset.model


def character_loras(
    characters: Sequence[Character],
    preset: Preset,
    library: CharacterLibrary | None,
    weight: float | None = None,
) -> tuple[list[LoraUse], list[str]]:
    """The characters' LoRAs that ``preset`` applies, and a note for each it does not: a
    LoRA belongs to the base model it was trained on, and only the diffusers and ComfyUI
    backends load LoRAs. ``weight`` (the request's) beats each character's own."""
    uses: list[LoraUse] = []
    notes: list[str] = []
    if library is None:
        return uses, notes
    family = str(preset.options.get("family", "sd15"))
    # AnimateDiff runs an SD 1.5 model's own UNet (with motion modules beside its blocks), so
    # the LoRAs trained on that SD 1.5 model apply to it as they are.
    lora_family = LORA_FAMILY_OF.get(family, family)
    base = lora_base_model(preset)
    for character in characters:
        loras = library.loras(character)
        if not loras:
            continue
        if preset.backend not in LORA_BACKENDS:
            notes.append(
                f"{character.name}'s LoRA not applied: not applicable to the {preset.backend} "
                f"backend (preset {preset.id!r}); only local diffusers presets and ComfyUI "
                "load LoRAs"
            )
            continue
        if preset.backend == "comfyui" and not preset.options.get("lora_dir"):
            notes.append(
                f"{character.name}'s LoRA not applied: ComfyUI preset {preset.id!r} has no "
                "lora_dir option (ComfyUI has no upload route for model files: castbook "
                "writes the LoRA into the folder ComfyUI reads LoRAs from; docs/training.md)"
            )
            continue
        if base is None:
            notes.append(
                f"{character.name}'s LoRA not applied: ComfyUI preset {preset.id!r} does not "
                "say which base model its checkpoint is (set its base_model option, e.g. "
                "stable-diffusion-v1-5/stable-diffusion-v1-5)"
            )
            continue
        lora = next((x for x in loras if x.base_model == base and x.family == lora_family), None)
        if lora is None:
            bases = ", ".join(f"{x.base_model} ({x.family})" for x in loras)
            notes.append(
                f"{character.name}'s LoRA not applied: it was trained on {bases}; preset "
                f"{preset.id!r} runs {base} ({family})"
            )
            continue
        uses.append(
            LoraUse(
                character=character.name,
                sha256=lora.sha256,
                path=str(library.blobs.local_path(lora.sha256)),
                weight=lora.weight if weight is None else weight,
                trigger=lora.trigger,
                base_model=lora.base_model,
            )
        )
    return uses, notes


def check_references(backend: Backend, prepared: PreparedRequest) -> None:
    """Refuse more reference images than ``backend`` takes (before any model is loaded)."""
    problem = references_problem(
        f"the {backend.name} backend",
        backend.max_references,
        len(prepared.references),
        len(prepared.request.characters),
        len(prepared.request.references),
    )
    if problem is not None:
        raise FieldError("references", problem)


def run_generation(
    backend: Backend, prepared: PreparedRequest, progress: ProgressCallback
) -> GenerationResult:
    """Refuse what the backend cannot take, run it, and check it returned what was asked."""
    check_references(backend, prepared)
    result = backend.generate(prepared, progress)
    if prepared.lora_notes:
        result.metadata.setdefault("lora_notes", list(prepared.lora_notes))
    wanted = prepared.request.batch
    produced = len(result.videos) if prepared.mode == Mode.I2V else len(result.images)
    if produced != wanted:
        raise GenerationError(
            f"{backend.name} returned {produced} outputs; {wanted} were asked for"
        )
    return result


def create_backend(preset: Preset, **kwargs: Any) -> Backend:
    """A new backend for ``preset`` (callers keep it: backends hold loaded models)."""
    if preset.backend == "diffusers":
        from castbook.generation.diffusers_backend import DiffusersBackend

        return DiffusersBackend(preset, **kwargs)
    if preset.backend == "openai":
        from castbook.generation.openai_backend import OpenAIImagesBackend

        return OpenAIImagesBackend(preset, **kwargs)
    if preset.backend == "gemini":
        from castbook.generation.gemini_backend import GeminiImagesBackend

        return GeminiImagesBackend(preset, **kwargs)
    if preset.backend == "comfyui":
        from castbook.generation.comfyui_backend import ComfyUIBackend

        return ComfyUIBackend(preset, **kwargs)
    raise FieldError("backend", f"unknown backend {preset.backend!r}")


class BackendPool:
    """Backends kept between jobs (they hold loaded models), one per preset.

    Keyed by the whole preset, so an edited presets.toml gets a fresh backend. Every job kind
    of a process shares one pool: a model loaded for a generation serves the next batch
    render or workflow node too.
    """

    def __init__(self) -> None:
        self._backends: dict[str, Backend] = {}
        self._lock = threading.Lock()

    def get(self, preset: Preset) -> Backend:
        key = repr(preset)
        with self._lock:
            if key not in self._backends:
                self._backends[key] = create_backend(preset)
            return self._backends[key]


def _characters(names: Sequence[str], library: CharacterLibrary | None) -> list[Character]:
    if not names:
        return []
    if library is None:
        raise FieldError("characters", "characters need a library to be looked up in")
    seen: dict[str, Character] = {}
    for name in names:
        character = library.get(name)
        seen.setdefault(character.id, character)
    return list(seen.values())


def _load(ref: str, library: CharacterLibrary | None, field: str) -> tuple[Image.Image, str, bytes]:
    """The image ``ref`` names (a stored image id or a file), its id (the sha256 of its
    bytes, which for a stored image is its name) and those bytes."""
    if is_blob_id(ref):
        # A stored image's id, never a file path, whatever the server's folders hold.
        if library is None or not library.blobs.exists(ref):
            raise FieldError(field, f"the stored image {ref[:12]}… is not in this library")
        data = library.blobs.get(ref)
        return open_image(data, source=f"image {ref[:12]}"), ref, data
    try:
        data = read_image_file(ref)
    except ImageError:
        raise
    except InvalidInputError as exc:
        raise FieldError(
            field, f"{ref!r} is neither a stored image id nor a readable file ({exc})"
        ) from None
    return open_image(data, source=ref), hashlib.sha256(data).hexdigest(), data
