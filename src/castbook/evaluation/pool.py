"""Evaluation requests scored in worker processes, shared fairly between owners.

The HTTP server must not decode uploads or run the face model itself (one request would stall
every other), and one owner must not starve another. :class:`EvaluationPool` owns a few worker
processes (started on the first request, each loading the scorer's models once, stopped with
:meth:`~EvaluationPool.close`) and a fair queue in front of them: each owner has their own
queue, an owner has at most ``per_owner`` requests in the workers at a time, and a free worker
takes the next request of the waiting owner served least recently (round-robin: an owner who
just had a turn goes behind everyone already waiting). There is no lock across
owners: an owner's slow request holds one worker, never the others' requests.

A worker scores a whole request (:func:`evaluate`): it checks the request's frame × pixel
budget first (:mod:`castbook.evaluation.budget`), computes the reference features it was not
given, then scores each candidate with :meth:`Scorer.score_one` — the same call, on the same
models, as scoring in-process, so the scores are the same.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import pickle
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from castbook.errors import CastbookError, InvalidInputError
from castbook.settings import yield_cpu

if TYPE_CHECKING:
    from castbook.evaluation.scorer import Score, Scorer

__all__ = [
    "CallRequest",
    "EvaluationPool",
    "EvaluationRequest",
    "EvaluationResult",
    "EvaluationWorkerLost",
    "FeaturesRequest",
    "FeaturesResult",
    "ReferenceInput",
    "evaluate",
    "load_worker_scorer",
]

log = logging.getLogger("castbook.evaluation")

# What on_event is told: ("queued" | "started" | "finished", owner, ticket).
Event = tuple[str, str, int]


class EvaluationWorkerLost(CastbookError):
    """A worker process died while it scored a request (killed, out of memory)."""


class PoolClosedError(CastbookError):
    """The pool was closed (the server is stopping) before the request was scored."""


@dataclass(frozen=True)
class ReferenceInput:
    """One reference image: its stored features (JSON) when the library had them for the
    scorer's key, else its bytes (the worker computes the features and sends them back)."""

    label: str
    features: dict[str, Any] | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class EvaluationRequest:
    candidates: tuple[bytes, ...]
    names: tuple[str, ...]
    references: tuple[ReferenceInput, ...]
    # Decoded frames × pixels the whole request may take (CASTBOOK_EVAL_PIXEL_BUDGET).
    pixel_budget: int


@dataclass(frozen=True)
class EvaluationResult:
    scores: list[Score]
    # The scorer's feature key (what stored features are filed under) and the features the
    # worker computed, by reference index, for the caller to store.
    key: str
    computed: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class FeaturesRequest:
    """Only the features of some images (identity search's queries and new references)."""

    images: tuple[bytes, ...]
    names: tuple[str, ...]
    pixel_budget: int


@dataclass(frozen=True)
class FeaturesResult:
    key: str
    # Per image: its features (JSON) or why they could not be computed.
    features: list[dict[str, Any] | None]
    errors: list[str | None]


@dataclass(frozen=True)
class CallRequest:
    """Other heavy image work the HTTP process must not do itself, run in a worker under the
    same per-owner fairness: ``function(*args)``, where ``function`` is a module-level
    function (a worker finds it by its name, as pickle sends functions). The server's
    Character Extractor sends its local analyser (face detection and colour clustering)
    this way; the evaluation package never imports the caller's module itself."""

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()


# --- in the worker process ----------------------------------------------------------------

_scorer: Scorer | None = None
# Why the models could not be loaded (a bad CASTBOOK_EVAL_EMBEDDING_MODEL, a missing extra):
# every request this worker takes answers with it, instead of the worker dying at start-up
# and each request reading as a crash.
_start_failure: CastbookError | None = None


def load_worker_scorer() -> None:
    """Worker start-up: load the scorer's models once for every request this process scores."""
    global _scorer, _start_failure
    from castbook.evaluation.shared import _default_scorer

    if multiprocessing.parent_process() is not None:  # a worker, not a caller's process
        yield_cpu()  # the server's HTTP process goes first when cores are short

    try:
        _scorer = _default_scorer()
    except CastbookError as exc:
        _start_failure = exc


