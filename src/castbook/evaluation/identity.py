"""Identity search: which characters of a library an image shows, from stored vectors only.

A character's reference images are kept as vectors (:class:`IdentityVectors`: the appearance
descriptor and the face embeddings the headline score compares). A query is scored against
every reference with the headline score's own rule and calibration — the face distance when
both show a face, the appearance similarity otherwise — and a character counts with its
best-matching reference (its references are a set, as in :meth:`Scorer.score_one`). So the
score identify reports for a character is the score ``castbook eval --character`` gives.

Exact search is two matrix products over the stored vectors (numpy); in a large library
only the references whose raw measure can rank are scored. Above :data:`ANN_FROM`
references an approximate nearest-neighbour index (usearch HNSW, one for faces, one for
appearance) proposes candidates and the exact rule rescores them; ``benchmarks/identify.py``
measures its recall against exact search.

"No known character": the best score must reach the open-set threshold of its basis,
:data:`OPEN_SET_THRESHOLDS`: the score that only :data:`OPEN_SET_FALSE_MATCH_RATE` (1 %) of
different-identity pairs of the calibration images reach. ``benchmarks/calibrate_eval.py``
fits them with the curves and writes them to ``calibration.json`` (``--open-set-only``
refits them alone); ``benchmarks/eval_quality.py`` recomputes them and says when they are
stale.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from castbook.errors import InvalidInputError
from castbook.evaluation.appearance import DIMENSIONS
from castbook.evaluation.scoring import Calibration, default_calibration

if TYPE_CHECKING:
    from castbook.evaluation.features import ImageFeatures

__all__ = [
    "ANN_FROM",
    "FACE_DIMENSIONS",
    "OPEN_SET_FALSE_MATCH_RATE",
    "OPEN_SET_THRESHOLDS",
    "IdentityIndex",
    "IdentityMatch",
    "IdentityVectors",
    "is_known",
]

log = logging.getLogger("castbook.evaluation")

FACE_DIMENSIONS = 128


def _open_set(calibration: Calibration) -> tuple[float, dict[str, float]]:
    fitted = calibration.open_set
    try:
        return float(fitted["false_match_rate"]), {
            basis: float(fitted[basis]) for basis in ("face", "appearance")
        }
    except (KeyError, TypeError, ValueError):
        raise InvalidInputError(
            "the calibration lacks open-set thresholds for face and appearance "
            f"(open_set: {fitted!r}); run `benchmarks/calibrate_eval.py --open-set-only`"
        ) from None


# The scores 1 % of different-identity pairs of ../shared/eval reach (faces/: 1 690 pairs of
# 13 people; anime/: 2 729 pairs of 5 characters), from calibration.json.
OPEN_SET_FALSE_MATCH_RATE, OPEN_SET_THRESHOLDS = _open_set(default_calibration())
# Below this many references exact search meets the goal (a million: 54-65 ms of CPU, 65-126
# ms wall median at load 3-6 on 2 cores, benchmarks/identify.py); from it the ANN index
# proposes candidates, once its graph is built (a million: ~9 minutes here, at load 3-5).
ANN_FROM = 1_000_000
# Candidates the ANN index proposes per basis, as a multiple of ``top`` (then rescored).
_ANN_CANDIDATES = 8
# Exact search scores every reference up to this many; above, only those whose raw measure
# can put their character in the top (the rest cannot: see IdentityIndex._exact_candidates).
_SCORE_ALL_UP_TO = 50_000
# Extra candidates beyond the bound, for scores that tie once rounded to 2 decimals.
_TIE_MARGIN = 64


@dataclass(frozen=True)
class IdentityVectors:
    """One image's identity vectors: a unit (or zero) appearance vector and its faces."""

    appearance: np.ndarray  # (DIMENSIONS,) float32
    faces: np.ndarray | None  # (n, 128) float32; None: faces were not looked for

    @classmethod
    def of(cls, features: ImageFeatures) -> IdentityVectors:
        appearance = np.asarray(features.appearance.values, dtype=np.float32)
        faces = None
        if features.faces is not None:
            faces = np.asarray([face.vector for face in features.faces], dtype=np.float32).reshape(
                -1, FACE_DIMENSIONS
            )
        return cls(appearance, faces)

    def to_bytes(self) -> tuple[bytes, bytes | None]:
        faces = None if self.faces is None else self.faces.astype("<f4").tobytes()
        return self.appearance.astype("<f4").tobytes(), faces

    @classmethod
    def from_bytes(cls, appearance: bytes, faces: bytes | None) -> IdentityVectors:
        vector = np.frombuffer(appearance, dtype="<f4")
        if vector.size != DIMENSIONS:
            raise InvalidInputError(
                f"stored appearance vector has {vector.size} values, expected {DIMENSIONS}; "
                "run `castbook identify --reindex`"
            )
        face_rows = None
        if faces is not None:
            flat = np.frombuffer(faces, dtype="<f4")
            if flat.size % FACE_DIMENSIONS:
                raise InvalidInputError(
                    f"stored face vectors have {flat.size} values, not a multiple of "
                    f"{FACE_DIMENSIONS}; run `castbook identify --reindex`"
                )
            face_rows = flat.reshape(-1, FACE_DIMENSIONS)
        return cls(vector, face_rows)


