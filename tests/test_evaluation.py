"""Consistency Eval: hashes, the score API, calibration, videos and parallel scoring."""

from __future__ import annotations

import io
import math
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from castbook.errors import CastbookError, ImageError
from castbook.evaluation import (
    ImageHash,
    Scorer,
    average_hash,
    difference_hash,
    most_consistent,
    perceptual_hash,
    rank,
    score,
)
from castbook.evaluation.calibrate import fit_logistic, roc_auc, threshold_at_false_positive_rate
from castbook.evaluation.scoring import Logistic, default_calibration
from tests.support.drawings import ALICE, BOB, character, png_bytes

# ---- hashes --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_hashes_match_imagehash_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(16, 400, size=2)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((int(w) + 7, int(h) + 3))
    assert average_hash(image).hex() == str(imagehash.average_hash(image))
    assert perceptual_hash(image).hex() == str(imagehash.phash(image))
    assert difference_hash(image).hex() == str(imagehash.dhash(image))


def test_ahash_score_is_the_original_formula() -> None:
    a = character((20, 20, 20), (200, 30, 30))
    b = character((200, 150, 40), (30, 30, 200), seed=3)
    expected = 100 * (1 - (imagehash.average_hash(a) - imagehash.average_hash(b)) / 64)
    assert average_hash(a).similarity(average_hash(b)) == pytest.approx(expected)


def test_hash_values_are_typed_and_round_trip() -> None:
    a = average_hash(character((20, 20, 20), (200, 30, 30)))
    assert ImageHash.from_hex("ahash", a.hex()) == a
    assert a.distance(a) == 0 and a.similarity(a) == 100.0
    with pytest.raises(TypeError):
        a.distance(perceptual_hash(character((20, 20, 20), (200, 30, 30))))
    with pytest.raises(ValueError):
        ImageHash("bhash", 1)
    with pytest.raises(ValueError):
        ImageHash.from_hex("ahash", "abc")


# ---- the score ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer(faces=False)


def test_same_character_scores_high_and_a_different_one_low(scorer: Scorer) -> None:
    reference = [scorer.features(character(**ALICE))]
    results = scorer.score(
        reference,
        [character(**ALICE, seed=5), character(**BOB, seed=5)],
        names=["alice-2", "bob"],
    )
    alice, bob = results
    assert alice.basis == "appearance" and alice.score > 80
    assert bob.score < 20
    assert set(alice.components) == {"ahash", "phash", "dhash", "appearance"}
    assert most_consistent(results).source == "alice-2"


@pytest.mark.parametrize(
    "edit",
    [
        ImageOps.mirror,
        lambda im: ImageEnhance.Brightness(im).enhance(1.25),
        lambda im: ImageEnhance.Brightness(im).enhance(0.75),
        lambda im: Image.open(io.BytesIO(png_bytes(im, "JPEG", quality=70))),
        lambda im: im.crop((26, 26, 230, 230)),
    ],
    ids=["flip", "brighter", "darker", "jpeg", "crop80"],
)
def test_edited_copies_score_like_the_same_character(scorer: Scorer, edit: object) -> None:
    original = character(**ALICE)
    reference = [scorer.features(original)]
    same, other = scorer.score(reference, [edit(original), edit(character(**BOB))])  # type: ignore[operator]
    assert same.score > 80
    assert same.score - other.score > 50


def test_score_api_takes_paths_bytes_pil_and_arrays(tmp_path: Path) -> None:
    path = tmp_path / "alice.png"
    path.write_bytes(png_bytes(character(**ALICE)))
    copy = character(**ALICE, seed=2)
    results = score(
        path,
        [str(path), png_bytes(copy), copy, np.asarray(copy), png_bytes(copy, "JPEG", quality=90)],
        faces=False,
    )
    assert [r.source for r in results][:2] == [str(path), "candidate 2"]
    assert all(r.ok for r in results)
    assert results[0].score > 95  # the reference itself
    assert results[2].score == pytest.approx(results[3].score)  # same pixels, PIL vs array


