"""Generation: requests with the ranges users know, one small Backend protocol, presets.

Backends: ``diffusers`` (local SD 1.5 / SDXL / AnimateDiff / SVD with IP-Adapter),
``openai`` (an OpenAI-compatible images API) and ``comfyui`` (a user's ComfyUI server).
Each is imported only when a preset uses it.
"""

from castbook.generation.base import (
    Backend,
    GenerationResult,
    PreparedRequest,
    Progress,
    ProgressCallback,
    Video,
)
from castbook.generation.outputs import SavedOutput, read_parameters, save_result
from castbook.generation.prepare import (
    BackendPool,
    check_references,
    create_backend,
    mode_problem,
    prepare_request,
    preset_room_problem,
    preview_prompt,
    reference_room,
    references_problem,
    request_room_problem,
    resolve_request,
    run_generation,
)
from castbook.generation.presets import BUILTIN_PRESETS, Preset, PresetCatalog, load_presets
from castbook.generation.request import LIMITS, GenerationRequest, Mode, parse_request, within

__all__ = [
    "BUILTIN_PRESETS",
    "LIMITS",
    "Backend",
    "BackendPool",
    "GenerationRequest",
    "GenerationResult",
    "Mode",
    "PreparedRequest",
    "Preset",
    "PresetCatalog",
    "Progress",
    "ProgressCallback",
    "SavedOutput",
    "Video",
    "check_references",
    "create_backend",
    "load_presets",
    "mode_problem",
    "parse_request",
    "prepare_request",
    "preset_room_problem",
    "preview_prompt",
    "read_parameters",
    "reference_room",
    "references_problem",
    "request_room_problem",
    "resolve_request",
    "run_generation",
    "save_result",
    "within",
]
