"""Job kinds: what a queued task does when a worker runs it.

Every kind is a handler ``(job, context) -> (outputs, result)``; :func:`handlers` is the one
table of kinds that every executor is given (the API's local executor, each Celery worker).

- ``generation`` (:mod:`~castbook.tasks.generation`): one GenerationRequest
- ``batch_render``, ``story`` (:mod:`~castbook.tasks.render`): Batch Render, Story Mode
- ``workflow`` (:mod:`~castbook.tasks.workflow`): a node graph
- ``model_pull`` (:mod:`~castbook.tasks.model_pull`): download a preset's models
- ``lora_train`` (:mod:`~castbook.tasks.lora_train`): train a character's LoRA

Adding a kind: a handler module here, one line in :func:`handlers`, and the route or command
that creates its jobs.
"""

from castbook.tasks.generation import GENERATION, GenerationJobs, generation_job_input
from castbook.tasks.handlers import handlers
from castbook.tasks.lora_train import LORA_TRAIN, LoraTrainJobs, lora_train_job_input
from castbook.tasks.model_pull import MODEL_PULL, ModelPullJobs, model_pull_job_input
from castbook.tasks.render import BATCH_RENDER, STORY, BatchRenderJobs, StoryJobs, render_handlers
from castbook.tasks.workflow import WORKFLOW, WorkflowJobs

__all__ = [
    "BATCH_RENDER",
    "GENERATION",
    "LORA_TRAIN",
    "MODEL_PULL",
    "STORY",
    "WORKFLOW",
    "BatchRenderJobs",
    "GenerationJobs",
    "LoraTrainJobs",
    "ModelPullJobs",
    "StoryJobs",
    "WorkflowJobs",
    "generation_job_input",
    "handlers",
    "lora_train_job_input",
    "model_pull_job_input",
    "render_handlers",
]
