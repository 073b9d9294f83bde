"""A trained LoRA's consistency report: the same prompts and seeds rendered without and with
the adapter, each picture scored against the character's references with the Consistency
Eval that Batch Render uses, and a before/after sheet.

What a kohya_ss user does by eye with a handful of sample prompts, measured: the mean and
the worst score without and with the LoRA, and the gain of each. The prompts vary framing
and setting (a LoRA that only copies its training crops does well on the portrait and badly
on the rest); the seeds are fixed, so a report can be compared with the next training's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from castbook.errors import FieldError
from castbook.evaluation import Scorer
from castbook.generation import (
    Backend,
    Preset,
    prepare_request,
    resolve_request,
    run_generation,
)
from castbook.generation.base import Progress
from castbook.generation.lora_train import LIMITS
from castbook.generation.outputs import encode_png, generation_parameters
from castbook.library import Character, CharacterLibrary
from castbook.render.batch import score_characters
from castbook.render.contact_sheet import SheetItem, contact_sheet_png
from castbook.render.references import character_reference_features

__all__ = [
    "MAX_REPORT_PROMPTS",
    "REPORT_PROMPTS",
    "LoraReport",
    "ReportRender",
    "lora_report",
]

# Framings and settings a character must survive; the first ones go first when fewer are
# asked for. Each prompt has its own fixed seed (REPORT_SEED + its index).
REPORT_PROMPTS = (
    "portrait, looking at the viewer",
    "full body, standing in a park",
    "three-quarter view, smiling, in a café",
    "profile, at night on a city street",
    "sitting at a desk, reading a book",
    "walking on a beach at sunset",
    "close-up, surprised expression",
    "running in the rain",
)
MAX_REPORT_PROMPTS = LIMITS["report_prompts"][1]
REPORT_SEED = 1900


@dataclass(frozen=True)
class ReportRender:
    """One picture of the report: the prompt, its seed, whether the LoRA was on, its score
    (0–100) and the PNG."""

    prompt: str
    seed: int
    with_lora: bool
    score: float
    png: bytes
    width: int
    height: int


@dataclass(frozen=True)
class LoraReport:
    renders: tuple[ReportRender, ...]  # without, with; prompt by prompt
    sheet: bytes  # PNG: the "without" row over the "with" row
    references: bool  # whether the renders had the reference image (the preset's IP-Adapter)

    def scores(self, with_lora: bool) -> list[float]:
        return [r.score for r in self.renders if r.with_lora == with_lora]

    def figures(self) -> dict[str, Any]:
        """Mean and worst score without and with the LoRA, the gain of each, and whether
        the renders had the character's reference image."""
        without, with_ = self.scores(False), self.scores(True)
        figures: dict[str, Any] = {
            "without": {"mean": _mean(without), "worst": min(without)},
            "with": {"mean": _mean(with_), "worst": min(with_)},
        }
        figures["gain"] = {
            key: round(figures["with"][key] - figures["without"][key], 2)
            for key in ("mean", "worst")
        }
        figures["references"] = self.references
        return figures


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 2)


def lora_report(
    library: CharacterLibrary,
    character: Character,
    preset: Preset,
    backend: Backend,
    scorer: Scorer,
    count: int,
    progress: Callable[[int, int, str], None] | None = None,
) -> LoraReport:
    """Render the first ``count`` report prompts with ``character`` without and with its
    LoRA for ``preset`` (the one just trained), score each, and lay out the sheet.

    ``progress(done, total, message)`` is called before each render, so a cancelled job
    stops there.
    """
    if not 1 <= count <= MAX_REPORT_PROMPTS:
        raise FieldError(
            "report_prompts", f"must be between 1 and {MAX_REPORT_PROMPTS}, got {count}"
        )
    report = progress or (lambda done, total, message: None)
    references = {character.name: character_reference_features(library, scorer, character)}
    total = 2 * count
    renders: list[ReportRender] = []
    references_used = True
    for index, prompt in enumerate(REPORT_PROMPTS[:count]):
        seed = REPORT_SEED + index
        request = resolve_request(
            {"prompt": prompt, "characters": [character.name], "seed": seed}, preset
        )
        for with_lora in (False, True):
            state = "with" if with_lora else "without"
            report(len(renders), total, f"consistency report: {prompt!r} {state} the LoRA")
            prepared = prepare_request(request, preset, library=library, apply_loras=with_lora)
            if len(prepared.references) > backend.max_references:
                # A preset without reference conditioning (no IP-Adapter): the LoRA alone
                # carries the character, in both renders alike.
                prepared = replace(prepared, references=(), reference_ids=(), reference_data=())
                references_used = False
            if with_lora and not prepared.loras:
                raise FieldError(
                    "preset",
                    f"{character.name} has no LoRA that preset {preset.id!r} applies; "
                    "train one first",
                )
            result = run_generation(backend, prepared, _quiet)
            image = result.images[0]
            score = score_characters(scorer, references, [character], image)[character.name]
            renders.append(
                ReportRender(
                    prompt=prompt,
                    seed=seed,
                    with_lora=with_lora,
                    score=round(score, 2),
                    png=encode_png(image, generation_parameters(prepared, result, 0)),
                    width=image.width,
                    height=image.height,
                )
            )
    report(total, total, "consistency report: the sheet")
    return LoraReport(tuple(renders), _sheet(character, renders, count), references_used)


def _quiet(_: Progress) -> None:
    return None


def _sheet(character: Character, renders: list[ReportRender], count: int) -> bytes:
    """Two rows, the prompts as columns: without the LoRA on top, with it below."""
    ordered = [r for r in renders if not r.with_lora] + [r for r in renders if r.with_lora]
    items = [
        SheetItem(r.png, f"{'with' if r.with_lora else 'without'} LoRA: {r.prompt}", r.score)
        for r in ordered
    ]
    # The captions say which row is which: a title wide enough for it would not fit one column.
    return contact_sheet_png(items, title=character.name, tile=256, columns=count)
