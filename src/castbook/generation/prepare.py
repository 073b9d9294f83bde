"""From a user's request to what a backend gets: preset defaults, injected characters,
decoded image inputs and a fixed seed; then running it with the checks every backend shares.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image

from castbook.blobs import is_blob_id
from castbook.errors import FieldError, GenerationError, ImageError, InvalidInputError
from castbook.generation.base import Backend, GenerationResult, PreparedRequest, ProgressCallback
from castbook.generation.presets import Preset
from castbook.generation.request import GenerationRequest, Mode, parse_request
from castbook.images import open_image, read_image_file

if TYPE_CHECKING:
    from castbook.library import Character, CharacterLibrary

__all__ = ["BackendPool", "apply_preset", "create_backend", "prepare_request", "run_generation"]


def apply_preset(request: GenerationRequest, preset: Preset) -> GenerationRequest:
    """The preset's defaults for every field the user did not set; checks the mode."""
    if not preset.supports(request.mode):
        modes = ", ".join(m.value for m in preset.modes)
        raise FieldError("mode", f"preset {preset.id!r} does {modes}, not {request.mode.value}")
    values = {**preset.defaults, **request.model_dump(exclude_unset=True)}
    return parse_request(values)


def prepare_request(
    request: GenerationRequest,
    preset: Preset,
    *,
    library: CharacterLibrary | None = None,
    options: dict[str, Any] | None = None,
) -> PreparedRequest:
    from castbook.library import inject_characters

    characters = _characters(request.characters, library)
    injected = inject_characters(request.prompt, characters, request.negative_prompt)
    references: list[Image.Image] = []
    for character in characters:
        primary = character.primary_image
        if primary is not None:
            assert library is not None
            data = library.image_bytes(primary)
            references.append(open_image(data, source=f"{character.name}'s reference"))
    references.extend(_load(ref, library, "references") for ref in request.references)
    init_image = None
    if request.init_image is not None:
        init_image = _load(request.init_image, library, "init_image")
    elif request.mode in (Mode.I2I, Mode.I2V):
        if not references:
            raise FieldError(
                "init_image",
                f"{request.mode.value} needs an image to start from: give an init image, "
                "a reference, or a character with a reference image",
            )
        init_image = references[0]
    if not injected.prompt and request.mode == Mode.T2I:
        raise FieldError("prompt", "is empty; describe the picture or choose a character")
    return PreparedRequest(
        request=request,
        prompt=injected.prompt,
        negative_prompt=injected.negative_prompt,
        seed=request.seed if request.seed is not None else secrets.randbelow(2**32),
        references=tuple(references),
        init_image=init_image,
        options={**preset.options, **(options or {})},
    )


def run_generation(
    backend: Backend, prepared: PreparedRequest, progress: ProgressCallback
) -> GenerationResult:
    """Refuse what the backend cannot take, run it, and check it returned what was asked."""
    count = len(prepared.references)
    if count > backend.max_references:
        characters = len(prepared.request.characters)
        raise FieldError(
            "references",
            f"the {backend.name} backend takes at most {backend.max_references} reference "
            f"image(s); this request has {count} ({characters} character(s) + "
            f"{len(prepared.request.references)} reference(s)); use fewer characters or a "
            "preset whose backend takes more",
        )
    result = backend.generate(prepared, progress)
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


def _load(ref: str, library: CharacterLibrary | None, field: str) -> Image.Image:
    if is_blob_id(ref) and library is not None and library.blobs.exists(ref):
        return open_image(library.blobs.get(ref), source=f"image {ref[:12]}")
    try:
        data = read_image_file(ref)
    except ImageError:
        raise
    except InvalidInputError as exc:
        raise FieldError(
            field, f"{ref!r} is neither a stored image id nor a readable file ({exc})"
        ) from None
    return open_image(data, source=ref)