def evaluate(request: EvaluationRequest | FeaturesRequest | CallRequest) -> Any:
    """Score one request (in a worker process): budget, references, then each candidate; or
    run a :class:`CallRequest`'s function."""
    from castbook.evaluation.budget import BudgetExceededError, PixelBudget, check_budget
    from castbook.evaluation.features import ImageFeatures

    if isinstance(request, CallRequest):  # needs no scorer: it may load models of its own
        try:
            return request.function(*request.args)
        except CastbookError as exc:
            raise _portable(exc) from None
    if _scorer is None and _start_failure is None:
        load_worker_scorer()
    if _start_failure is not None:
        raise _portable(_start_failure)
    scorer = _scorer
    assert scorer is not None
    if isinstance(request, FeaturesRequest):
        return _features(scorer, request)
    try:
        costs = check_budget(request.candidates, request.names, request.pixel_budget)
        # Stills decode exactly their header's size; clips are charged frame by frame as
        # they are decoded, in case the header undercounted.
        stills = sum(cost.pixels for cost in costs if cost is not None and cost.frames == 1)
        budget = PixelBudget(request.pixel_budget, spent=stills)
        references: list[ImageFeatures] = []
        computed: dict[int, dict[str, Any]] = {}
        for index, reference in enumerate(request.references):
            if reference.features is not None:
                references.append(ImageFeatures.from_json(reference.features))
                continue
            assert reference.data is not None
            features = scorer.features(reference.data, reference.label)
            computed[index] = features.to_json()
            references.append(features)
        scores = scorer.score_batch(references, request.candidates, request.names, budget=budget)
    except BudgetExceededError:
        raise
    except CastbookError as exc:
        raise _portable(exc) from None
    return EvaluationResult(scores, scorer.key, computed)


def _features(scorer: Scorer, request: FeaturesRequest) -> FeaturesResult:
    from castbook.evaluation.budget import BudgetExceededError, check_budget

    try:
        check_budget(request.images, request.names, request.pixel_budget)
    except BudgetExceededError:
        raise
    except CastbookError as exc:
        raise _portable(exc) from None
    features: list[dict[str, Any] | None] = []
    errors: list[str | None] = []
    for data, name in zip(request.images, request.names, strict=True):
        try:
            features.append(scorer.features(data, name).to_json())
            errors.append(None)
        except CastbookError as exc:
            features.append(None)
            errors.append(str(exc))
    return FeaturesResult(scorer.key, features, errors)


