"""Face identity: dlib face embeddings, checked on real labelled photos where they are available.

Tests that need dlib skip (with the reason) when it is not installed; the ones about the
module itself, the JSON form and the distance maths run everywhere. Tests that need the
shared photos (``../shared/eval/faces``, never copied into the repository) skip without them.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import random
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from castbook.errors import (
    CastbookError,
    FieldError,
    ImageError,
    ImageTooLargeError,
    MissingDependencyError,
)
from castbook.evaluation import faces
from castbook.evaluation.faces import (
    FaceEmbedder,
    FaceEmbedding,
    best_match_distance,
    faces_available,
    load_face_embedder,
)

SAME = faces.SAME_PERSON_DISTANCE


def shared_eval_dir() -> Path:
    """``/work/shared/eval`` for a checkout at ``/work/main``: beside the repository."""
    return Path(__file__).resolve().parents[2] / "shared" / "eval"


def float32_vector(seed: int, size: int = 128) -> tuple[float, ...]:
    rng = random.Random(seed)
    values = [rng.uniform(-0.3, 0.3) for _ in range(size)]
    return struct.unpack(f"{size}f", struct.pack(f"{size}f", *values))


def embedding(seed: int, box: tuple[int, int, int, int] = (1, 2, 30, 40)) -> FaceEmbedding:
    return FaceEmbedding(vector=float32_vector(seed), box=box)


# -- without dlib ----------------------------------------------------------------------------


def test_importing_faces_does_not_import_dlib() -> None:
    probe = (
        "import json, sys\n"
        "import castbook.evaluation.faces\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    modules = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert "castbook" in modules
    assert not modules & {"dlib", "face_recognition_models", "_dlib_pybind11"}


def test_json_round_trip_is_exact() -> None:
    original = embedding(1, box=(-3, 0, 250, 301))
    text = json.dumps(original.to_json())
    restored = FaceEmbedding.from_json(json.loads(text))
    assert restored == original
    assert restored.vector == original.vector  # bit for bit: float32 values survive JSON
    assert restored.to_json() == original.to_json()


def test_from_json_rounds_to_float32() -> None:
    data = embedding(2).to_json()
    data["vector"] = [0.1] * 128  # 0.1 is not a float32 value
    restored = FaceEmbedding.from_json(data)
    assert restored.vector[0] == struct.unpack("f", struct.pack("f", 0.1))[0]
    assert FaceEmbedding.from_json(json.loads(json.dumps(restored.to_json()))) == restored


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vector": [0.0] * 127}, "vector"),
        ({"vector": [0.0] * 127 + [float("nan")]}, "vector"),
        ({"vector": [0.0] * 127 + ["1"]}, "vector"),
        ({"vector": [0.0] * 127 + [1e39]}, "vector"),
        ({"vector": None}, "vector"),
        ({"box": [1, 2, 3]}, "box"),
        ({"box": [1, 2, 3, 4.5]}, "box"),
        ({"box": [True, 2, 3, 4]}, "box"),
        ({"model": "some_other_model"}, "model"),
    ],
)
def test_from_json_rejects_malformed_data(change: dict, field: str) -> None:
    data = {**embedding(3).to_json(), **change}
    with pytest.raises(FieldError) as caught:
        FaceEmbedding.from_json(data)
    assert caught.value.field == field
    assert isinstance(caught.value, CastbookError)


def test_from_json_rejects_non_objects() -> None:
    with pytest.raises(FieldError):
        FaceEmbedding.from_json([1, 2, 3])  # type: ignore[arg-type]


def test_distance_is_euclidean_and_symmetric() -> None:
    a, b = embedding(4), embedding(5)
    expected = math.sqrt(sum((x - y) ** 2 for x, y in zip(a.vector, b.vector, strict=True)))
    assert a.distance(b) == pytest.approx(expected)
    assert b.distance(a) == pytest.approx(expected)
    assert a.distance(a) == 0.0


@pytest.mark.parametrize("size", [0, 127, 129])
def test_distance_checks_dimensions(size: int) -> None:
    wrong = FaceEmbedding(vector=(0.0,) * size, box=(0, 0, 1, 1))
    with pytest.raises(ValueError, match="128"):
        embedding(6).distance(wrong)
    with pytest.raises(ValueError, match="128"):
        wrong.distance(embedding(6))


def test_best_match_distance() -> None:
    reference = [embedding(7)]
    near = FaceEmbedding(vector=tuple(v + 0.01 for v in reference[0].vector), box=(0, 0, 9, 9))
    far = embedding(8)
    assert best_match_distance([], [far]) is None
    assert best_match_distance(reference, []) is None
    assert best_match_distance(reference, [far, near]) == pytest.approx(reference[0].distance(near))
    assert best_match_distance([far, reference[0]], [near]) == pytest.approx(
        reference[0].distance(near)
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"detect_side": 10}, "detect_side"),
        ({"detect_side": 640.0}, "detect_side"),
        ({"fast_side": 40}, "fast_side"),
        ({"fast_side": "256"}, "fast_side"),
        ({"max_upsample": -1}, "max_upsample"),
        ({"max_upsample": 9}, "max_upsample"),
        ({"max_upsample": True}, "max_upsample"),
    ],
)
def test_embedder_checks_its_settings(kwargs: dict, field: str) -> None:
    with pytest.raises(FieldError) as caught:
        FaceEmbedder(**kwargs)
    assert caught.value.field == field


def test_missing_dlib_is_a_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    monkeypatch.setattr(faces, "_embedders", {})
    assert faces_available() is False
    with pytest.raises(MissingDependencyError) as caught:
        load_face_embedder()
    assert caught.value.extra == "faces"
    assert "dlib" in str(caught.value)
    assert faces._embedders == {}  # nothing half-made is cached


def test_missing_models_are_a_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faces, "_MODELS_PACKAGE", "castbook_no_such_models_package")
    assert faces_available() is False
    with pytest.raises(MissingDependencyError) as caught:
        FaceEmbedder()
    assert caught.value.extra == "faces"
    assert "pip install 'castbook[faces]'" in str(caught.value)


def test_model_folder_without_the_files_is_a_missing_dependency(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    package = tmp_path / "castbook_fake_face_models"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(faces, "_MODELS_PACKAGE", package.name)
    with pytest.raises(MissingDependencyError):
        faces._models_dir()


# -- with dlib -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    pytest.importorskip("dlib", reason="face scoring needs dlib: pip install 'castbook[faces]'")
    try:
        return load_face_embedder()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def photo_dir() -> Path:
    folder = shared_eval_dir() / "faces"
    if not (folder / "labels.csv").is_file():
        pytest.skip(f"shared evaluation photos not found at {folder}")
    return folder


@pytest.fixture(scope="module")
def labels(photo_dir: Path) -> dict[str, str]:
    with open(photo_dir / "labels.csv", newline="") as handle:
        return {row["file"]: row["identity"] for row in csv.DictReader(handle)}


def open_photo(folder: Path, name: str) -> Image.Image:
    with Image.open(folder / name) as opened:
        return ImageOps.exif_transpose(opened).convert("RGB")


@pytest.fixture(scope="module")
def photo_embeddings(
    embedder: FaceEmbedder, photo_dir: Path, labels: dict[str, str]
) -> dict[str, list[FaceEmbedding]]:
    return {name: embedder.embed(open_photo(photo_dir, name)) for name in labels}


def one_per_person(labels: dict[str, str], count: int) -> list[str]:
    firsts: dict[str, str] = {}
    for name in sorted(labels):
        firsts.setdefault(labels[name], name)
    return sorted(firsts.values())[:count]


def roc_auc(positives: list[float], negatives: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def test_real_photos_tell_people_apart(
    photo_embeddings: dict[str, list[FaceEmbedding]],
    labels: dict[str, str],
    record_property: pytest.RecordProperty,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = sorted(name for name, found in photo_embeddings.items() if not found)
    with_face = sorted(name for name, found in photo_embeddings.items() if found)
    same: list[float] = []
    different: list[float] = []
    for a, b in itertools.combinations(with_face, 2):
        distance = best_match_distance(photo_embeddings[a], photo_embeddings[b])
        assert distance is not None
        (same if labels[a] == labels[b] else different).append(distance)
    auc = roc_auc([-d for d in same], [-d for d in different])
    same_ok = sum(d < SAME for d in same) / len(same)
    different_ok = sum(d > SAME for d in different) / len(different)
    report = (
        f"faces found in {len(with_face)}/{len(labels)} photos (none in: {missing or '-'}); "
        f"AUC {auc:.4f}; same-person pairs < {SAME}: {same_ok:.1%} of {len(same)}; "
        f"different-person pairs > {SAME}: {different_ok:.1%} of {len(different)}"
    )
    record_property("faces_report", report)
    with capsys.disabled():
        print(f"\n[faces] {report}")
    assert len(with_face) >= 0.9 * len(labels), report
    assert auc >= 0.99, report
    assert same_ok >= 0.9, report
    assert different_ok >= 0.95, report


def test_real_photo_embeddings_are_well_formed(
    photo_embeddings: dict[str, list[FaceEmbedding]], photo_dir: Path
) -> None:
    for name, found in photo_embeddings.items():
        if not found:
            continue
        with Image.open(photo_dir / name) as opened:
            width, height = ImageOps.exif_transpose(opened).size
        for face in found:
            assert len(face.vector) == 128
            assert all(isinstance(v, float) and math.isfinite(v) for v in face.vector)
            left, top, right, bottom = face.box
            assert 0 <= left < right <= width and 0 <= top < bottom <= height, name
        restored = FaceEmbedding.from_json(json.loads(json.dumps(found[0].to_json())))
        assert restored == found[0]


def test_box_is_in_original_pixels(embedder: FaceEmbedder, photo_dir: Path) -> None:
    photo = open_photo(photo_dir, "img33.jpg")  # 2048×2048: detection runs on a smaller copy
    half = photo.resize((photo.width // 2, photo.height // 2), Image.Resampling.LANCZOS)
    (big,) = embedder.embed(photo)
    (small,) = embedder.embed(half)
    face_width = big.box[2] - big.box[0]
    assert face_width > 0.2 * photo.width  # a portrait: the box is no sliver
    for a, b in zip(big.box, small.box, strict=True):
        assert abs(a - 2 * b) <= 0.1 * face_width
    assert big.distance(small) < 0.4


def test_small_face_is_found_by_upsampling(
    embedder: FaceEmbedder, photo_dir: Path, photo_embeddings: dict[str, list[FaceEmbedding]]
) -> None:
    # At a quarter of its size this photo's face is ~50 px wide: under the detector's 80 px
    # window, so only an upsampled retry finds it.
    photo = open_photo(photo_dir, "img37.jpg")
    quarter = photo.resize((photo.width // 4, photo.height // 4), Image.Resampling.LANCZOS)
    no_upsampling = FaceEmbedder(max_upsample=0)
    assert no_upsampling.embed(quarter) == []
    found = embedder.embed(quarter)
    assert len(found) == 1
    left, top, right, bottom = found[0].box
    assert 0 <= left < right <= quarter.width and 0 <= top < bottom <= quarter.height
    assert right - left < 80
    assert found[0].distance(photo_embeddings["img37.jpg"][0]) < SAME


def _on_canvas(photo: Image.Image, side: int) -> Image.Image:
    """``photo`` shrunk to at most ``side`` pixels, low on a grey 1024×1024 canvas."""
    canvas = Image.new("RGB", (1024, 1024), (128, 128, 128))
    small = photo.copy()
    small.thumbnail((side, side))
    canvas.paste(small, (60, 1024 - small.height - 40))
    return canvas


def test_fast_pass_finds_a_large_face_and_falls_back_for_a_small_one(
    embedder: FaceEmbedder, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = open_photo(photo_dir, "img18.jpg")
    without_fast_pass = FaceEmbedder(fast_side=None)
    scales: list[float] = []
    detect = embedder._detect

    def spy(pixels, picture, scale, levels, reduced):  # type: ignore[no-untyped-def]
        scales.append(scale)
        return detect(pixels, picture, scale, levels, reduced)

    monkeypatch.setattr(embedder, "_detect", spy)
    # A face filling the picture: the 256 px pass finds it, and nothing else runs.
    (large,) = embedder.embed(_on_canvas(photo, 1024))
    assert scales == [0.25]
    # The box differs a little from the 512 px pass's, and so does the embedding: the
    # calibrated curve reads ~0.05 as the same person without doubt.
    (reference,) = without_fast_pass.embed(_on_canvas(photo, 1024))
    assert large.distance(reference) < 0.1
    # A ~150 px face: too small for the fast pass, found by the 512 px pass, exactly as
    # without the fast pass.
    scales.clear()
    small = embedder.embed(_on_canvas(photo, 400))
    assert scales == [0.25, 0.5]
    assert small == without_fast_pass.embed(_on_canvas(photo, 400))
    assert small[0].distance(reference) < SAME


def test_passes_after_the_first_search_only_the_sizes_it_could_not_find(
    embedder: FaceEmbedder,
) -> None:
    # 1024 px: the 256 px pass searches its whole pyramid, the 512 px pass and the full-size
    # retry (each twice as fine) the 4 levels (5/6 apart) below the sizes already searched.
    assert embedder._passes(1024) == [(0.25, None), (0.5, 4), (1.0, 4)]
    assert FaceEmbedder(fast_side=None)._passes(1024) == [(0.5, None), (1.0, 4)]
    # 700 px: the retry is full size, 700/512 finer than the 512 px pass: 2 levels.
    assert embedder._passes(700) == [(256 / 700, None), (512 / 700, 4), (1.0, 2)]
    # 300 px: no shrinking for the 512 pass; the retry is dlib's 2× upsampling.
    assert embedder._passes(300) == [(256 / 300, None), (1.0, 1), (2.0, 4)]


def test_a_detector_limited_to_the_top_levels_finds_small_faces_only(
    embedder: FaceEmbedder, photo_dir: Path
) -> None:
    import dlib
    import numpy as np

    photo = open_photo(photo_dir, "img18.jpg")
    full = faces._new_detector(dlib, None)
    limited = faces._new_detector(dlib, 4)
    assert limited is not full and isinstance(limited, type(full))
    # A ~75 px face on a 512 px picture: in the top 4 levels, found with the same box.
    small = np.asarray(_on_canvas(photo, 400).reduce(2))
    assert [str(r) for r in limited(small, 0)] == [str(r) for r in full(small, 0)] != []
    # A ~200 px face: only levels further down the pyramid see it.
    large = np.asarray(_on_canvas(photo, 1024).reduce(2))
    assert len(full(large, 0)) == 1
    assert len(limited(large, 0)) == 0


def test_a_detector_stored_another_way_searches_every_level(
    photo_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dlib = pytest.importorskip("dlib")
    import numpy as np

    monkeypatch.setattr(faces, "_ALL_LEVELS", b"not in dlib's bytes")
    faces._warn_full_pyramid.cache_clear()
    large = np.asarray(_on_canvas(open_photo(photo_dir, "img18.jpg"), 1024).reduce(2))
    with caplog.at_level("WARNING", logger=faces.__name__):
        detector = faces._new_detector(dlib, 4)
    assert len(detector(large, 0)) == 1
    assert "unknown layout" in caplog.text
    faces._warn_full_pyramid.cache_clear()


def test_the_scorer_shrinks_a_picture_once_for_detection_and_hashes(
    embedder: FaceEmbedder, photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from castbook.evaluation.features import load_for_scoring

    assert embedder.first_reduce_factor(1024, 1024) == 4
    assert embedder.first_reduce_factor(1000, 800) is None  # 1000/256: not a whole factor
    assert FaceEmbedder(fast_side=None).first_reduce_factor(2048, 1024) == 4
    picture = _on_canvas(open_photo(photo_dir, "img18.jpg"), 1024)
    loaded = load_for_scoring(picture, name="p", full=True, face_embedder=embedder)
    assert list(loaded.reduced_by) == [4]
    assert loaded.reduced_by[4].tobytes() == picture.reduce(4).tobytes()
    assert loaded.reduced.tobytes() == picture.reduce(4).reduce(2).tobytes()
    # Detection searches that copy (no shrinking of its own) and finds exactly what it finds
    # when it makes the copy itself.
    shrunk: list[float] = []
    shrink = faces._shrink
    monkeypatch.setattr(faces, "_shrink", lambda p, s: shrunk.append(s) or shrink(p, s))
    with_copy = embedder.embed_located([embedder.locate(picture, reduced=loaded.reduced_by)])
    assert shrunk == []
    assert with_copy == [embedder.embed(picture)] and shrunk == [0.25]
    # A picture that is not searched as it is (here: grey marked transparent, so composited
    # over white) never takes the caller's copies.
    keyed = picture.copy()
    keyed.info["transparency"] = (128, 128, 128)
    black = {4: Image.new("RGB", (256, 256))}
    assert embedder.embed_located([embedder.locate(keyed, reduced=black)]) == [
        embedder.embed(keyed)
    ]
    assert embedder.embed(keyed) != []
    # Without a face embedder (hashes only, or the learned embedding alone) nothing changes.
    plain = load_for_scoring(picture, name="p", full=True)
    assert plain.reduced_by == {} and plain.reduced.tobytes() == picture.reduce(8).tobytes()


def test_faces_found_before_detect_v3_are_never_reused() -> None:
    """Stored features and identity vectors are keyed by how faces were found: v3 moved some
    boxes (block-averaged detection copies), so features stored by v2 are computed again."""
    from castbook.evaluation.features import features_key

    key = features_key(faces=True, learned_model=None)
    assert faces.PIPELINE_ID == "detect-v3" and faces.PIPELINE_ID in key
    assert "detect-v2" not in key


def test_shrinking_for_detection_averages_whole_blocks() -> None:
    picture = Image.effect_noise((1024, 768), 60).convert("RGB")
    assert faces._shrink(picture, 0.25).tobytes() == picture.reduce(4).tobytes()
    odd = faces._shrink(picture, 256 / 1024 * 0.9)  # not a whole factor: reduce, then resize
    assert odd.size == (230, 173)


@pytest.mark.parametrize(
    "picture",
    [
        Image.new("RGB", (640, 480), (200, 150, 120)),
        Image.linear_gradient("L").resize((700, 500)).convert("RGB"),
        Image.new("L", (300, 200), 90),
        Image.new("RGBA", (64, 64), (0, 0, 0, 0)),
        Image.new("RGB", (1, 1), (0, 0, 0)),
    ],
    ids=["flat", "gradient", "grey", "transparent", "one-pixel"],
)
def test_picture_without_a_face(embedder: FaceEmbedder, picture: Image.Image) -> None:
    assert embedder.embed(picture) == []


def test_two_faces_side_by_side(
    embedder: FaceEmbedder,
    photo_dir: Path,
    labels: dict[str, str],
    photo_embeddings: dict[str, list[FaceEmbedding]],
) -> None:
    people: dict[str, list[str]] = {}
    for name in sorted(labels):
        if photo_embeddings[name]:
            people.setdefault(labels[name], []).append(name)
    first, second = [person for person, names in sorted(people.items()) if len(names) >= 2][:2]
    left_photo = open_photo(photo_dir, people[first][0])
    right_photo = open_photo(photo_dir, people[second][0])
    # The right-hand person is drawn larger, so the result's order is known.
    left_photo.thumbnail((500, 500))
    right_photo.thumbnail((800, 800))
    canvas = Image.new("RGB", (500 + 800, 800), (128, 128, 128))
    canvas.paste(left_photo, (0, 0))
    canvas.paste(right_photo, (500, 0))

    found = embedder.embed(canvas)
    assert len(found) == 2
    larger, smaller = found
    assert (larger.box[2] - larger.box[0]) >= (smaller.box[2] - smaller.box[0])
    assert larger.box[0] >= 500 > smaller.box[2]  # the large face is the right-hand one

    reference_left = photo_embeddings[people[first][1]]
    reference_right = photo_embeddings[people[second][1]]
    assert best_match_distance(reference_left, found) == pytest.approx(
        reference_left[0].distance(smaller)
    )
    assert best_match_distance(reference_right, found) == pytest.approx(
        reference_right[0].distance(larger)
    )
    assert reference_left[0].distance(smaller) < SAME < reference_left[0].distance(larger)
    assert reference_right[0].distance(larger) < SAME < reference_right[0].distance(smaller)


@pytest.fixture(scope="module")
def sample_photos(photo_dir: Path, labels: dict[str, str]) -> list[tuple[str, Image.Image]]:
    return [(name, open_photo(photo_dir, name)) for name in one_per_person(labels, 8)]


def test_horizontal_flip_keeps_identity(
    embedder: FaceEmbedder,
    sample_photos: list[tuple[str, Image.Image]],
    photo_embeddings: dict[str, list[FaceEmbedding]],
) -> None:
    for name, photo in sample_photos:
        flipped = embedder.embed(ImageOps.mirror(photo))
        assert flipped, name
        assert best_match_distance(photo_embeddings[name], flipped) < 0.4, name


def test_jpeg_reencoding_keeps_identity(
    embedder: FaceEmbedder,
    sample_photos: list[tuple[str, Image.Image]],
    photo_embeddings: dict[str, list[FaceEmbedding]],
) -> None:
    for name, photo in sample_photos:
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=60)
        with Image.open(io.BytesIO(buffer.getvalue())) as reopened:
            reencoded = embedder.embed(reopened)
        assert reencoded, name
        assert best_match_distance(photo_embeddings[name], reencoded) < 0.4, name


@pytest.fixture(scope="module")
def portrait(photo_dir: Path) -> Image.Image:
    photo = open_photo(photo_dir, "img18.jpg")
    photo.thumbnail((512, 512))
    return photo


def test_input_kinds_give_the_same_face(embedder: FaceEmbedder, portrait: Image.Image) -> None:
    import numpy as np

    (reference,) = embedder.embed(portrait)
    pixels = np.asarray(portrait)
    rgba = portrait.convert("RGBA")
    same_pictures = {
        "numpy RGB": pixels,
        "RGBA opaque": rgba,
        "numpy RGBA opaque": np.asarray(rgba),
        "palette": portrait.quantize(256).convert("P"),
    }
    for kind, picture in same_pictures.items():
        found = embedder.embed(picture)
        assert len(found) == 1, kind
        tolerance = 0.15 if kind == "palette" else 1e-6
        assert found[0].distance(reference) < tolerance, kind
    grey = portrait.convert("L")
    for kind, picture in {"L": grey, "numpy grey": np.asarray(grey)}.items():
        found = embedder.embed(picture)
        assert len(found) == 1, kind
        assert found[0].distance(reference) < 0.4, kind
    assert embedder.embed(np.asarray(grey)) == embedder.embed(grey)


def test_contiguous_rgb_array_is_used_without_copying() -> None:
    np = pytest.importorskip("numpy")
    pixels = np.zeros((20, 30, 3), dtype=np.uint8)
    assert faces._as_rgb(pixels)[0] is pixels
    strided = pixels[:, ::-1]  # a view that is not C-contiguous: copied once, and usable
    converted = faces._as_rgb(strided)[0]
    assert converted.flags.c_contiguous and converted.shape == (20, 30, 3)


def test_non_contiguous_array_works(embedder: FaceEmbedder, portrait: Image.Image) -> None:
    import numpy as np

    mirrored_view = np.asarray(portrait)[:, ::-1]
    assert not mirrored_view.flags.c_contiguous
    (from_view,) = embedder.embed(mirrored_view)
    (from_image,) = embedder.embed(ImageOps.mirror(portrait))
    assert from_view == from_image


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda np: np.zeros((10, 10, 3), dtype=np.float32), ImageError),
        (lambda np: np.zeros((10, 10, 2), dtype=np.uint8), ImageError),
        (lambda np: np.zeros((2, 10, 10, 3), dtype=np.uint8), ImageError),
        (lambda np: np.zeros((0, 10, 3), dtype=np.uint8), ImageTooLargeError),
        (lambda np: "a picture.png", ImageError),
    ],
    ids=["float", "two-channels", "batch", "empty", "a-path"],
)
def test_unusable_input_is_an_image_error(embedder: FaceEmbedder, make, error) -> None:
    import numpy as np

    with pytest.raises(error):
        embedder.embed(make(np))


def test_empty_pillow_image_is_an_image_error(embedder: FaceEmbedder) -> None:
    with pytest.raises(ImageTooLargeError):
        embedder.embed(Image.new("RGB", (0, 0)))


def test_load_face_embedder_is_one_shared_instance(
    embedder: FaceEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_face_embedder() is embedder
    assert faces_available() is True
    monkeypatch.setattr(faces, "_embedders", {})
    made: list[FaceEmbedder] = []
    start = threading.Barrier(6)

    def load() -> None:
        start.wait()
        made.append(load_face_embedder())

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 6
    assert all(instance is made[0] for instance in made)


def test_threads_can_share_an_embedder(embedder: FaceEmbedder, portrait: Image.Image) -> None:
    pictures = [portrait, ImageOps.mirror(portrait), portrait.rotate(5), Image.new("RGB", (99, 99))]
    expected = [embedder.embed(picture) for picture in pictures]
    results: dict[int, list[list[FaceEmbedding]]] = {}

    def work(worker: int) -> None:
        results[worker] = [embedder.embed(picture) for picture in pictures * 2]

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[worker] == expected * 2 for worker in range(3))
