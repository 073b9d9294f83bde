"""Identity search over one owner's library: keeping the stored index current, searching it,
and the "looks like Alice (score 93)" check when references are added.

Features come from a :class:`FeatureSource`: the CLI computes them in-process
(:class:`LocalFeatures`), the API in its evaluation worker processes. A reference image's
vectors are computed once — from the features the library already keeps for it when there
are some, else from its bytes — and stored (``castbook.library.identity_vectors``); a search
reads stored vectors only. Each process keeps the index it built per owner and feature key,
with the owner's change counter (``identity_revisions``, bumped by database triggers) at
the time: a search reads that one row, and only when it moved looks for unindexed images
and reloads the index.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from castbook.errors import CastbookError, InvalidInputError
from castbook.evaluation.features import ImageFeatures
from castbook.evaluation.identity import (
    OPEN_SET_THRESHOLDS,
    IdentityIndex,
    IdentityMatch,
    IdentityVectors,
    is_known,
)
from castbook.library import Character, CharacterLibrary
from castbook.library import identity_vectors as stored
from castbook.settings import Settings

__all__ = [
    "FeatureSource",
    "Identification",
    "IdentitySearch",
    "LocalFeatures",
    "Lookalike",
]


class FeatureSource(Protocol):
    """Computes images' features; ``key`` names what they contain (``Scorer.key``)."""

    def key(self) -> str: ...

    def features(
        self, images: Sequence[tuple[bytes, str]]
    ) -> tuple[str, list[ImageFeatures | CastbookError]]: ...


class LocalFeatures:
    """Features computed in this process by one shared scorer (the CLI)."""

    _lock = threading.Lock()
    _scorer: Any = None

    def key(self) -> str:
        return str(self._shared_scorer().key)

    def features(
        self, images: Sequence[tuple[bytes, str]]
    ) -> tuple[str, list[ImageFeatures | CastbookError]]:
        scorer = self._shared_scorer()
        results: list[ImageFeatures | CastbookError] = []
        with self._lock:  # the face model is not safe to share between threads
            for data, name in images:
                try:
                    results.append(scorer.features(data, name))
                except CastbookError as exc:
                    results.append(exc)
        return scorer.key, results

    @classmethod
    def _shared_scorer(cls) -> Any:
        with cls._lock:
            if cls._scorer is None:
                from castbook.evaluation.shared import _default_scorer

                cls._scorer = _default_scorer()
            return cls._scorer


@dataclass(frozen=True)
class Identification:
    """One query image's answer: ranked matches (names filled in) and whether the best one
    reaches the open-set threshold."""

    source: str
    matches: list[dict[str, Any]]
    known: bool
    error: str | None = None

    @property
    def best(self) -> dict[str, Any] | None:
        return self.matches[0] if self.known and self.matches else None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "source": self.source,
            "known": self.known,
            "character": self.best,
            "matches": self.matches,
        }
        if self.error is not None:
            data["error"] = self.error
        return data


@dataclass(frozen=True)
class Lookalike:
    """A reference of ``character`` that already matches ``other`` above the open-set
    threshold."""

    character: str
    other_id: str
    other: str
    score: float
    image: str  # the new reference's sha256

    @property
    def message(self) -> str:
        return f"{self.character} looks like {self.other} (score {self.score:.0f})"

    def to_json(self) -> dict[str, Any]:
        return {
            "character": self.character,
            "looks_like": {"id": self.other_id, "name": self.other},
            "score": self.score,
            "image": self.image,
            "message": self.message,
        }


log = logging.getLogger("castbook.evaluation")

_BATCH = 16  # reference images per feature request
# Rounds of "index what is missing" before a reload when other writers keep adding: the
# index loaded after them is cached under a revision they moved on from, so the next search
# looks again.
_INDEXING_ROUNDS = 3
# Loaded indexes by (database, owner, key), least recently searched first, and the revision
# of the owner's library each was loaded at. Bounded by CASTBOOK_IDENTIFY_CACHE_REFERENCES
# (references of all owners together): a server with many owners does not keep every
# owner's index for ever.
_cache_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str, str], tuple[int, IdentityIndex]] = OrderedDict()
_loading: dict[tuple[str, str, str], threading.Lock] = {}


