"""Identity search: which characters of a library an image shows, from stored vectors only.

A character's reference images are kept as vectors (:class:`IdentityVectors`: the appearance
descriptor and the face embeddings the headline score compares). A query is scored against
every reference with the headline score's own rule and calibration — the face distance when
both show a face, the appearance similarity otherwise — and a character's references count
as a set (:func:`castbook.evaluation.scoring.compare_to_set`: by face the best one, by
appearance the best one's cosine averaged with the centroid's). So the score identify
reports for a character is the score ``castbook eval --character`` gives.

Exact search is two matrix products over the stored vectors (numpy) and a few segment
reductions per character (the centroid's cosine is the sum of the references' cosines over
the length of their sum, kept per character); in a large library only the characters whose
raw measure can rank are put through the calibration curves. Above :data:`ANN_FROM`
references an approximate nearest-neighbour index (usearch HNSW, one for faces, one for
appearance) proposes characters and the exact rule rescores them with all their references;
``benchmarks/identify.py`` measures its recall against exact search.

"No known character": the best score must reach the open-set threshold of its basis,
:data:`OPEN_SET_THRESHOLDS`: the score that only :data:`OPEN_SET_FALSE_MATCH_RATE` (1 %) of
the calibration images' scores against a different identity reach — by face per pair, by
appearance against another character's three references as a set. ``benchmarks/calibrate_eval.py``
fits them with the curves and writes them to ``calibration.json`` (``--open-set-only`` refits
them alone); ``benchmarks/eval_quality.py`` recomputes them and says when they are stale.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from castbook.errors import InvalidInputError
from castbook.evaluation.appearance import DIMENSIONS
from castbook.evaluation.reference_set import set_cosine
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


# The scores 1 % of wrong answers reach, from calibration.json. Face: of the different-identity
# pairs of ../shared/eval/faces (1 690 pairs of 13 people; one reference per person).
# Appearance: of a query's scores against another character whose three references count as
# a set (reference_set; anime/, 5 characters, 50 draws); a character with one reference
# passes fewer (0.7 %), with two 0.8 %.
OPEN_SET_FALSE_MATCH_RATE, OPEN_SET_THRESHOLDS = _open_set(default_calibration())
# Below this many references exact search meets the goal (a million: 54-65 ms of CPU, 65-126
# ms wall median at load 3-6 on 2 cores, benchmarks/identify.py); from it the ANN index
# proposes candidates, once its graph is built (a million: ~9 minutes here, at load 3-5).
ANN_FROM = 1_000_000
# Candidates the ANN index proposes per basis, as a multiple of ``top`` (then rescored).
_ANN_CANDIDATES = 8
# Exact search scores every reference up to this many; above, only those whose raw measure
# can put their character in the top (the rest cannot: see IdentityIndex._character_scores).
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
        counts = np.diff(np.r_[self._char_starts, len(ids)]).astype(np.int64)
        self._most_references = int(counts.max()) if ids else 0
        self._has_face = np.zeros(len(ids), dtype=bool)
        self._has_face[self._face_ref] = True
        # References per character: all of them (a query without a face compares every one
        # by appearance), and those without a face (a query with one: the others go by face).
        self._sizes = {
            False: counts,
            True: np.add.reduceat((~self._has_face).astype(np.int64), self._char_starts)
            if ids
            else np.zeros(0, dtype=np.int64),
        }
        # A character's references count as a set by appearance (reference_set): the length
        # of the sum of its appearance vectors, over the same two sets of references.
        self._sum_norm = {
            False: _segment_norms(self._appearance, self._char_starts, None),
            True: _segment_norms(self._appearance, self._char_starts, ~self._has_face),
        }
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
        """The appearance score (0-100) of ``query`` against the character a match names,
        its references as a set, whatever the match's basis: what a face match is checked
        against when a false match costs more than a missed one."""
        character = np.asarray([self._position[match.character_id]])
        appearance_only = IdentityVectors(query.appearance, None)
        _, scores, _, _ = self._character_scores(appearance_only, character)
        return round(float(scores[0]), 2)

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
        characters = None if use_exact else self._ann_candidates(query, wanted)
        found = self._character_scores(query, characters, bound=wanted if use_exact else None)
        return self._best_characters(*found, top, exclude)

    # ---- exact scoring -------------------------------------------------------------------

    def _character_scores(
        self,
        query: IdentityVectors,
        characters: np.ndarray | None,
        *,
        bound: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Callable[[int], int]]:
        """Each character's headline score against ``query`` (all characters, or
        ``characters``), with the rule and calibration of
        :func:`castbook.evaluation.scoring.compare_to_set`: references compared by face
        count with the best one, those compared by appearance as a set (the best one's
        cosine and the centroid's, averaged). Returns (characters, unrounded scores, whether
        by face, a function giving the n-th one's best reference). ``bound``: in a library of
        more than ``_SCORE_ALL_UP_TO`` references, only the characters whose raw measure can
        put them among the best ``bound`` (plus ties) are scored: the score is monotonic in each
        basis's raw measure."""
        if characters is None:
            refs, starts, chars = None, self._char_starts, np.arange(len(self.character_ids))
            sizes, norms = self._sizes, self._sum_norm
        else:
            chars = np.unique(characters)
            refs, starts = self._references_of(chars)
            sizes = {mode: values[chars] for mode, values in self._sizes.items()}
            norms = {mode: values[chars] for mode, values in self._sum_norm.items()}
        appearance = self._appearance if refs is None else self._appearance[refs]
        cosine = np.einsum("ij,j->i", appearance, query.appearance.astype(np.float32))
        count = len(cosine)
        face_mode = bool(query.faces is not None and len(query.faces) and len(self._faces))
        # References compared by face (the query shows one, and so do they) leave the
        # appearance set: their cosine is -inf there, and their distance finite.
        if face_mode:
            distance = self._face_distances(query.faces, refs)
            by_face = self._has_face if refs is None else self._has_face[refs]
            set_cos = np.where(by_face, -np.inf, cosine)
        else:
            distance, by_face, set_cos = None, np.zeros(count, dtype=bool), cosine
        best_distance = distance
        if self._most_references > 1:  # else every character is one reference: no set
            best_cosine = np.maximum.reduceat(set_cos, starts)
            if face_mode:
                sums = np.add.reduceat(np.where(by_face, 0.0, cosine), starts)
                best_distance = np.minimum.reduceat(distance, starts)
            else:
                sums = np.add.reduceat(cosine, starts)
            norm = norms[face_mode]
            centre = np.divide(sums, norm, out=np.zeros_like(sums), where=norm > 1e-12)
            set_cos = np.where(sizes[face_mode] >= 2, set_cosine(best_cosine, centre), best_cosine)
        keep = None
        if bound is not None and self.references > _SCORE_ALL_UP_TO:
            candidates = [_smallest(-set_cos, bound + _TIE_MARGIN)]
            if best_distance is not None:
                candidates.append(_smallest(best_distance, bound + _TIE_MARGIN))
            keep = np.unique(np.concatenate(candidates))
        picked = slice(None) if keep is None else keep
        set_cos = set_cos[picked].astype(np.float64)
        has_set = np.isfinite(set_cos)
        similarity = np.clip(0.5 * (1.0 + np.where(has_set, set_cos, 0.0)), 0.0, 1.0)
        appearance_scores = np.where(
            has_set, _logistic(self.calibration.appearance, similarity), -np.inf
        )
        if best_distance is None:
            is_face = np.zeros(len(appearance_scores), dtype=bool)
            scores = appearance_scores
        else:
            face_distance = best_distance[picked]
            has_face = np.isfinite(face_distance)
            face_scores = np.full(len(face_distance), -np.inf)
            face_scores[has_face] = _logistic(self.calibration.face, face_distance[has_face])
            is_face = has_face & (face_scores >= appearance_scores)
            scores = np.where(is_face, face_scores, appearance_scores)
        local = np.arange(len(chars)) if keep is None else keep
        ends = np.r_[starts[1:], count]

        def best_reference(n: int) -> int:
            """The n-th returned character's best reference in its winning basis (the first
            of ties), as a position in the whole index: found for the few characters
            answered only, not for every character scored."""
            first, last = starts[local[n]], ends[local[n]]
            if is_face[n]:
                assert distance is not None  # a face score needs face distances
                measure = -distance[first:last]
            else:
                measure = np.where(by_face[first:last], -np.inf, cosine[first:last])
            segment = np.where(by_face[first:last] == is_face[n], measure, -np.inf)
            best = int(first + np.argmax(segment))
            return best if refs is None else int(refs[best])

        return chars[local], scores, is_face, best_reference

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
        chars: np.ndarray,
        scores: np.ndarray,
        is_face: np.ndarray,
        best_reference: Callable[[int], int],
        top: int,
        exclude: Collection[str],
    ) -> list[IdentityMatch]:
        positions = np.flatnonzero(np.isfinite(scores))
        if exclude:
            excluded = [self._position[c] for c in exclude if c in self._position]
            positions = positions[~np.isin(chars[positions], excluded)]
        if len(positions) > top:
            cut = np.argpartition(-scores[positions], top - 1)[:top]
            # Ties at the cut: keep every character scoring as the last one kept.
            positions = positions[scores[positions] >= scores[positions[cut]].min()]
        # Best first; ties by id (character_ids are sorted).
        ranked = positions[np.lexsort((chars[positions], -scores[positions]))][:top]
        matches = []
        for n in ranked:
            ref = best_reference(int(n))
            matches.append(
                IdentityMatch(
                    character_id=self.character_ids[chars[n]],
                    score=round(float(scores[n]), 2),
                    basis="face" if is_face[n] else "appearance",
                    reference=int(self._ref_position[ref]),
                    label=None if self._labels is None else self._labels[ref],
                )
            )
        return matches

    def _references_of(self, chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The references of ``chars`` (sorted character positions), and where each
        character's run starts among them."""
        firsts = self._char_starts[chars]
        sizes = self._sizes[False][chars]
        starts = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)
        refs = np.repeat(firsts - starts, sizes) + np.arange(int(sizes.sum()))
        return refs.astype(np.int64), starts

    # ---- approximate search --------------------------------------------------------------

    def _ann_candidates(self, query: IdentityVectors, top: int) -> np.ndarray:
        """Characters the ANN indexes propose: those of the nearest references by appearance
        and by face, ``_ANN_CANDIDATES`` × top of each; each is then scored exactly with all
        its references (a set)."""
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
        refs = np.unique(np.concatenate([np.asarray(k, dtype=np.int64) for k in found]))
        return np.unique(self._ref_character[refs])

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
    """Positions of the ``count`` smallest finite values, and of every value tying the
    last one (infinite values — no face, no appearance set — are never among them)."""
    finite = np.isfinite(values)
    if not finite.all():  # partitioning the finite ones only is the cheaper
        kept = np.flatnonzero(finite)
        return kept[_smallest(values[kept], count)]
    if count >= len(values):
        return np.arange(len(values))
    cut = np.partition(values, count - 1)[count - 1]
    return np.flatnonzero(values <= cut)


