"""The one table of job kinds every executor is given (the API's local executor and each
Celery worker): the backends (loaded models) and the scorer are made once and shared by all
kinds."""

from __future__ import annotations

from castbook.blobs import Blobs
from castbook.db import Database
from castbook.evaluation.shared import SharedScorer
from castbook.jobs import JobHandler
from castbook.settings import Settings
from castbook.tasks.generation import GENERATION, GenerationJobs
from castbook.tasks.lora_train import LORA_TRAIN, LoraTrainJobs
from castbook.tasks.model_pull import MODEL_PULL, ModelPullJobs
from castbook.tasks.render import render_handlers
from castbook.tasks.workflow import WORKFLOW, WorkflowJobs

__all__ = ["handlers"]


def handlers(settings: Settings, database: Database, blobs: Blobs) -> dict[str, JobHandler]:
    """Generation, batch render, story, workflow, model-pull and LoRA-training jobs."""
    generation = GenerationJobs(settings, database, blobs)
    scorer = SharedScorer()
    return {
        GENERATION: generation,
        **render_handlers(generation, scorer),
        WORKFLOW: WorkflowJobs(generation, scorer),
        MODEL_PULL: ModelPullJobs(settings),
        LORA_TRAIN: LoraTrainJobs(settings, database, blobs, generation.backends, scorer),
    }
