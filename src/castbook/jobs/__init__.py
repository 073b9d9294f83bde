"""Jobs: every piece of work as a database row with status, progress, results and errors.

Executors run them: ``LocalExecutor`` (threads inside ``castbook serve``) or the Celery
executor (``castbook worker``). Handlers, registered by job kind, do the work; this package
knows nothing about generation itself.
"""

from castbook.jobs.executor import Executor, JobContext, JobHandler, StoppedWithResults, run_job
from castbook.jobs.local import LocalExecutor
from castbook.jobs.store import TERMINAL, Job, JobOutput, JobStatus, JobStore, PartialResults

__all__ = [
    "TERMINAL",
    "Executor",
    "Job",
    "JobContext",
    "JobHandler",
    "JobOutput",
    "JobStatus",
    "JobStore",
    "LocalExecutor",
    "PartialResults",
    "StoppedWithResults",
    "run_job",
]
