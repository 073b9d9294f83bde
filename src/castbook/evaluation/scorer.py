"""Scoring candidates against one or more reference images: the Python API.

>>> from castbook.evaluation import score, most_consistent
>>> scores = score("alice.png", ["out-1.png", "out-2.jpg", "clip.mp4"])
>>> most_consistent(scores).source
'out-2.jpg'

``Scorer.score`` takes the same arguments (one reference or several, as images or as
features computed before) and keeps its models and worker processes between calls:

>>> with Scorer() as scorer:
...     first = scorer.score("alice.png", ["out-1.png", "out-2.jpg"])
...     later = scorer.score(scorer.features("alice.png"), ["out-3.png"])
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from castbook.errors import CastbookError
from castbook.evaluation.features import (
    ImageFeatures,
    ImageSource,
    LoadedImage,
    extract_features,
    extract_features_many,
    features_key,
    load_for_scoring,
)
from castbook.evaluation.scoring import (
    Calibration,
    Comparison,
    compare_to_set,
    default_calibration,
)

if TYPE_CHECKING:
    from castbook.evaluation.budget import PixelBudget

__all__ = ["Score", "Scorer", "most_consistent", "rank", "score"]

# One reference or several, each an image or its features computed before.
References = ImageSource | ImageFeatures | Sequence[ImageSource | ImageFeatures]

# Below this many file candidates, starting worker processes costs more than it saves.
_PARALLEL_FROM = 24
# Still images scored together: their faces go through the face network as one batch
# (torch: ~10 against ~15 ms of CPU per face at 8, on the 2-core machine; more saves little).
_FACE_BATCH = 8


@dataclass(frozen=True)
class Score:
    """One candidate's result. ``score`` is the headline 0–100; ``None`` with ``error`` set."""

    source: str
    score: float | None
    basis: str | None = None
    components: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    frames: tuple[float, ...] = ()
    min_score: float | None = None
    reference: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "source": self.source,
            "score": self.score,
            "basis": self.basis,
            "components": self.components,
            "min_score": self.min_score,
            "reference": self.reference,
        }
        if self.frames:
            data["frames"] = list(self.frames)
        if self.error is not None:
            data["error"] = self.error
        return data