@dataclass(frozen=True)
class IdentityMatch:
    """A character's score against a query: its best reference (by position in the index's
    entries for that character) and the basis of that score."""

    character_id: str
    score: float
    basis: str
    reference: int
    label: str | None = None  # the reference's label, when the index was given labels

    def to_json(self) -> dict[str, Any]:
        return {
            "character_id": self.character_id,
            "score": self.score,
            "basis": self.basis,
            "reference": self.reference,
            "label": self.label,
        }


def is_known(match: IdentityMatch) -> bool:
    """Whether a match reaches the open-set threshold of its basis."""
    return match.score >= OPEN_SET_THRESHOLDS[match.basis]


class IdentityIndex:
    """Stored reference vectors of many characters, searched exactly or through an ANN index.

    ``entries`` are ``(character_id, vectors)`` of every reference image; a character's
    entries keep their order (``IdentityMatch.reference`` counts within them). ``labels``
    (one per entry, e.g. the image's sha256) come back with the matches.
    """

    def __init__(
        self,
        entries: Sequence[tuple[str, IdentityVectors]],
        calibration: Calibration | None = None,
        *,
        labels: Sequence[str] | None = None,
        ann_from: int = ANN_FROM,
    ) -> None:
        self.calibration = calibration or default_calibration()
        if labels is not None and len(labels) != len(entries):
            raise ValueError(f"{len(labels)} labels for {len(entries)} entries")
        ordered = sorted(range(len(entries)), key=lambda i: entries[i][0])  # stable
        self._labels = None if labels is None else [labels[i] for i in ordered]
        ids = [entries[i][0] for i in ordered]
        self.character_ids: list[str] = list(dict.fromkeys(ids))
        self._position = {cid: n for n, cid in enumerate(self.character_ids)}
        self._ref_character = np.asarray([self._position[cid] for cid in ids], dtype=np.int64)
        # A reference's position among its character's references.
        first = np.searchsorted(self._ref_character, self._ref_character, side="left")
        self._ref_position = np.arange(len(ids)) - first
        self._char_starts = (
            np.flatnonzero(np.r_[True, self._ref_character[1:] != self._ref_character[:-1]])
            if ids
            else np.zeros(0, dtype=np.int64)
        )
        self._appearance = (
            np.stack([entries[i][1].appearance for i in ordered]).astype(np.float32)
            if ids
            else np.zeros((0, DIMENSIONS), dtype=np.float32)
        )
        faces, owners = [], []
        for ref, i in enumerate(ordered):
            found = entries[i][1].faces
            if found is not None and len(found):
                faces.append(found)
                owners.extend([ref] * len(found))
        self._faces = (
            np.concatenate(faces).astype(np.float32)
            if faces
            else np.zeros((0, FACE_DIMENSIONS), dtype=np.float32)
        )
        self._face_ref = np.asarray(owners, dtype=np.int64)
        self._face_norms = np.einsum("ij,ij->i", self._faces, self._faces)
        self._face_segments = (
            np.flatnonzero(np.r_[True, self._face_ref[1:] != self._face_ref[:-1]])
            if len(self._face_ref)
            else np.zeros(0, dtype=np.int64)
        )
        self._face_owners = self._face_ref[self._face_segments]
        self._most_references = int(np.diff(np.r_[self._char_starts, len(ids)]).max()) if ids else 0
        self._ann_from = ann_from
        self._ann: dict[str, Any] | None = None
        self._ann_lock = threading.Lock()
        self._ann_build_lock = threading.Lock()
        self._ann_builder: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self.character_ids)

    @property
    def references(self) -> int:
        return len(self._ref_character)

    @property
    def approximate(self) -> bool:
        """Whether searches go through the ANN index (large libraries)."""
        return self.references >= self._ann_from

    def appearance_score(self, query: IdentityVectors, match: IdentityMatch) -> float:
        """The appearance score (0-100) of ``query`` against the reference a match names,
        whatever the match's basis: what a face match is checked against when a false match
        costs more than a missed one."""
        ref = int(self._char_starts[self._position[match.character_id]]) + match.reference
        cosine = float(self._appearance[ref] @ query.appearance.astype(np.float32))
        similarity = np.clip(np.asarray([0.5 * (1.0 + cosine)]), 0.0, 1.0)
        return round(float(_logistic(self.calibration.appearance, similarity)[0]), 2)

    def search(
        self,
        query: IdentityVectors,
        top: int = 3,
        *,
        exclude: Collection[str] = (),
        exact: bool | None = None,
    ) -> list[IdentityMatch]:
        """The ``top`` characters best matching ``query``, best first (by the unrounded score,
        then id)."""
        if top < 1:
            raise InvalidInputError(f"top must be at least 1, got {top}")
        if not self.references:
            return []
        # A large library's ANN index takes minutes to build: until it is ready (built in the
        # background), searches are exact.
        use_exact = not (self.approximate and self._ann_ready()) if exact is None else exact
        wanted = top + len(exclude)
        if not use_exact:
            refs = self._ann_candidates(query, wanted)
        elif self.references > _SCORE_ALL_UP_TO:
            refs = self._exact_candidates(query, wanted)
        else:
            refs = None
        scores, basis = self._reference_scores(query, refs)
        return self._best_characters(scores, basis, refs, top, exclude)

    def _exact_candidates(self, query: IdentityVectors, wanted: int) -> np.ndarray:
        """Every reference that can be some top-``wanted`` character's best, found on the raw
        measures (the score is monotonic in each), so only they are scored: a character
        ranked in the top ``wanted`` has fewer than ``wanted`` characters above it, each with
        at most ``_most_references`` references above its best one, in either basis."""
        keep = wanted * self._most_references + _TIE_MARGIN
        q = query.appearance.astype(np.float32)
        similarity = np.einsum("ij,j->i", self._appearance, q)
        by_face = np.zeros(self.references, dtype=bool)
        chosen = []
        if query.faces is not None and len(query.faces) and len(self._faces):
            distance = self._face_distances(query.faces, None)
            by_face = np.isfinite(distance)
            face_refs = np.flatnonzero(by_face)
            chosen.append(face_refs[_smallest(distance[face_refs], keep)])
        appearance_refs = np.flatnonzero(~by_face) if by_face.any() else None
        if appearance_refs is None:
            chosen.append(_smallest(-similarity, keep))
        else:
            chosen.append(appearance_refs[_smallest(-similarity[appearance_refs], keep)])
        return np.unique(np.concatenate(chosen))

    # ---- exact scoring -------------------------------------------------------------------

    def _reference_scores(
        self, query: IdentityVectors, refs: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The headline score of each reference (all, or ``refs``) and whether it is a face
        score; the same rule and calibration as :func:`castbook.evaluation.scoring.compare`."""
        appearance = self._appearance if refs is None else self._appearance[refs]
        cosine = np.einsum("ij,j->i", appearance, query.appearance.astype(np.float32))
        similarity = np.clip(0.5 * (1.0 + cosine.astype(np.float64)), 0.0, 1.0)
        scores = _logistic(self.calibration.appearance, similarity)
        is_face = np.zeros(len(scores), dtype=bool)
        if query.faces is not None and len(query.faces) and len(self._faces):
            distance = self._face_distances(query.faces, refs)
            has_face = np.isfinite(distance)
            scores[has_face] = _logistic(self.calibration.face, distance[has_face])
            is_face = has_face
        # Unrounded: characters rank by the curve itself, so two near-identical pictures that
        # both show as 100.0 still come in order; matches report it rounded, as compare does.
        return scores, is_face

    def _face_distances(self, query_faces: np.ndarray, refs: np.ndarray | None) -> np.ndarray:
        """Each reference's smallest distance between one of its faces and a query face
        (inf: the reference shows none)."""
        q = query_faces.astype(np.float32)
        if refs is None:
            nearest = self._nearest(self._faces, self._face_norms, q)
            best = np.full(self.references, np.inf)
            # Face rows are in reference order: each reference's faces are one segment.
            best[self._face_owners] = np.minimum.reduceat(nearest, self._face_segments)
            return best
        local = np.full(self.references, -1, dtype=np.int64)
        local[refs] = np.arange(len(refs))
        keep = local[self._face_ref] >= 0
        nearest = self._nearest(self._faces[keep], self._face_norms[keep], q)
        best = np.full(len(refs), np.inf)
        np.minimum.at(best, local[self._face_ref[keep]], nearest)
        return best

    @staticmethod
    def _nearest(faces: np.ndarray, norms: np.ndarray, q: np.ndarray) -> np.ndarray:
        # einsum, not BLAS: a matrix-vector product is memory-bound, and BLAS's threads
        # cost ten times its work on busy cores (benchmarks/identify.py).
        products = np.einsum("ij,kj->ik", faces, q)
        squared = norms[:, None] + np.einsum("ij,ij->i", q, q)[None, :] - 2.0 * products
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0)).astype(np.float64)

    def _best_characters(
        self,
        scores: np.ndarray,
        basis: np.ndarray,
        refs: np.ndarray | None,
        top: int,
        exclude: Collection[str],
    ) -> list[IdentityMatch]:
        ref_ids = np.arange(self.references) if refs is None else refs
        characters = self._ref_character[ref_ids]
        if refs is None:
            # References are in character order: each character's best is a segment's max,
            # found without sorting the whole library.
            best = np.maximum.reduceat(scores, self._char_starts)
            chosen = np.arange(len(best))
        else:
            order = np.lexsort((-scores, characters))
            firsts = order[np.r_[True, characters[order][1:] != characters[order][:-1]]]
            best, chosen = scores[firsts], characters[firsts]
        if exclude:
            excluded = [self._position[c] for c in exclude if c in self._position]
            keep = ~np.isin(chosen, excluded)
            best, chosen = best[keep], chosen[keep]
        if len(chosen) > top:
            cut = np.argpartition(-best, top - 1)[:top]
            # Ties at the cut: keep every character scoring as the last one kept.
            keep = best >= best[cut].min()
            best, chosen = best[keep], chosen[keep]
        # Best first; ties by id (character_ids are sorted).
        ranked_characters = chosen[np.lexsort((chosen, -best))][:top]
        ranked = [self._best_reference(c, scores, ref_ids, characters) for c in ranked_characters]
        return [
            IdentityMatch(
                character_id=self.character_ids[characters[i]],
                score=round(float(scores[i]), 2),
                basis="face" if basis[i] else "appearance",
                reference=int(self._ref_position[ref_ids[i]]),
                label=None if self._labels is None else self._labels[int(ref_ids[i])],
            )
            for i in ranked
        ]

    def _best_reference(
        self, character: int, scores: np.ndarray, ref_ids: np.ndarray, characters: np.ndarray
    ) -> int:
        """The position (in ``scores``) of the character's best reference, the first of ties."""
        if len(ref_ids) == self.references:
            start = self._char_starts[character]
            end = (
                self._char_starts[character + 1]
                if character + 1 < len(self._char_starts)
                else self.references
            )
            return int(start + np.argmax(scores[start:end]))
        positions = np.flatnonzero(characters == character)
        return int(positions[np.argmax(scores[positions])])

    # ---- approximate search --------------------------------------------------------------

    def _ann_candidates(self, query: IdentityVectors, top: int) -> np.ndarray:
        """References the ANN indexes propose: the nearest by appearance and by face,
        ``_ANN_CANDIDATES`` × top of each (a character's other references are not needed:
        its best one is what counts)."""
        indexes = self._ann_indexes()
        # The graph walks expansion_search nodes anyway: rescoring all it found costs little
        # (a few hundred dot products) and keeps what a narrower cut would lose in a crowd
        # of near-equal neighbours.
        wanted = max(64, _ANN_CANDIDATES * top, int(HNSW_SETTINGS["expansion_search"]))
        found = [
            indexes["appearance"]
            .search(query.appearance.astype(np.float32), min(wanted, self.references))
            .keys
        ]
        if query.faces is not None and len(query.faces) and indexes.get("face") is not None:
            count = min(wanted, len(self._faces))
            for face in query.faces:
                keys = indexes["face"].search(face.astype(np.float32), count).keys
                found.append(self._face_ref[keys.astype(np.int64)])
        return np.unique(np.concatenate([np.asarray(k, dtype=np.int64) for k in found]))

    def _ann_ready(self) -> bool:
        """Whether the ANN index is built; starts building it in the background if not."""
        with self._ann_lock:
            if self._ann is not None:
                return True
            if self._ann_builder is None:
                self._ann_builder = threading.Thread(
                    target=self._build_in_background, name="castbook-identity-ann", daemon=True
                )
                self._ann_builder.start()
            return False

    def _build_in_background(self) -> None:
        try:
            self._ann_indexes()
        except Exception:  # no usearch, out of memory: exact search goes on answering
            log.exception("could not build the identity search's ANN index; searching exactly")

    def _ann_indexes(self) -> dict[str, Any]:
        """The ANN indexes, built on first use (blocking)."""
        with self._ann_build_lock:
            if self._ann is not None:
                return self._ann
            built = {
                "appearance": _hnsw(self._appearance, "ip"),
                "face": _hnsw(self._faces, "l2sq") if len(self._faces) else None,
            }
        with self._ann_lock:
            self._ann = built
            return built


# The HNSW graphs' settings (benchmarks/identify.py --ann-* measures others). A graph only
# proposes candidates, rescored from the float32 vectors, so it may hold its vectors as
# 8-bit integers: at a million references (synthetic, benchmarks/identify.py) the build took
# 626 s of CPU and the graphs 784 MB, against 686 s and 1 187 MB in half precision with a
# narrower build beam (expansion_add 64), whose recall@10 stayed at 0.78-0.87. The wide
# search beam is what recall needs among many near-equal neighbours: recall@10 0.870 at
# 128, 0.981 at 512, 0.994 at 1024 (4.9 ms a search).
HNSW_SETTINGS: dict[str, Any] = {
    "connectivity": 16,
    "expansion_add": 128,
    "expansion_search": 1024,
    "dtype": "i8",
}


def _hnsw(vectors: np.ndarray, metric: str) -> Any:
    try:
        from usearch.index import Index
    except ImportError as exc:
        from castbook.errors import MissingDependencyError

        raise MissingDependencyError(
            "searching a library this large (the ANN index)", "identify", "usearch"
        ) from exc
    index = Index(ndim=vectors.shape[1], metric=metric, **HNSW_SETTINGS)
    # One call for all: usearch adds a batch on every core (threads=0).
    index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=0)
    return index


def _smallest(values: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` smallest values, and of every value tying the last one."""
    if count >= len(values):
        return np.arange(len(values))
    cut = np.partition(values, count - 1)[count - 1]
    return np.flatnonzero(values <= cut)


def _logistic(curve: Any, x: np.ndarray) -> np.ndarray:
    z = curve.intercept + curve.slope * x
    return np.where(z < -60, 0.0, 100.0 / (1.0 + np.exp(-np.clip(z, -60, 60))))