def _portable(error: CastbookError) -> CastbookError:
    """``error`` as it can cross back to the server: errors whose constructor takes other
    arguments than their message (FieldError, MissingDependencyError) do not unpickle, and
    one that fails to unpickle breaks the whole process pool."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        kind = InvalidInputError if isinstance(error, InvalidInputError) else CastbookError
        return kind(str(error))
    return error


# --- in the server process ----------------------------------------------------------------


@dataclass
class _Waiting:
    ticket: int
    owner: str
    payload: Any
    future: Future[Any]
    # The process pool it was handed to, so a broken one is replaced only once.
    executor: ProcessPoolExecutor | None = None


# A request handed to a worker, whose completion callback is attached outside the lock.
_Launched = tuple[_Waiting, "Future[Any]"]


class EvaluationPool:
    """Worker processes behind a per-owner fair queue (see the module's docstring).

    ``job(payload)`` runs in a worker (a module-level function: it is sent by name);
    ``initializer`` runs once in each worker as it starts. ``on_event(kind, owner, ticket)``
    is told when a request is queued, started (handed to a worker) and finished.
    """

    def __init__(
        self,
        workers: int,
        *,
        per_owner: int = 1,
        job: Callable[[Any], Any] = evaluate,
        initializer: Callable[[], None] | None = load_worker_scorer,
        on_event: Callable[[str, str, int], None] | None = None,
    ) -> None:
        if workers < 1 or per_owner < 1:
            raise ValueError(
                f"workers and per_owner must be at least 1, got {workers}, {per_owner}"
            )
        self.workers = workers
        self.per_owner = per_owner
        self._job = job
        self._initializer = initializer
        self._on_event = on_event
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._queues: dict[str, deque[_Waiting]] = {}
        self._running: dict[str, int] = {}
        # When each owner last had a request started (a count): the least recent goes first.
        self._served: dict[str, int] = {}
        self._starts = itertools.count(1)
        self._busy = 0
        self._tickets = itertools.count(1)
        self._closed = False
        self.key: str | None = None  # the workers' feature key, once one has answered

    def submit(self, owner: str, payload: Any) -> Future[Any]:
        """Queue ``payload`` under ``owner``; the future gives ``job(payload)``'s result or
        raises its error. Cancelling the future before it starts drops the request."""
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise PoolClosedError("the evaluation workers are stopping; try again later")
            waiting = _Waiting(next(self._tickets), owner, payload, future)
            self._queues.setdefault(owner, deque()).append(waiting)
            events, launched = self._dispatch()
        self._after([("queued", owner, waiting.ticket), *events], launched)
        return future

    def waiting(self) -> int:
        with self._lock:
            return sum(len(queue) for queue in self._queues.values())

    def close(self) -> None:
        """Stop the workers; requests still queued fail with :class:`PoolClosedError`."""
        with self._lock:
            self._closed = True
            dropped = [item for queue in self._queues.values() for item in queue]
            self._queues.clear()
            executor, self._executor = self._executor, None
        for item in dropped:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(
                    PoolClosedError("the server stopped before this evaluation ran; try again")
                )
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    # --- the fair queue (called with self._lock held) -------------------------------------

    def _dispatch(self) -> tuple[list[Event], list[_Launched]]:
        """Hand waiting requests to free workers, one owner's turn at a time."""
        events: list[Event] = []
        launched: list[_Launched] = []
        while self._busy < self.workers and not self._closed:
            item = self._next()
            if item is None:
                break
            if not item.future.set_running_or_notify_cancel():
                continue  # the caller gave up (client gone) before it started
            self._running[item.owner] = self._running.get(item.owner, 0) + 1
            self._served[item.owner] = next(self._starts)
            self._busy += 1
            events.append(("started", item.owner, item.ticket))
            try:
                inner = self._submit_to_workers(item)
            except Exception as exc:
                self._release(item.owner)
                item.future.set_exception(exc)
                events.append(("finished", item.owner, item.ticket))
                continue
            launched.append((item, inner))
        return events, launched

    def _next(self) -> _Waiting | None:
        """The first waiting request of the owner whose turn it is: of those under
        ``per_owner``, the one with the fewest running, then served least recently, then
        waiting longest."""
        ready = [
            owner
            for owner, queue in self._queues.items()
            if queue and self._running.get(owner, 0) < self.per_owner
        ]
        if not ready:
            return None
        owner = min(
            ready,
            key=lambda o: (
                self._running.get(o, 0),
                self._served.get(o, 0),
                self._queues[o][0].ticket,
            ),
        )
        queue = self._queues[owner]
        item = queue.popleft()
        if not queue:
            del self._queues[owner]
        return item

    def _submit_to_workers(self, item: _Waiting) -> Future[Any]:
        if self._executor is None:
            # spawn, not fork: the server has threads, and a forked child could inherit a
            # lock some other thread held.
            self._executor = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=self._initializer,
            )
            # Start every worker now, so each loads its models while the first request is
            # scored: left to itself, the executor starts one only when no worker is idle,
            # and the second owner's request would wait for a process start.
            for _ in range(self.workers):
                getattr(self._executor, "_adjust_process_count", lambda: None)()
        item.executor = self._executor
        try:
            return self._executor.submit(self._job, item.payload)
        except BrokenProcessPool:
            # A worker died earlier; start afresh for this and later requests.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            return self._submit_to_workers(item)

    def _release(self, owner: str) -> None:
        self._busy -= 1
        left = self._running.get(owner, 1) - 1
        if left:
            self._running[owner] = left
        else:
            self._running.pop(owner, None)
            if owner not in self._queues:
                self._served.pop(owner, None)  # nothing of theirs left: forget them

    def _finished(self, item: _Waiting, done: Future[Any]) -> None:
        with self._lock:
            self._release(item.owner)
            broken = isinstance(done.exception(), BrokenProcessPool)
            if broken and self._executor is not None and self._executor is item.executor:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
            events, launched = self._dispatch()
        error = done.exception()
        if isinstance(error, BrokenProcessPool):
            log.error("an evaluation worker process died: %s", error)
            error = EvaluationWorkerLost(
                "the evaluation worker stopped unexpectedly (killed, or out of memory?) "
                "while it scored this request; try again"
            )
        if error is not None:
            item.future.set_exception(error)
        else:
            result = done.result()
            if self.key is None and isinstance(result, EvaluationResult | FeaturesResult):
                self.key = result.key
            item.future.set_result(result)
        self._after([("finished", item.owner, item.ticket), *events], launched)

    def _after(self, events: Sequence[Event], launched: Sequence[_Launched]) -> None:
        """Outside the lock: tell the events, then watch the launched requests (a callback
        on a future that is already done runs at once, and takes the lock)."""
        self._tell(events)
        for item, inner in launched:
            inner.add_done_callback(lambda done, item=item: self._finished(item, done))

    def _tell(self, events: Sequence[Event]) -> None:
        if self._on_event is None:
            return
        for kind, owner, ticket in events:
            self._on_event(kind, owner, ticket)