class Scorer:
    """Holds the models and settings; reuse one to score many batches."""

    def __init__(
        self,
        *,
        faces: bool | None = None,
        learned_embedder: Any | None = None,
        calibration: Calibration | None = None,
        video_frames: int = 16,
    ) -> None:
        from castbook.evaluation.faces import faces_available, load_face_embedder

        if faces is None:
            faces = faces_available()
        self.face_embedder = load_face_embedder() if faces else None
        self.learned_embedder = learned_embedder
        self.calibration = calibration or default_calibration()
        self.video_frames = video_frames
        self._workers: tuple[int, ProcessPoolExecutor] | None = None
        self._workers_lock = threading.Lock()

    @property
    def key(self) -> str:
        """Identifies the feature set this scorer computes (for stored reference features)."""
        learned = self.learned_embedder.name if self.learned_embedder is not None else None
        return features_key(faces=self.face_embedder is not None, learned_model=learned)

    def features(self, source: ImageSource, name: str = "image") -> ImageFeatures:
        loaded = load_for_scoring(
            source, name=name, full=self._needs_full_resolution, face_embedder=self.face_embedder
        )
        return extract_features(
            loaded, face_embedder=self.face_embedder, learned_embedder=self.learned_embedder
        )

    @property
    def _needs_full_resolution(self) -> bool:
        return self.face_embedder is not None or self.learned_embedder is not None

    def score_one(
        self,
        references: Sequence[ImageFeatures],
        candidate: ImageSource | ImageFeatures,
        name: str,
        *,
        budget: PixelBudget | None = None,
    ) -> Score:
        """One candidate's score; a candidate that cannot be read gets an ``error``. A clip's
        decoded frames are charged to ``budget``; running out raises (it refuses the whole
        request, unlike one unreadable candidate)."""
        from castbook.evaluation.budget import BudgetExceededError

        try:
            if isinstance(candidate, ImageFeatures):
                features = candidate
            elif _is_video(candidate):
                return self._score_video(references, candidate, name, budget)
            else:
                features = self.features(candidate, name)
        except BudgetExceededError:
            raise
        except CastbookError as exc:
            return Score(name, None, error=str(exc))
        return self._scored(references, features, name)

    def score(
        self,
        references: References,
        candidates: Iterable[ImageSource | ImageFeatures],
        *,
        names: Sequence[str] | None = None,
        workers: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Score]:
        """Score ``candidates`` against ``references``, as the module-level :func:`score`.

        ``references`` is one image or a sequence of them, each a path, bytes, a PIL image, an
        RGB array or its :class:`ImageFeatures` (computed once with :meth:`features` and
        reused); an unreadable reference raises. Candidates are images or features too.
        ``progress(done, total)`` is called as each candidate finishes.
        """
        references = self.reference_features(references)
        candidates = list(candidates)
        names = (
            list(names) if names is not None else [_name(c, i) for i, c in enumerate(candidates)]
        )
        if workers is None:
            workers = os.cpu_count() or 1
        files = all(isinstance(c, str | os.PathLike | bytes) for c in candidates)
        if workers > 1 and files and len(candidates) >= _PARALLEL_FROM:
            results: Iterable[Score] = self._score_in_processes(
                references, candidates, names, workers
            )
        else:
            results = self._score_in_batches(references, candidates, names)
        scores = []
        for result in results:
            scores.append(result)
            if progress is not None:
                progress(len(scores), len(candidates))
        return scores

    def score_batch(
        self,
        references: Sequence[ImageFeatures],
        candidates: Sequence[ImageSource | ImageFeatures],
        names: Sequence[str],
        *,
        budget: PixelBudget | None = None,
    ) -> list[Score]:
        """:meth:`score_one` of each candidate, with the still images' faces embedded in
        network batches (of 8): the same scores for less CPU. Features and clips are scored as
        :meth:`score_one` scores them."""
        if len(candidates) > _FACE_BATCH:
            return list(self._score_in_batches(references, candidates, names, budget=budget))
        stills = [
            i
            for i, c in enumerate(candidates)
            if not isinstance(c, ImageFeatures) and not _is_video(c)
        ]
        if self.face_embedder is None or len(stills) < 2:
            return [
                self.score_one(references, c, n, budget=budget)
                for c, n in zip(candidates, names, strict=True)
            ]
        done: dict[int, Score] = {}
        loaded: dict[int, LoadedImage] = {}
        for i in stills:
            try:
                loaded[i] = load_for_scoring(
                    candidates[i],
                    name=names[i],
                    full=self._needs_full_resolution,
                    face_embedder=self.face_embedder,
                )
            except CastbookError as exc:
                done[i] = Score(names[i], None, error=str(exc))
        try:
            features = extract_features_many(
                list(loaded.values()),
                face_embedder=self.face_embedder,
                learned_embedder=self.learned_embedder,
            )
        except CastbookError:  # one picture spoils the batch: score them one by one
            features = []
        for i, found in zip(loaded, features, strict=False):
            done[i] = self._scored(references, found, names[i])
        return [
            done[i] if i in done else self.score_one(references, c, names[i], budget=budget)
            for i, c in enumerate(candidates)
        ]

    def _score_in_batches(
        self,
        references: Sequence[ImageFeatures],
        candidates: Sequence[ImageSource | ImageFeatures],
        names: Sequence[str],
        *,
        budget: PixelBudget | None = None,
    ) -> Iterator[Score]:
        """:meth:`score_batch` of each ``_FACE_BATCH`` candidates in turn, as they are done."""
        for start in range(0, len(candidates), _FACE_BATCH):
            end = start + _FACE_BATCH
            yield from self.score_batch(
                references, candidates[start:end], names[start:end], budget=budget
            )

    def reference_features(self, references: References) -> list[ImageFeatures]:
        """Features of each reference: given ones as they are, images computed here."""
        items = [references] if _is_one_reference(references) else list(references)  # type: ignore[arg-type]
        if not items:
            raise CastbookError("scoring needs at least one reference image")
        return [
            item if isinstance(item, ImageFeatures) else self.features(item, _name(item, index))
            for index, item in enumerate(items)
        ]

    def _best(
        self, references: Sequence[ImageFeatures], candidate: ImageFeatures
    ) -> tuple[int, Comparison]:
        return compare_to_set(references, candidate, self.calibration)

    def _scored(
        self, references: Sequence[ImageFeatures], candidate: ImageFeatures, name: str
    ) -> Score:
        """The candidate's score against the references as a set, its best one named."""
        index, best = self._best(references, candidate)
        return Score(
            name, best.score, best.basis, best.components, min_score=best.score, reference=index
        )

    def _score_video(
        self,
        references: Sequence[ImageFeatures],
        candidate: ImageSource,
        name: str,
        budget: PixelBudget | None = None,
    ) -> Score:
        from castbook.evaluation.video import sample_frames

        source = candidate if isinstance(candidate, bytes) else Path(candidate)  # type: ignore[arg-type]
        frames = sample_frames(source, max_frames=self.video_frames, budget=budget)
        per_frame = [self._best(references, self.features(f.image, name))[1] for f in frames]
        headline = [c.score for c in per_frame]
        components = {
            key: round(sum(c.components[key] for c in per_frame) / len(per_frame), 2)
            for key in per_frame[0].components
            if all(key in c.components for c in per_frame)
        }
        basis = "face" if any(c.basis == "face" for c in per_frame) else "appearance"
        mean = round(sum(headline) / len(headline), 2)
        return Score(
            name,
            mean,
            basis,
            components,
            frames=tuple(round(s, 2) for s in headline),
            min_score=round(min(headline), 2),
        )

    def _score_in_processes(
        self,
        references: Sequence[ImageFeatures],
        candidates: Sequence[ImageSource],
        names: Sequence[str],
        workers: int,
    ) -> Iterator[Score]:
        # Two chunks a worker at least (balance), each one face-network batch in its worker.
        chunk = max(1, min(32, len(candidates) // (workers * 2)))
        task = functools.partial(_score_in_worker, tuple(references))
        batches = [
            (candidates[i : i + chunk], names[i : i + chunk])
            for i in range(0, len(candidates), chunk)
        ]
        for scores in self._pool(workers).map(task, batches):
            yield from scores

    def _pool(self, workers: int) -> ProcessPoolExecutor:
        # Kept between calls: starting workers (and loading models in them) is the slow part.
        with self._workers_lock:
            if self._workers is not None and self._workers[0] == workers:
                return self._workers[1]
            self._close_workers()
            pool = self._start_pool(workers)
            self._workers = (workers, pool)
            return pool

    def _start_pool(self, workers: int) -> ProcessPoolExecutor:
        settings = {
            "faces": self.face_embedder is not None,
            "learned_dir": getattr(self.learned_embedder, "model_dir", None),
            "calibration": self.calibration,
            "video_frames": self.video_frames,
        }
        return ProcessPoolExecutor(
            workers,
            mp_context=_start_method(torch=getattr(self.face_embedder, "runtime", None) == "torch"),
            initializer=_start_worker,
            initargs=(settings,),
        )

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        with self._workers_lock:
            self._close_workers()

    def _close_workers(self) -> None:
        if self._workers is not None:
            self._workers[1].shutdown(cancel_futures=True)
            self._workers = None

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _start_method(*, torch: bool = False) -> multiprocessing.context.BaseContext:
    """How worker processes start. fork takes milliseconds but is only safe while this process
    has one thread (a forked child could inherit a lock another thread held). With threads,
    forkserver: a clean server process, started once per process with castbook's scoring
    modules imported, forks each worker, so a worker does not import Python and castbook
    afresh as a spawned one does (~1 s of CPU each); spawn only where there is no fork.
    ``torch``: the face network runs on torch, so the server imports it too (~1.6 s of CPU
    once, instead of in every worker)."""
    if os.name != "posix":
        return multiprocessing.get_context("spawn")
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    # Only heeded before the server starts (the first pool); a module list, imported there.
    modules = ["castbook.evaluation.scorer", "castbook.evaluation.faces"]
    if torch:
        modules += ["torch", "castbook.evaluation.dlib_resnet"]
    context.set_forkserver_preload(modules)
    return context


_worker: Scorer | None = None


def _start_worker(settings: dict[str, Any]) -> None:
    global _worker
    learned = None
    if settings["learned_dir"] is not None:
        from castbook.evaluation.learned import load_learned_embedder

        learned = load_learned_embedder(settings["learned_dir"])
    scorer = Scorer(
        faces=settings["faces"],
        learned_embedder=learned,
        calibration=settings["calibration"],
        video_frames=settings["video_frames"],
    )
    _worker = scorer


def _score_in_worker(
    references: Sequence[ImageFeatures],
    batch: tuple[Sequence[ImageSource], Sequence[str]],
) -> list[Score]:
    assert _worker is not None
    candidates, names = batch
    return _worker.score_batch(references, candidates, names)


_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})