def _segment_norms(
    vectors: np.ndarray, starts: np.ndarray, mask: np.ndarray | None, block: int = 65_536
) -> np.ndarray:
    """The length of each segment's sum of ``vectors`` (rows ``mask`` selects), segments
    starting at ``starts``; computed a block of segments at a time (a million references'
    sums at once would be gigabytes)."""
    norms = np.zeros(len(starts))
    ends = np.r_[starts[1:], len(vectors)]
    if len(starts) == len(vectors):  # one vector a segment: its own length
        lengths = np.sqrt(np.einsum("ij,ij->i", vectors, vectors).astype(np.float64))
        return lengths if mask is None else lengths * mask
    for first in range(0, len(starts), block):
        last = min(first + block, len(starts))
        rows = vectors[starts[first] : ends[last - 1]].astype(np.float64)
        if mask is not None:
            rows = rows * mask[starts[first] : ends[last - 1], None]
        sums = np.add.reduceat(rows, starts[first:last] - starts[first], axis=0)
        norms[first:last] = np.sqrt(np.einsum("ij,ij->i", sums, sums))
    return norms


def _logistic(curve: Any, x: np.ndarray) -> np.ndarray:
    z = curve.intercept + curve.slope * x
    return np.where(z < -60, 0.0, 100.0 / (1.0 + np.exp(-np.clip(z, -60, 60))))