def _remember(cache_key: tuple[str, str, str], revision: int, index: IdentityIndex) -> None:
    """Cache ``index``, dropping the least recently searched others while the references
    held exceed the budget (the newest is kept whatever its size)."""
    budget = Settings.from_env().identify_cache_references
    with _cache_lock:
        _cache[cache_key] = (revision, index)
        _cache.move_to_end(cache_key)
        held = sum(cached.references for _, cached in _cache.values())
        while held > budget and len(_cache) > 1:
            dropped_key, (_, dropped) = _cache.popitem(last=False)
            held -= dropped.references
            log.info(
                "identity index of %s (%d references) dropped from memory: over %d held",
                dropped_key[1],
                dropped.references,
                budget,
            )


class IdentitySearch:
    """One owner's identity search for one feature key."""

    def __init__(self, library: CharacterLibrary, source: FeatureSource, key: str) -> None:
        self.library = library
        self.source = source
        self.key = key

    @classmethod
    def for_queries(
        cls,
        library: CharacterLibrary,
        source: FeatureSource,
        images: Sequence[tuple[bytes, str]],
    ) -> tuple[IdentitySearch, list[ImageFeatures | CastbookError]]:
        """Compute the query images' features first: their key says which index to search."""
        key, features = source.features(images)
        return cls(library, source, key), features

    # ---- the stored index ----------------------------------------------------------------

    def update_index(self, character_ids: Iterable[str] | None = None) -> int:
        """Store vectors of every reference image (of ``character_ids``, or all) that has
        none yet; returns how many were added. Features the library already keeps for an
        image are used; only the others are computed from the image."""
        missing = stored.unindexed_images(self.library, self.key, character_ids)
        if not missing:
            return 0
        vectors: list[tuple[stored.UnindexedImage, bytes, bytes | None]] = []
        to_compute: list[stored.UnindexedImage] = []
        for image in missing:
            payload = stored.cached_features(self.library, image.sha256, self.key)
            if payload is None:
                to_compute.append(image)
            else:
                vectors.append((image, *_vector_bytes(ImageFeatures.from_json(payload))))
        added = stored.store_vectors(self.library, self.key, vectors)
        # In batches: a worker request stays inside the evaluation pixel budget (16 stored
        # references are at most 38 MP), and what is done is kept if a later batch fails.
        for start in range(0, len(to_compute), _BATCH):
            batch = to_compute[start : start + _BATCH]
            images = [
                (self.library.blobs.get(image.sha256), f"{image.character_name} reference")
                for image in batch
            ]
            key, computed = self.source.features(images)
            if key != self.key:
                raise CastbookError(f"features came with key {key!r}, expected {self.key!r}")
            vectors = []
            for image, features in zip(batch, computed, strict=True):
                if isinstance(features, CastbookError):
                    continue  # stored references were checked on upload; never seen fail
                stored.cache_features(self.library, image.sha256, key, features.to_json())
                vectors.append((image, *_vector_bytes(features)))
            added += stored.store_vectors(self.library, self.key, vectors)
        return added

    def index(self) -> IdentityIndex:
        """The owner's index for this key, current as of this call: the owner's change
        counter is read (one row); only when it moved since the cached index was loaded are
        unindexed references indexed and the index reloaded."""
        cache_key = (self.library.database.url, self.library.owner, self.key)
        revision = stored.index_revision(self.library)
        cached = self._cached(cache_key, revision)
        if cached is not None:
            return cached
        with _cache_lock:
            loading = _loading.setdefault(cache_key, threading.Lock())
        # One reload per owner and key at a time (a million references take a minute):
        # searches that find the index stale meanwhile wait for it.
        with loading:
            for _ in range(_INDEXING_ROUNDS):
                revision = stored.index_revision(self.library)
                cached = self._cached(cache_key, revision)
                if cached is not None:
                    return cached
                # Read before looking: whatever is added after it moves the counter on.
                if not self.update_index():
                    break
            rows = stored.load_vectors(self.library, self.key)
            index = IdentityIndex(
                [
                    (row.character_id, IdentityVectors.from_bytes(row.appearance, row.faces))
                    for row in rows
                ],
                labels=[row.sha256 for row in rows],
            )
            _remember(cache_key, revision, index)
            return index

    @staticmethod
    def _cached(cache_key: tuple[str, str, str], revision: int) -> IdentityIndex | None:
        with _cache_lock:
            cached = _cache.get(cache_key)
            if cached is None or cached[0] != revision:
                return None
            _cache.move_to_end(cache_key)  # searched now: the last to be dropped
            return cached[1]

    # ---- searching -----------------------------------------------------------------------

    def identify(
        self, queries: Sequence[tuple[str, ImageFeatures | CastbookError]], top: int = 3
    ) -> list[Identification]:
        """Each query's ``top`` characters; ``known`` when the best reaches the threshold."""
        if top < 1:
            raise InvalidInputError(f"top must be at least 1, got {top}")
        index = self.index()
        found: list[tuple[str, list[IdentityMatch] | str]] = []
        for source, features in queries:
            if isinstance(features, CastbookError):
                found.append((source, str(features)))
            else:
                found.append((source, index.search(IdentityVectors.of(features), top)))
        ids = {m.character_id for _, matches in found if isinstance(matches, list) for m in matches}
        names = stored.character_names(self.library, ids)
        answers = []
        for source, matches in found:
            if isinstance(matches, str):
                answers.append(Identification(source, [], False, error=matches))
                continue
            # A character deleted since the index was loaded is left out.
            kept = [match for match in matches if match.character_id in names]
            answers.append(
                Identification(
                    source,
                    [_match_json(match, names) for match in kept],
                    bool(kept) and is_known(kept[0]),
                )
            )
        return answers

    @classmethod
    def check_added(
        cls, library: CharacterLibrary, source: FeatureSource, characters: Sequence[Character]
    ) -> list[Lookalike]:
        """After ``characters`` were added or given new references: store their vectors and
        say which references already match another of the owner's characters."""
        with_images = [c for c in characters if c.images]
        if not with_images:
            return []
        search = cls(library, source, source.key())
        ids = [c.id for c in with_images]
        if not stored.has_other_references(library, ids):
            search.update_index(ids)  # nothing to look like yet
            return []
        return search.lookalikes(with_images)

    def lookalikes(self, characters: Sequence[Character]) -> list[Lookalike]:
        """References of ``characters`` (just added or changed) that already match another
        of the owner's characters above the open-set threshold. Indexes them first."""
        ids = {c.id for c in characters}
        if not ids:
            return []
        # Indexes the other characters' references too: they are what is compared with.
        index = self.index()

        rows = stored.load_vectors(self.library, self.key, ids)
        if not rows or len(index) <= 1:
            return []
        candidates: list[tuple[stored.StoredVectors, IdentityMatch]] = []
        for row in rows:
            query = IdentityVectors.from_bytes(row.appearance, row.faces)
            candidates += [
                (row, m) for m in index.search(query, 3, exclude=ids) if _alike(index, query, m)
            ]
        names = stored.character_names(
            self.library, ids | {match.character_id for _, match in candidates}
        )
        found: dict[tuple[str, str], Lookalike] = {}
        for row, match in candidates:
            if match.character_id not in names or row.character_id not in names:
                continue  # deleted meanwhile
            pair = (row.character_id, match.character_id)
            if pair not in found or found[pair].score < match.score:
                found[pair] = Lookalike(
                    names[row.character_id],
                    match.character_id,
                    names[match.character_id],
                    match.score,
                    row.sha256,
                )
        return sorted(found.values(), key=lambda item: (item.character, -item.score))


def _alike(index: IdentityIndex, query: IdentityVectors, match: IdentityMatch) -> bool:
    """Whether a new reference looks like a stored one enough to warn: known on its basis,
    and, for a face match, alike in appearance too. The face model sees drawn faces of one
    simple style as one face (the quick start's Alice and Bob score 100 by face, 90 by
    appearance): a warning that cries wolf is worse than one missed."""
    if not is_known(match):
        return False
    if match.basis != "face":
        return True
    return index.appearance_score(query, match) >= OPEN_SET_THRESHOLDS["appearance"]


def _vector_bytes(features: ImageFeatures) -> tuple[bytes, bytes | None]:
    return IdentityVectors.of(features).to_bytes()


def _match_json(match: IdentityMatch, names: dict[str, str]) -> dict[str, Any]:
    return {
        "id": match.character_id,
        "name": names[match.character_id],
        "score": match.score,
        "basis": match.basis,
        "known": is_known(match),
        "reference": match.label,
    }
