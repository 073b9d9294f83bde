"""The ``workflow`` job kind: a saved or posted graph, run by
:func:`castbook.workflow.run.run_workflow`.

Job input: ``{"graph": <graph JSON>, "workflow": saved workflow id or None, "cache": bool}``.
"""

from __future__ import annotations

from typing import Any

from castbook.evaluation.shared import SharedScorer
from castbook.jobs import Job, JobContext, JobOutput
from castbook.tasks.generation import GenerationJobs
from castbook.workflow.run import WorkflowServices, run_workflow

__all__ = ["WORKFLOW", "WorkflowJobs"]

WORKFLOW = "workflow"


class WorkflowJobs:
    """Handler for ``workflow`` jobs; shares the generation handler's backends and a scorer."""

    def __init__(self, generation: GenerationJobs, scorer: SharedScorer | None = None) -> None:
        self.services = WorkflowServices(
            settings=generation.settings,
            database=generation.database,
            blobs=generation.blobs,
            backends=generation.backends,
            scorer=scorer or SharedScorer(),
        )

    def __call__(self, job: Job, context: JobContext) -> tuple[list[JobOutput], dict[str, Any]]:
        return run_workflow(self.services, job, context)
