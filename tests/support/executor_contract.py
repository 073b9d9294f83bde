"""What every job executor promises, as tests: the local executor (threads in the server)
and the Celery executor (``castbook worker`` processes through Redis) inherit
:class:`ExecutorContract` and provide a ``harness`` fixture.

A harness has a job ``store``, ``create(kind, input)`` (the row only), ``hand_over(job)``
(give it to the executor), ``submit`` (both), ``start()`` (workers take jobs from then on;
calling it again does nothing) and ``wait(job_id)`` (until the job ended, with a generous
deadline). Its CASTBOOK_HOME has two
presets: ``tiny`` (a tiny SD 1.5 on disk) and ``missing`` (a model folder that does not
exist).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from castbook.generation import parse_request
from castbook.jobs import Job, JobStatus, JobStore
from castbook.tasks import generation_job_input

__all__ = ["ExecutorContract", "Harness", "contract_presets"]


def contract_presets(model: Path, missing: Path) -> str:
    """presets.toml for a harness's CASTBOOK_HOME."""
    return (
        f'[presets.tiny]\nbackend = "diffusers"\nmodel = "{model}"\n'
        'defaults = { width = 256, height = 256, steps = 2 }\noptions = { family = "sd15" }\n'
        f'[presets.missing]\nbackend = "diffusers"\nmodel = "{missing}"\n'
        'options = { family = "sd15" }\n'
    )


class Harness(Protocol):
    store: JobStore

    def create(self, kind: str, input: dict[str, Any]) -> Job: ...

    def hand_over(self, job: Job) -> None: ...

    def submit(self, kind: str, input: dict[str, Any]) -> Job: ...

    def start(self) -> None: ...

    def wait(self, job_id: str) -> Job: ...


# The ``tiny`` preset's defaults: a job row stores its request resolved against its preset
# (workers trust it), so a row built here must carry them or the worker draws 512x512.
TINY_DEFAULTS = {"width": 256, "height": 256, "steps": 2}


def generation(preset: str, seed: int = 3) -> dict[str, Any]:
    request = parse_request({"prompt": "a lighthouse at dusk", "seed": seed, **TINY_DEFAULTS})
    return generation_job_input(request, preset)


class ExecutorContract:
    """Inherit and provide a ``harness`` fixture (see the module's docstring)."""

    def test_a_job_runs_once_and_keeps_its_outputs(self, harness: Harness) -> None:
        harness.start()
        job = harness.submit("generation", generation("tiny"))
        done = harness.wait(job.id)
        assert done.status is JobStatus.SUCCEEDED, done.error
        assert done.attempts == 1 and done.worker
        assert len(done.outputs) == 1 and done.outputs[0].seed == 3

    def test_a_failing_job_fails_once_with_its_reason(self, harness: Harness) -> None:
        harness.start()
        job = harness.submit("generation", generation("missing"))
        done = harness.wait(job.id)
        assert done.status is JobStatus.FAILED and done.attempts == 1
        assert "preset 'missing' cannot run yet" in (done.error or "")
        assert done.error_data == {"type": "ModelNotAvailableError"}

    def test_an_unknown_kind_fails_with_a_reason(self, harness: Harness) -> None:
        harness.start()
        done = harness.wait(harness.submit("no_such_kind", {}).id)
        assert done.status is JobStatus.FAILED
        assert "no handler for tasks of kind 'no_such_kind'" in (done.error or "")

    def test_a_job_cancelled_while_queued_never_runs(self, harness: Harness) -> None:
        harness.start()
        cancelled = harness.create("generation", generation("tiny", seed=1))
        harness.store.cancel(cancelled.id)
        harness.hand_over(cancelled)  # its message still reaches a worker
        later = harness.submit("generation", generation("tiny", seed=2))
        # Jobs are taken in order: once the later one ran, the cancelled one was passed over.
        assert harness.wait(later.id).status is JobStatus.SUCCEEDED
        skipped = harness.store.get(cancelled.id)
        assert skipped.status is JobStatus.CANCELLED
        assert skipped.attempts == 0 and skipped.started_at is None and not skipped.outputs
