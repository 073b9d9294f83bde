"""The ``batch_render`` and ``story`` job kinds: Batch Render and Story Mode as tasks.

Both handlers share the generation handler's backends (models stay loaded between jobs of
every kind) and one scorer per process, made on first use. Every file a job makes is kept
as a blob and listed as one of the job's outputs; the job's result names those outputs by
id (sha256) next to the scores, seeds and attempts.

Job input (what the API stores; ids never pixels):

* ``batch_render``: ``{"characters": [names], "prompts": [...], "preset": id,
  "request": {other GenerationRequest fields}, "min_score": float | None,
  "max_attempts": int, "max_variants": int}``
* ``story``: ``{"story": <a story document, characters by library name>, "preset": id,
  "continuity": bool, "min_score": float | None, "max_attempts": int}``

Cancellation arrives through ``JobContext.progress``: between variants and re-rolls of a
batch, between the scenes of a story.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from castbook import __version__
from castbook.blobs import Blobs
from castbook.db import Database
from castbook.evaluation.shared import SharedScorer
from castbook.generation import Backend, Preset, load_presets
from castbook.generation.outputs import encode_png
from castbook.jobs import Job, JobContext, JobHandler, JobOutput
from castbook.library import CharacterLibrary
from castbook.settings import Settings
from castbook.tasks.generation import GenerationJobs

if TYPE_CHECKING:
    pass

__all__ = [
    "BATCH_RENDER",
    "STORY",
    "BatchRenderJobs",
    "StoryJobs",
    "render_handlers",
]

BATCH_RENDER = "batch_render"
STORY = "story"

# write_storyboard's names -> (output kind, media type), in the order they are listed.
_BOARD_FILES = {
    "png": ("image", "image/png"),
    "pdf": ("pdf", "application/pdf"),
    "html": ("html", "text/html"),
    "drift": ("image", "image/png"),
}


def render_handlers(
    generation: GenerationJobs, scorer: SharedScorer | None = None
) -> dict[str, JobHandler]:
    """The ``batch_render`` and ``story`` handlers, sharing ``generation``'s backends and
    one scorer; register them next to ``generation``."""
    scorer = scorer or SharedScorer()
    return {
        BATCH_RENDER: BatchRenderJobs(generation=generation, scorer=scorer),
        STORY: StoryJobs(generation=generation, scorer=scorer),
    }


class _RenderJobs:
    def __init__(
        self,
        settings: Settings | None = None,
        database: Database | None = None,
        blobs: Blobs | None = None,
        *,
        generation: GenerationJobs | None = None,
        scorer: SharedScorer | None = None,
    ) -> None:
        if generation is None:
            if settings is None or database is None or blobs is None:
                raise TypeError("give settings, database and blobs, or a GenerationJobs")
            generation = GenerationJobs(settings, database, blobs)
        self.generation = generation
        self.settings = generation.settings
        self.database = generation.database
        self.blobs = generation.blobs
        self.scorer = scorer or SharedScorer()

    def _preset(self, preset_id: str) -> tuple[Preset, Backend]:
        preset = load_presets(self.settings.home).get(preset_id)
        return preset, self.generation.backend(preset)

    def _library(self, job: Job) -> CharacterLibrary:
        return CharacterLibrary(self.database, self.blobs, owner=job.owner)

    def _keep(self, data: bytes) -> str:
        return self.blobs.put(data)[0]


class BatchRenderJobs(_RenderJobs):
    """``batch_render``: N prompt variants of the same characters, scored, the best marked.

    Outputs: each variant's PNG (with its parameters) in variant order, then the contact
    sheet. Result: ``{variants: [{index (1-based), prompt, final_prompt, negative_prompt,
    score, scores,
    seed, attempts, attempt_scores, passed, best, output}], best, rerolls, contact_sheet,
    …}``, ``output`` and ``contact_sheet`` being output ids.
    """

    def __call__(self, job: Job, context: JobContext) -> tuple[list[JobOutput], dict[str, Any]]:
        from castbook.render.batch import (
            DEFAULT_MAX_VARIANTS,
            BatchRender,
            render_batch,
            variant_parameters,
        )
        from castbook.render.storyboard import SheetItem, contact_sheet_png

        given = job.input
        spec = BatchRender(
            characters=tuple(given["characters"]),
            prompts=tuple(given["prompts"]),
            preset=given["preset"],
            request=dict(given.get("request") or {}),
            min_score=given.get("min_score"),
            max_attempts=given.get("max_attempts", 1),
            max_variants=given.get("max_variants", DEFAULT_MAX_VARIANTS),
        )
        spec.validate()
        total = len(spec.prompts)
        context.progress(0, total, "loading model")
        preset, backend = self._preset(spec.preset)
        result = render_batch(
            spec,
            library=self._library(job),
            preset=preset,
            backend=backend,
            scorer=self.scorer.get(),
            progress=context.progress,
        )
        context.progress(total, total, "contact sheet")
        outputs: list[JobOutput] = []
        variants: list[dict[str, Any]] = []
        sheet: list[SheetItem] = []
        described = variant_parameters(spec, preset, result)
        negatives = result.final_negative_prompts or (None,) * len(result.variants)
        for variant, final_prompt, negative, parameters in zip(
            result.variants, result.final_prompts, negatives, described, strict=True
        ):
            parameters.update(castbook_version=__version__, task=job.id)
            data = encode_png(variant.image, parameters)
            sha = self._keep(data)
            outputs.append(
                JobOutput(
                    sha, "image", "image/png", variant.image.width, variant.image.height,
                    variant.seed,
                )
            )  # fmt: skip
            sheet.append(SheetItem(data, variant.prompt, variant.score, variant.best,
                                   variant.attempts))  # fmt: skip
            variants.append(
                {
                    "index": variant.index + 1,
                    "prompt": variant.prompt,
                    "final_prompt": final_prompt,
                    "negative_prompt": negative,
                    "score": round(variant.score, 2),
                    "scores": _rounded(variant.scores),
                    "seed": variant.seed,
                    "attempts": variant.attempts,
                    "attempt_scores": list(variant.attempt_scores),
                    "passed": variant.passed,
                    "best": variant.best,
                    "output": sha,
                }
            )
        sheet_png = contact_sheet_png(sheet, title=", ".join(spec.characters))
        sheet_sha = self._keep(sheet_png)
        width, height = _size(sheet_png)
        outputs.append(JobOutput(sheet_sha, "image", "image/png", width, height))
        summary = {
            "preset": preset.id,
            "characters": list(spec.characters),
            "variants": variants,
            "best": result.best.index + 1,
            "rerolls": result.rerolls,
            "min_score": spec.min_score,
            "max_attempts": spec.max_attempts,
            "contact_sheet": sheet_sha,
            "batched": bool(getattr(result, "batched", False)),
        }
        return outputs, summary


class StoryJobs(_RenderJobs):
    """``story``: every scene rendered as a panel, then the storyboard files.

    Renders into a temporary folder (gone when the job ends) and keeps each panel PNG,
    ``storyboard.png``, ``storyboard.pdf``, ``storyboard.html`` and ``drift.png`` as
    outputs. Result: ``{title, characters, panels: [{scene, caption, prompt, negative_prompt,
    characters, scores, score, seed, attempts, output}], storyboard: {png, pdf, html, drift},
    weakest, rerolls, …}`` with output ids.
    """

    def __call__(self, job: Job, context: JobContext) -> tuple[list[JobOutput], dict[str, Any]]:
        from castbook.render._board import weakest_panels
        from castbook.render.story import STATE_FILE, Story, render_story

        given = job.input
        story = Story.model_validate(given["story"])
        min_score = given.get("min_score")
        max_attempts = given.get("max_attempts", 1)
        continuity = bool(given.get("continuity", False))
        total = len(story.scenes)
        context.progress(0, total, "loading model")
        preset, backend = self._preset(given["preset"])
        outputs: list[JobOutput] = []
        panels: list[dict[str, Any]] = []
        board_files: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="castbook-story-") as folder:
            rendered = render_story(
                story,
                folder,
                library=self._library(job),
                preset=preset,
                backend=backend,
                scorer=self.scorer.get(),
                continuity=continuity,
                min_score=min_score,
                max_attempts=max_attempts,
                progress=context.progress,
            )
            state = json.loads((Path(folder) / STATE_FILE).read_text(encoding="utf-8"))
            for panel in rendered.board.ordered_panels:
                data = rendered.files[f"scene-{panel.number:02d}"].read_bytes()
                sha = self._keep(data)
                width, height = _size(data)
                outputs.append(JobOutput(sha, "image", "image/png", width, height, panel.seed))
                scene = story.scenes[panel.number - 1]
                panels.append(
                    {
                        "scene": panel.number,
                        "caption": panel.caption,
                        "prompt": state["panels"][str(panel.number)]["prompt"],
                        # Panels rendered before it was kept have none.
                        "negative_prompt": state["panels"][str(panel.number)].get(
                            "negative_prompt"
                        ),
                        "characters": list(scene.characters),
                        "scores": _rounded(panel.scores),
                        "score": round(min(panel.scores.values()), 2) if panel.scores else None,
                        "seed": panel.seed,
                        "attempts": panel.attempts,
                        "output": sha,
                    }
                )
            for name, (kind, media_type) in _BOARD_FILES.items():
                data = rendered.files[name].read_bytes()
                sha = self._keep(data)
                width, height = _size(data) if kind == "image" else (0, 0)
                outputs.append(JobOutput(sha, kind, media_type, width, height))
                board_files[name] = sha
        summary = {
            "title": story.title,
            "characters": list(story.characters),
            "preset": preset.id,
            "continuity": continuity,
            "min_score": min_score,
            "max_attempts": max_attempts,
            "panels": panels,
            "storyboard": board_files,
            "weakest": {w.character: w.number for w in weakest_panels(rendered.board)},
            "rerolls": sum(p["attempts"] - 1 for p in panels),
        }
        return outputs, summary


def _rounded(scores: dict[str, float]) -> dict[str, float]:
    return {name: round(score, 2) for name, score in scores.items()}


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:  # reads the header only
        return image.size
