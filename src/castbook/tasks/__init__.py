"""Job kinds: what a queued task does when a worker runs it.

:func:`castbook.tasks.handlers.handlers` is the one table of kinds that every executor is
given. The model pull (:mod:`castbook.tasks.model_pull`) lives here; the generation, batch
render, story and workflow kinds still live in ``render`` and ``workflow`` until they move.
"""

from castbook.tasks.model_pull import MODEL_PULL, ModelPullJobs, model_pull_job_input

__all__ = ["MODEL_PULL", "ModelPullJobs", "model_pull_job_input"]
