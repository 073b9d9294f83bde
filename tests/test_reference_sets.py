"""A character's several references count as a set (castbook.evaluation.reference_set):
by appearance, the best reference's cosine and the centroid's are averaged; faces count
with the best one. `castbook eval --character` (``compare_to_set``, through ``Scorer``) and
`castbook identify` (``IdentityIndex``, exact and approximate) give the same score."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from castbook.errors import InvalidInputError
from castbook.evaluation import Scorer, appearance, compare
from castbook.evaluation.faces import FaceEmbedding
from castbook.evaluation.features import ImageFeatures
from castbook.evaluation.hashes import average_hash, difference_hash, perceptual_hash
from castbook.evaluation.identity import IdentityIndex, IdentityVectors
from castbook.evaluation.reference_set import centroid, set_cosine
from castbook.evaluation.scoring import compare_to_set, default_calibration
from tests.support.drawings import ALICE, BOB, character, drawn_features

CAROL = dict(hair=(120, 40, 160), shirt=(30, 160, 60))
_BASE = character(**ALICE)
_HASHES = dict(
    width=_BASE.width,
    height=_BASE.height,
    ahash=average_hash(_BASE),
    phash=perceptual_hash(_BASE),
    dhash=difference_hash(_BASE),
)


def drawn(person: dict, seed: int = 0) -> ImageFeatures:
    return drawn_features(character(**person, seed=seed))


def from_vector(vector: np.ndarray, faces: np.ndarray | None = None) -> ImageFeatures:
    """Features with a chosen appearance vector (and faces): the hashes do not score."""
    unit = vector / np.linalg.norm(vector)
    descriptor = appearance.AppearanceDescriptor(values=tuple(float(v) for v in unit))
    found = None
    if faces is not None:
        found = tuple(FaceEmbedding(tuple(float(v) for v in row), (0, 0, 10, 10)) for row in faces)
    return ImageFeatures(**_HASHES, appearance=descriptor, faces=found)


def index_of(characters: dict[str, list[ImageFeatures]], **options) -> IdentityIndex:
    return IdentityIndex(
        [(name, IdentityVectors.of(f)) for name, refs in characters.items() for f in refs],
        **options,
    )


def around(query: np.ndarray, cosine: float, direction: np.ndarray) -> np.ndarray:
    """A unit vector at ``cosine`` from the unit ``query``, towards ``direction``."""
    side = direction - (direction @ query) * query
    side /= np.linalg.norm(side)
    return cosine * query + np.sqrt(1 - cosine**2) * side


def test_one_reference_scores_as_the_pair() -> None:
    reference, candidate = drawn(ALICE), drawn(ALICE, 3)
    assert compare_to_set([reference], candidate) == (0, compare(reference, candidate))
    [match] = index_of({"alice": [reference]}).search(IdentityVectors.of(candidate), 1)
    assert match.score == pytest.approx(compare(reference, candidate).score, abs=0.01)
    with pytest.raises(InvalidInputError, match="at least one reference"):
        compare_to_set([], candidate)


def test_a_set_beats_a_closer_single_reference() -> None:
    """Three references each a little less like the query than another character's one
    reference, but like it in three different ways: their centroid is nearer than any of
    them, and the set wins. By its best reference alone it would lose."""
    rng = np.random.default_rng(3)
    query = rng.normal(size=appearance.DIMENSIONS)
    query /= np.linalg.norm(query)
    spread = [around(query, 0.80, rng.normal(size=query.size)) for _ in range(3)]
    single = around(query, 0.83, rng.normal(size=query.size))
    characters = {
        "set": [from_vector(v) for v in spread],
        "single": [from_vector(single)],
    }
    candidate = from_vector(query)
    by_best = {
        name: max(compare(r, candidate).score for r in refs) for name, refs in characters.items()
    }
    assert by_best["single"] > by_best["set"]
    by_set = {name: compare_to_set(refs, candidate)[1] for name, refs in characters.items()}
    assert by_set["set"].score > by_set["single"].score
    assert by_set["single"].score == by_best["single"]
    expected = set_cosine(0.80, float(centroid(np.asarray(spread)) @ query))
    curve = default_calibration().appearance
    assert by_set["set"].score == pytest.approx(curve(0.5 * (1 + expected)), abs=0.01)
    assert by_set["set"].components["appearance"] == by_set["set"].score
    matches = index_of(characters).search(IdentityVectors.of(candidate), 2)
    assert [m.character_id for m in matches] == ["set", "single"]
    assert [m.score for m in matches] == pytest.approx([c.score for c in by_set.values()], abs=0.01)


def test_a_character_with_one_odd_reference_is_still_found() -> None:
    """Alice's third reference is drawn in Carol's colours. Alice redrawn is still Alice,
    above the open-set threshold; Carol redrawn is not taken for Alice when Carol has a
    reference of her own, though the odd one matches her as well as Carol's does."""
    from castbook.evaluation.identity import OPEN_SET_THRESHOLDS

    alice = [drawn(ALICE, 1), drawn(ALICE, 2), drawn(CAROL, 9)]
    library = {"alice": alice, "bob": [drawn(BOB)], "carol": [drawn(CAROL)]}
    index = index_of(library)
    for query, expected in ((drawn(ALICE, 3), "alice"), (drawn(CAROL, 4), "carol")):
        matches = index.search(IdentityVectors.of(query), 3)
        assert matches[0].character_id == expected
        assert matches[0].score >= OPEN_SET_THRESHOLDS["appearance"]
        for match in matches:
            _, want = compare_to_set(library[match.character_id], query)
            assert match.score == pytest.approx(want.score, abs=0.01)
    # The odd reference alone would tie Alice with Carol for Carol's drawing.
    carol_query = drawn(CAROL, 4)
    odd = compare(alice[2], carol_query).score
    assert odd >= compare(library["carol"][0], carol_query).score - 5


