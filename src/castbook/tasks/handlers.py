"""The one table of job kinds every executor is given (the API's local executor and each
Celery worker): backends, models and the scorer are built once and shared by all kinds."""

from __future__ import annotations

from castbook.blobs import BlobStore
from castbook.db import Database
from castbook.jobs import JobHandler
from castbook.settings import Settings
from castbook.tasks.model_pull import MODEL_PULL, ModelPullJobs

__all__ = ["handlers"]


def handlers(settings: Settings, database: Database, blobs: BlobStore) -> dict[str, JobHandler]:
    """Generation, batch render, story, workflow and model-pull jobs."""
    from castbook.render.generation_job import GENERATION, GenerationJobs
    from castbook.render.render_jobs import SharedScorer, render_handlers
    from castbook.workflow.run import WORKFLOW, WorkflowJobs

    generation = GenerationJobs(settings, database, blobs)
    scorer = SharedScorer()
    return {
        GENERATION: generation,
        **render_handlers(generation, scorer),
        WORKFLOW: WorkflowJobs(generation, scorer),
        MODEL_PULL: ModelPullJobs(settings),
    }
