"""The ``lora_train`` job kind: train a character's LoRA and store it with the character.

Progress is the training step, with the running loss in the message; cancelling stops at
the next step. The checkpoint lives in ``$CASTBOOK_HOME/training/<task id>``, so a task a
killed server left running is re-queued on restart and continues from its last checkpoint
instead of step 0; the folder goes when the task ends (succeeded, failed or cancelled: a
cancelled task is not resumed, a new one starts over).
"""

from __future__ import annotations

import shutil
from typing import Any

from castbook.blobs import Blobs
from castbook.db import Database
from castbook.generation import load_presets
from castbook.generation.lora_train import (
    TrainingProgress,
    TrainingSettings,
    check_character_training,
    train_character,
    training_settings,
    training_summary,
)
from castbook.jobs import Job, JobContext, JobOutput
from castbook.library import Character, CharacterLibrary
from castbook.settings import Settings

__all__ = ["LORA_TRAIN", "LoraTrainJobs", "lora_train_job_input"]

LORA_TRAIN = "lora_train"


def lora_train_job_input(
    character: Character, preset_id: str, settings: TrainingSettings
) -> dict[str, Any]:
    """What a training job row stores: the character's id, the preset and the settings."""
    values = {
        name: getattr(settings, name)
        for name in ("steps", "rank", "resolution", "learning_rate", "seed", "flip")
    }
    return {"character": character.id, "preset": preset_id, "settings": values}


class LoraTrainJobs:
    """Handler for LoRA training; reads presets.toml of ``settings.home`` for each job."""

    def __init__(self, settings: Settings, database: Database, blobs: Blobs) -> None:
        self.settings = settings
        self.database = database
        self.blobs = blobs

    def __call__(self, job: Job, context: JobContext) -> tuple[list[JobOutput], dict[str, Any]]:
        library = CharacterLibrary(self.database, self.blobs, owner=job.owner)
        character = library.get_by_id(job.input["character"])
        preset = load_presets(self.settings.home).get(job.input["preset"])
        settings = training_settings(dict(job.input["settings"]))
        check_character_training(library, character, preset, settings)
        work_dir = self.settings.home / "training" / job.id
        context.progress(0, settings.steps, "loading the base model")

        def progress(event: TrainingProgress) -> None:
            context.progress(event.step, event.total, f"{event.message}, loss {event.loss:.4f}")

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
        return [], training_summary(character, preset, lora, trained)