def test_faces_count_with_the_best_face() -> None:
    rng = np.random.default_rng(5)
    look = rng.normal(size=appearance.DIMENSIONS)
    face = rng.normal(scale=0.05, size=(1, 128))
    near, far = face + 0.02, face + 0.2
    references = [from_vector(look, far), from_vector(look, near)]
    candidate = from_vector(look, face)
    index, result = compare_to_set(references, candidate)
    assert (index, result) == (1, compare(references[1], candidate))
    assert result.basis == "face"
    [match] = index_of({"p": references}).search(IdentityVectors.of(candidate), 1)
    assert (match.basis, match.reference) == ("face", 1)
    assert match.score == pytest.approx(result.score, abs=0.01)


@pytest.mark.parametrize("approximate", [False, True], ids=["exact", "ann"])
def test_identify_scores_every_character_as_eval_does(approximate: bool) -> None:
    """Random libraries of 1-4 references per character, some with faces and some without,
    queries with and without a face: every score identify returns is compare_to_set's, and
    the reference it names is the one compare_to_set names."""
    rng = np.random.default_rng(11)
    base = rng.normal(size=(40, appearance.DIMENSIONS))
    library: dict[str, list[ImageFeatures]] = {}
    for n in range(40):
        refs = []
        for _ in range(int(rng.integers(1, 5))):
            faces = (
                rng.normal(scale=0.05, size=(1, 128)) if rng.random() < 0.3 else np.zeros((0, 128))
            )
            refs.append(from_vector(base[n] + rng.normal(scale=0.8, size=base.shape[1]), faces))
        library[f"c{n:02d}"] = refs
    index = index_of(library, ann_from=1 if approximate else 1_000_000)
    for q in range(12):
        faces = rng.normal(scale=0.05, size=(1, 128)) if q % 3 == 0 else None
        query = from_vector(base[q] + rng.normal(scale=0.6, size=base.shape[1]), faces)
        matches = index.search(IdentityVectors.of(query), 5, exact=not approximate)
        assert len(matches) == 5
        for match in matches:
            position, want = compare_to_set(library[match.character_id], query)
            assert match.score == pytest.approx(want.score, abs=0.01)
            assert match.basis == want.basis
            assert match.reference == position
        if not approximate:
            everyone = sorted(
                (compare_to_set(refs, query)[1].score for refs in library.values()), reverse=True
            )
            assert [m.score for m in matches] == pytest.approx(everyone[:5], abs=0.01)


def test_scorer_scores_a_character_as_a_set() -> None:
    """`castbook eval --character` (Scorer.score_one): the set's score, the best reference."""
    references = [drawn(ALICE, 1), drawn(ALICE, 2), drawn(CAROL, 9)]
    scorer = Scorer(faces=False)
    candidate = drawn(ALICE, 3)
    result = scorer.score_one(references, candidate, "candidate")
    position, want = compare_to_set(references, candidate)
    assert (result.score, result.reference) == (want.score, position)
    assert result.score != max(compare(r, candidate).score for r in references)
    # A copy of one reference still scores high, though the set is not all like it.
    copy = scorer.score_one(references, replace(references[0]), "copy")
    assert copy.score >= 95
