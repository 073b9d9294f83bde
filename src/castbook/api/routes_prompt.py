"""``POST /v1/prompt/preview``: the prompt a generation would send, before it runs.

The same injection step every generation takes
(:func:`castbook.generation.preview_prompt`, the one :func:`prepare_request` calls): the
characters' style prompts, traits, negative prompts and LoRA triggers added to what was
typed. Nothing is generated, queued or stored; no image is decoded and no model loaded.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from castbook.api.auth import CurrentOwner
from castbook.api.services import AppServices
from castbook.api.submission import character_names, choose_preset
from castbook.errors import FieldError
from castbook.generation import Mode, preview_prompt, resolve_request

__all__ = ["router"]

router = APIRouter(prefix="/prompt", tags=["generation"])


class PreviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(default="", description="What was typed (a generation's prompt).")
    prompts: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="Several prompts (a batch render's variants): one preview each.",
    )
    negative_prompt: str | None = None
    characters: list[str] = Field(
        default_factory=list, max_length=16, description="Character ids or names."
    )
    preset: str | None = Field(default=None, description="Preset id; default: by mode.")
    mode: Mode = Mode.T2I


@router.post("/preview", summary="The prompt and negative prompt a generation would send")
def preview(owner: CurrentOwner, services: AppServices, body: PreviewBody) -> dict[str, Any]:
    """``{prompt, negative_prompt, characters, preset, lora_notes, variants}``; with
    ``prompts``, ``variants`` has one ``{prompt, negative_prompt}`` per prompt and the top
    level is the first's."""
    library = services.library(owner)
    names = character_names(services, owner, list(body.characters))
    preset = choose_preset(services, body.preset, body.mode)
    values: dict[str, Any] = {"mode": body.mode, "characters": list(dict.fromkeys(names))}
    if body.negative_prompt is not None:
        values["negative_prompt"] = body.negative_prompt
    variants = []
    for index, typed in enumerate(body.prompts or [body.prompt]):
        if not typed.strip() and not names and body.mode is Mode.T2I:
            variants.append({"prompt": "", "negative_prompt": body.negative_prompt or ""})
            continue
        try:
            request = resolve_request({**values, "prompt": typed}, preset)
        except FieldError as exc:
            field = f"prompts.{index}" if body.prompts and exc.field == "prompt" else exc.field
            raise FieldError(field, str(exc)) from None
        sent = preview_prompt(request, preset, library)
        variants.append(
            {
                "prompt": sent.prompt,
                "negative_prompt": sent.negative_prompt,
                "lora_notes": list(sent.lora_notes),
            }
        )
    first = variants[0]
    return {
        "prompt": first["prompt"],
        "negative_prompt": first["negative_prompt"],
        "characters": values["characters"],
        "preset": preset.id,
        "lora_notes": first.get("lora_notes", []),
        "variants": variants,
    }
