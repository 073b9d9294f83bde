"""The ``lora_train`` job kind: train a character's LoRA, store it with the character, and
report what it changed.

Progress counts the training steps (the running loss in the message; with prior
preservation, step 0 first names each class image being drawn), then the consistency
report's renders (``report_prompts`` prompts without and with the LoRA; 0 skips the
report); cancelling stops at the next step or render. A cancel or a failure during the
report keeps the LoRA (it is stored when training ends) and the training's result.

The checkpoint lives in ``$CASTBOOK_HOME/training/<task id>``, so a task a killed server
left running is re-queued on restart and continues from its last checkpoint instead of
step 0; the folder goes when the task ends (succeeded, failed or cancelled: a
cancelled task is not resumed, a new one starts over).
"""

from __future__ import annotations

import shutil
from typing import Any

from castbook.blobs import Blobs
from castbook.db import Database
from castbook.errors import CastbookError, GenerationCancelled
from castbook.evaluation.shared import SharedScorer
from castbook.generation import BackendPool, Preset, load_presets
from castbook.generation.lora_train import (
    TrainingProgress,
    TrainingSettings,
    check_character_training,
    train_character,
    training_settings,
    training_summary,
)
from castbook.jobs import Job, JobContext, JobOutput, PartialResults, StoppedWithResults
from castbook.library import Character, CharacterLibrary
from castbook.render.lora_report import lora_report
from castbook.settings import Settings
from castbook.tasks.render import _size

__all__ = ["LORA_TRAIN", "LoraTrainJobs", "lora_train_job_input"]

LORA_TRAIN = "lora_train"


def lora_train_job_input(
    character: Character, preset_id: str, settings: TrainingSettings
) -> dict[str, Any]:
    """What a training job row stores: the character's id, the preset and the settings."""
    names = ("steps", "rank", "resolution", "learning_rate", "seed", "flip", "checkpoint_every",
             "report_prompts", "prior_preservation", "class_prompt", "class_images",
             "class_steps", "prior_loss_weight")  # fmt: skip
    values = {name: getattr(settings, name) for name in names}
    return {"character": character.id, "preset": preset_id, "settings": values}


class LoraTrainJobs:
    """Handler for LoRA training; reads presets.toml of ``settings.home`` for each job. The
    report renders with the process's shared backends and scores with its shared scorer."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        blobs: Blobs,
        backends: BackendPool | None = None,
        scorer: SharedScorer | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.blobs = blobs
        self.backends = backends if backends is not None else BackendPool()
        self.scorer = scorer or SharedScorer()

    def __call__(self, job: Job, context: JobContext) -> tuple[list[JobOutput], dict[str, Any]]:
        library = CharacterLibrary(self.database, self.blobs, owner=job.owner)
        character = library.get_by_id(job.input["character"])
        preset = load_presets(self.settings.home).get(job.input["preset"])
        settings = training_settings(dict(job.input["settings"]))
        check_character_training(library, character, preset, settings)
        work_dir = self.settings.home / "training" / job.id
        total = settings.steps + 2 * settings.report_prompts
        context.progress(0, total, "loading the base model")

        def progress(event: TrainingProgress) -> None:
            # Step 0: prior preservation's class images, drawn before the first step.
            loss = f", loss {event.loss:.4f}" if event.step else ""
            context.progress(event.step, total, f"{event.message}{loss}")

        try:
            lora, trained = train_character(
                library, character, preset, settings, work_dir, progress
            )
        except Exception:
            # Cancelled or failed ends the task for good: its checkpoint would never be read.
            # (A killed process raises nothing here; its re-queued task resumes.)
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        shutil.rmtree(work_dir, ignore_errors=True)
        summary = training_summary(character, preset, lora, trained)
        if not settings.report_prompts:
            return [], summary
        return self._report(job, context, library, character, preset, settings, summary)

    def _report(
        self,
        job: Job,
        context: JobContext,
        library: CharacterLibrary,
        character: Character,
        preset: Preset,
        settings: TrainingSettings,
        summary: dict[str, Any],
    ) -> tuple[list[JobOutput], dict[str, Any]]:
        """The consistency report: each render and the sheet kept as outputs, the figures
        in the result. The LoRA is stored already, so a cancel keeps the training's result
        and a failure of the report is said in it rather than failing the task."""
        steps = settings.steps

        def progress(done: int, total: int, message: str) -> None:
            context.progress(steps + done, steps + total, message)

        try:
            report = lora_report(
                library,
                character,
                preset,
                self.backends.get(preset),
                self.scorer.get(),
                settings.report_prompts,
                progress,
            )
        except GenerationCancelled as exc:
            raise StoppedWithResults(exc, PartialResults([], summary)) from exc
        except CastbookError as exc:
            return [], {**summary, "consistency": {"error": str(exc)}}
        outputs: list[JobOutput] = []
        renders = []
        for render in report.renders:
            sha = self.blobs.put(render.png)[0]
            outputs.append(
                JobOutput(sha, "image", "image/png", render.width, render.height, render.seed)
            )
            renders.append(
                {
                    "prompt": render.prompt,
                    "seed": render.seed,
                    "lora": render.with_lora,
                    "score": render.score,
                    "output": sha,
                }
            )
        sheet = self.blobs.put(report.sheet)[0]
        width, height = _size(report.sheet)
        outputs.append(JobOutput(sheet, "image", "image/png", width, height))
        consistency = {**report.figures(), "renders": renders, "sheet": sheet}
        return outputs, {**summary, "consistency": consistency}