def test_unreadable_candidates_become_error_rows(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    results = score(
        character(**ALICE), [text, character(**ALICE), tmp_path / "gone.png"], faces=False
    )
    assert [r.ok for r in results] == [False, True, False]
    assert "notes.png" in results[0].error and results[0].score is None
    assert "not found" in results[2].error
    assert rank(results)[0].ok and not rank(results)[-1].ok


def test_unreadable_reference_is_an_error(tmp_path: Path) -> None:
    text = tmp_path / "ref.png"
    text.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(ImageError, match=r"ref\.png"):
        score(text, [character(**ALICE)], faces=False)
    with pytest.raises(CastbookError, match="at least one reference"):
        Scorer(faces=False).score([], [character(**ALICE)])


def test_several_references_use_the_best_match(scorer: Scorer) -> None:
    references = [scorer.features(character(**BOB)), scorer.features(character(**ALICE))]
    (result,) = scorer.score(references, [character(**ALICE, seed=9)])
    assert result.reference == 1 and result.score > 80


def test_images_in_memory_are_not_reencoded_or_decoded(
    scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = [scorer.features(character(**ALICE))]
    candidate = character(**ALICE, seed=1)

    def forbidden(*_: object, **__: object) -> None:
        raise AssertionError("an in-memory image was encoded or decoded again")

    monkeypatch.setattr(Image.Image, "save", forbidden)
    monkeypatch.setattr(Image, "open", forbidden)
    (result,) = scorer.score(reference, [candidate])
    assert result.ok


def test_scorer_takes_images_and_features_like_the_module_level_score(
    scorer: Scorer, tmp_path: Path
) -> None:
    # The docs' `with Scorer() as s: s.score("ref.png", paths)` must work, as must features.
    reference = tmp_path / "alice.png"
    reference.write_bytes(png_bytes(character(**ALICE)))
    candidates = [tmp_path / "alice-2.png", tmp_path / "bob.png"]
    candidates[0].write_bytes(png_bytes(character(**ALICE, seed=4)))
    candidates[1].write_bytes(png_bytes(character(**BOB, seed=4)))
    expected = [s.to_json() for s in score(reference, candidates, faces=False)]
    features = scorer.features(reference, str(reference))
    with Scorer(faces=False) as own:
        assert [s.to_json() for s in own.score(str(reference), candidates)] == expected
        assert [s.to_json() for s in own.score(features, candidates)] == expected
        assert [s.to_json() for s in own.score([features], iter(candidates))] == expected
    mixed = scorer.score([character(**BOB), features], [scorer.features(candidates[0])])
    # The references count as a set (reference_set): Bob's drawing among them pulls the score
    # a little below the Alice reference's alone; the best-matching reference is named.
    assert mixed[0].reference == 1 and 90 < mixed[0].score < expected[0]["score"]
    assert mixed[0].source == "candidate 1"
    array = scorer.score(np.asarray(character(**ALICE)), candidates)  # one array, one reference
    assert [s.score for s in array] == [s["score"] for s in expected]


def test_rank_orders_best_first_and_keeps_ties_in_order() -> None:
    from castbook.evaluation import Score

    scores = [Score("a", 50.0), Score("b", None, error="x"), Score("c", 90.0), Score("d", 50.0)]
    assert [s.source for s in rank(scores)] == ["c", "a", "d", "b"]
    assert most_consistent([Score("b", None, error="x")]) is None


def test_video_candidates_are_scored_per_frame(scorer: Scorer, tmp_path: Path) -> None:
    frames = [character(**ALICE, seed=i) for i in range(6)] + [character(**BOB, seed=1)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    reference = [scorer.features(character(**ALICE))]
    (result,) = scorer.score(reference, [gif])
    assert result.ok, result.error
    assert len(result.frames) == 7
    assert result.min_score == pytest.approx(min(result.frames))
    assert result.min_score < 20  # the frame that shows Bob
    assert sum(frame > 80 for frame in result.frames) == 6
    assert result.score == pytest.approx(sum(result.frames) / 7, abs=0.02)


def test_parallel_scoring_gives_the_same_results(scorer: Scorer, tmp_path: Path) -> None:
    paths = []
    for i in range(26):
        path = tmp_path / f"c{i}.jpg"
        path.write_bytes(png_bytes(character(**(ALICE if i % 2 else BOB), seed=i), "JPEG"))
        paths.append(str(path))
    reference = [scorer.features(character(**ALICE))]
    seen = []
    serial = scorer.score(reference, paths, workers=1)
    parallel = scorer.score(reference, paths, workers=2, progress=lambda d, t: seen.append((d, t)))
    assert [s.to_json() for s in serial] == [p.to_json() for p in parallel]
    assert seen[-1] == (26, 26) and len(seen) == 26


def test_module_level_score_keeps_one_worker_pool_between_calls(tmp_path: Path) -> None:
    from castbook.evaluation import scorer as module

    paths = []
    for i in range(24):  # enough files for the worker processes
        path = tmp_path / f"c{i}.png"
        path.write_bytes(png_bytes(character(**(ALICE if i % 2 else BOB), seed=i, size=64)))
        paths.append(path)
    first = score(paths[1], paths, faces=False, workers=2)
    pool = module._kept_scorer(False)._workers
    assert pool is not None
    second = score(paths[1], paths, faces=False, workers=2)
    assert module._kept_scorer(False)._workers is pool  # the same processes, not new ones
    assert [s.to_json() for s in first] == [s.to_json() for s in second]
    assert first[1].score > 95 and first[0].score < 50


def test_workers_start_by_forkserver_not_spawn_when_the_caller_has_threads() -> None:
    import threading

    from castbook.evaluation.scorer import _start_method

    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    helper.start()
    try:
        assert _start_method().get_start_method() == "forkserver"
    finally:
        stop.set()
        helper.join()


def test_jpeg_draft_decoding_keeps_scores_close(scorer: Scorer) -> None:
    # Files are decoded at reduced size for speed; the score must not notice.
    big = character(**ALICE, size=1024)
    reference = [scorer.features(character(**ALICE))]
    from_file, in_memory = scorer.score(reference, [png_bytes(big, "JPEG", quality=95), big])
    assert abs(from_file.score - in_memory.score) < 2
    assert abs(from_file.components["ahash"] - in_memory.components["ahash"]) <= 100 * 3 / 64


# ---- calibration ----------------------------------------------------------------------------


def test_roc_auc_known_values() -> None:
    assert roc_auc([3, 4], [1, 2]) == 1.0
    assert roc_auc([1, 2], [3, 4]) == 0.0
    assert roc_auc([1, 1], [1, 1]) == 0.5
    assert roc_auc([2, 4], [1, 3]) == 0.75
    assert threshold_at_false_positive_rate(list(range(101)), 0.05) == pytest.approx(95)


def test_fit_logistic_recovers_a_known_curve() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 20000)
    truth = Logistic(intercept=-6.0, slope=12.0)
    y = rng.uniform(0, 100, x.size) < np.array([truth(v) for v in x])
    fitted = fit_logistic(x.tolist(), y.tolist(), l2=0.0)
    assert fitted.slope == pytest.approx(12.0, rel=0.1)
    assert fitted.inverse(50) == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError):
        fit_logistic([0.1, 0.2], [True, True])


def test_shipped_calibration_is_sane() -> None:
    calibration = default_calibration()
    # Closer faces and more similar appearance mean higher scores.
    assert calibration.face(0.3) > 90 > 10 > calibration.face(0.9)
    assert calibration.appearance(0.95) > 90 > 10 > calibration.appearance(0.3)
    assert 0.5 < calibration.face.inverse(50) < 0.7
    assert calibration.details["made_by"] == "benchmarks/calibrate_eval.py"
    assert not math.isnan(calibration.appearance.intercept)


EVAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "eval"


def test_photos_are_scored_by_face_identity() -> None:
    pytest.importorskip("dlib")
    if not (EVAL_DIR / "faces" / "labels.csv").is_file():
        pytest.skip(f"{EVAL_DIR} is absent")
    faces = EVAL_DIR / "faces"
    # img1, img2 and img4 show the same person (id01); img3 another one (labels.csv).
    results = score(
        faces / "img1.jpg", [faces / "img2.jpg", faces / "img4.jpg", faces / "img3.jpg"]
    )
    assert [r.basis for r in results] == ["face", "face", "face"]
    assert results[0].score > 90 and results[1].score > 90 and results[2].score < 10
    assert "face" in results[0].components


def test_a_configured_learned_embedding_is_reported_as_a_component(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from castbook.evaluation.learned import load_learned_embedder
    from tests.support.tiny_vision_models import make_tiny_clip

    embedder = load_learned_embedder(make_tiny_clip(tmp_path / "clip"))
    with Scorer(faces=False, learned_embedder=embedder) as scorer:
        assert embedder.name in scorer.key
        reference = [scorer.features(character(**ALICE))]
        same, other = scorer.score(reference, [character(**ALICE), character(**BOB)])
    assert same.components["learned"] == pytest.approx(100.0, abs=0.01)
    assert 0 <= other.components["learned"] <= 100
    # The headline stays the calibrated appearance score.
    assert same.score == same.components["appearance"]


def test_mp4_candidates_are_scored_per_frame(scorer: Scorer, tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg")
    from castbook.generation.base import Video
    from castbook.generation.outputs import write_mp4

    frames = (*(character(**ALICE, seed=i) for i in range(5)), character(**BOB))
    clip = tmp_path / "clip.mp4"
    write_mp4(Video(frames, fps=6), clip)
    reference = [scorer.features(character(**ALICE))]
    (result,) = scorer.score(reference, [clip])
    assert result.ok, result.error
    assert len(result.frames) == 6
    assert result.min_score < 30 and sorted(result.frames)[1] > 70
