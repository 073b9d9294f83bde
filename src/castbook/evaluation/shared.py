"""One scorer shared by the threads of a process (job handlers, workflow runs).

The face model is not safe to share between threads, so scoring calls take turns; the work
around them does not wait. The scorer is made on first use (loading the face model takes a
moment).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from castbook.evaluation.features import ImageFeatures
    from castbook.evaluation.scorer import Scorer
    from castbook.evaluation.scoring import Calibration

__all__ = ["SharedScorer"]


class SharedScorer:
    """One scorer for the job handlers of a process, made on first use.

    The face model is not safe to share between threads, so scoring calls take turns; the
    rendering around them does not wait.
    """

    def __init__(self, factory: Callable[[], Scorer] | None = None) -> None:
        self._factory = factory or _default_scorer
        self._scorer: Scorer | None = None
        self._made = threading.Lock()
        self._turns = threading.Lock()

    def get(self) -> Scorer:
        with self._made:
            if self._scorer is None:
                self._scorer = self._factory()
        return cast("Scorer", _TakingTurns(self._scorer, self._turns))

    def close(self) -> None:
        if self._scorer is not None:
            self._scorer.close()


class _TakingTurns:
    """What render_batch and render_story use of a Scorer, one call at a time."""

    def __init__(self, scorer: Scorer, lock: threading.Lock) -> None:
        self._scorer = scorer
        self._lock = lock

    @property
    def key(self) -> str:
        return self._scorer.key

    @property
    def calibration(self) -> Calibration:
        return self._scorer.calibration

    def features(self, *args: Any, **kwargs: Any) -> ImageFeatures:
        with self._lock:
            return self._scorer.features(*args, **kwargs)


def _default_scorer() -> Scorer:
    from castbook.evaluation import Scorer
    from castbook.evaluation.faces import faces_available
    from castbook.evaluation.learned import configured_embedder

    return Scorer(faces=faces_available(), learned_embedder=configured_embedder())