def _is_video(candidate: ImageSource) -> bool:
    if not isinstance(candidate, str | os.PathLike | bytes):
        return False
    if not isinstance(candidate, bytes) and Path(candidate).suffix.lower() in _IMAGE_SUFFIXES:
        return False  # saves opening every image twice; a mislabelled video fails to decode
    from castbook.evaluation.video import is_video

    try:
        return is_video(candidate)
    except (CastbookError, OSError):
        return False


def _is_one_reference(references: object) -> bool:
    """Whether ``references`` is a single image (or its features), not a sequence of them.

    An array or bytes is one image even though it can be iterated.
    """
    single = ImageFeatures | str | os.PathLike | bytes | np.ndarray | Image.Image
    return isinstance(references, single)


def _name(candidate: ImageSource | ImageFeatures, index: int) -> str:
    if isinstance(candidate, str | os.PathLike):
        return os.fspath(candidate)
    return f"candidate {index + 1}"


def score(
    reference: References,
    candidates: Iterable[ImageSource | ImageFeatures],
    *,
    faces: bool | None = None,
    learned_embedder: Any | None = None,
    workers: int | None = None,
) -> list[Score]:
    """Score every candidate 0–100 against the reference image(s).

    ``reference`` is one image or a list of them (a character's views: each candidate is
    scored against them as a set, :func:`castbook.evaluation.scoring.compare_to_set`; the
    score's ``reference`` is the best-matching one). Images are paths, bytes, PIL images or
    RGB arrays, or their :class:`ImageFeatures` computed before; in-memory images are used as
    they are, never re-encoded. A candidate that cannot be read becomes a ``Score`` with
    ``error`` set; an unreadable reference raises. ``Scorer.score`` takes the same arguments.
    Videos (MP4, GIF …) are scored on sampled frames: ``score`` is the mean, ``min_score``
    the worst frame.
    """
    if learned_embedder is not None:  # the caller's own model: their scorer, closed after
        with Scorer(faces=faces, learned_embedder=learned_embedder) as scorer:
            return scorer.score(reference, candidates, workers=workers)
    return _kept_scorer(faces).score(reference, candidates, workers=workers)


# The module-level score()'s scorers, one per ``faces`` setting, kept with their worker pools
# for the life of the process: a pool per call cost each call its workers' start and model
# loads. Made per process id: a forked child must not use its parent's pool.
_kept: dict[tuple[int, bool | None], Scorer] = {}
_kept_lock = threading.Lock()


def _kept_scorer(faces: bool | None) -> Scorer:
    key = (os.getpid(), faces)
    with _kept_lock:
        scorer = _kept.get(key)
        if scorer is None:
            if not _kept:
                atexit.register(_close_kept)
            scorer = _kept[key] = Scorer(faces=faces)
        return scorer


def _close_kept() -> None:
    with _kept_lock:
        scorers = [s for (pid, _), s in _kept.items() if pid == os.getpid()]
        _kept.clear()
    for scorer in scorers:
        scorer.close()


def rank(scores: Iterable[Score]) -> list[Score]:
    """Best first; errors last; ties keep their input order."""
    return sorted(scores, key=lambda s: (s.score is None, -(s.score or 0.0)))


def most_consistent(scores: Iterable[Score]) -> Score | None:
    ranked = rank(scores)
    return ranked[0] if ranked and ranked[0].ok else None
