"""Jobs for ``castbook.evaluation.pool.EvaluationPool`` whose pace a test controls.

They run in the pool's spawned worker processes, so they live in a module those processes
can import by name (the spawned interpreter gets the parent's ``sys.path``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

__all__ = ["die", "echo", "gated", "held_evaluate"]

_GATE_DEADLINE_S = 300.0


def echo(payload: Any) -> Any:
    return payload


def gated(payload: tuple[str, Any]) -> Any:
    """Return ``value`` once the file ``gate`` exists: a request that stays in its worker
    for as long as the test wants (a slow evaluation, without a fixed duration)."""
    gate, value = payload
    deadline = time.monotonic() + _GATE_DEADLINE_S
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.01)
    return value


def die(payload: Any) -> Any:
    """The worker process dies mid-request, as one killed for memory would."""
    os._exit(3)


def held_evaluate(request: Any) -> Any:
    """The real evaluation job, held at the gate named by ``EVAL_TEST_GATE`` while any of the
    request's candidates is named ``hold-…``: one owner's evaluation that stays slow for as
    long as the test wants, through the real HTTP route and scoring."""
    from castbook.evaluation.pool import evaluate

    if any(name.startswith("hold-") for name in request.names):
        gated((os.environ["EVAL_TEST_GATE"], None))
    return evaluate(request)
