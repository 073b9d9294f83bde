"""The appearance descriptor (castbook.evaluation.appearance): unit and metamorphic tests.

A synthetic character (hair, face, eyes, ribbon on a background) stands in for an
illustration: edits that keep the character (mirror, JPEG, brightness, crop, shift) keep the
similarity high; recolouring the hair drops it a lot. One test measures ROC AUC on the shared
anime crops (../shared/eval/anime) and is skipped where that folder is absent.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from castbook.evaluation.appearance import (
    APPEARANCE_VERSION,
    DESCRIPTOR_SIDE,
    DIMENSIONS,
    AppearanceDescriptor,
    describe_appearance,
)

EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval"

TEAL = (40, 190, 190)
ORANGE = (235, 120, 40)
SKIN = (255, 228, 210)


def character(hair=TEAL, eyes=(40, 90, 220), ribbon=(220, 30, 40), bg=(235, 240, 250), side=128):
    """A crude anime-style head: background, hair mass with side locks, face, eyes, ribbon."""
    im = Image.new("RGB", (side, side), bg)
    d = ImageDraw.Draw(im)
    s = side / 128
    d.ellipse([18 * s, 8 * s, 110 * s, 110 * s], fill=hair, outline=(20, 20, 20))
    d.rectangle([14 * s, 50 * s, 34 * s, 127 * s], fill=hair)  # side locks
    d.rectangle([94 * s, 50 * s, 114 * s, 127 * s], fill=hair)
    d.ellipse([34 * s, 40 * s, 94 * s, 112 * s], fill=SKIN, outline=(20, 20, 20))
    d.rectangle([36 * s, 38 * s, 92 * s, 56 * s], fill=hair)  # fringe
    for x in (44, 70):
        d.ellipse([x * s, 62 * s, (x + 14) * s, 80 * s], fill=eyes, outline=(10, 10, 10))
        d.ellipse([(x + 3) * s, 64 * s, (x + 7) * s, 69 * s], fill=(255, 255, 255))
    d.polygon([(40 * s, 10 * s), (64 * s, 22 * s), (88 * s, 10 * s), (64 * s, 30 * s)], fill=ribbon)
    d.arc([56 * s, 90 * s, 72 * s, 100 * s], 20, 160, fill=(150, 60, 60))
    return im


def jpeg(im: Image.Image, quality: int = 75) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def sim(a: Image.Image, b: Image.Image) -> float:
    return describe_appearance(a).similarity(describe_appearance(b))


@pytest.fixture(scope="module")
def teal() -> Image.Image:
    return character()


def test_descriptor_shape_and_unit_norm(teal: Image.Image) -> None:
    d = describe_appearance(teal)
    assert d.version == APPEARANCE_VERSION
    assert len(d.values) == DIMENSIONS
    assert all(isinstance(v, float) for v in d.values)
    assert np.linalg.norm(d.values) == pytest.approx(1.0)


def test_identical_is_one_and_symmetric(teal: Image.Image) -> None:
    a = describe_appearance(teal)
    b = describe_appearance(character(hair=ORANGE))
    assert a.similarity(a) == 1.0
    assert a.similarity(describe_appearance(teal.copy())) == 1.0
    assert a.similarity(b) == b.similarity(a)
    assert 0.0 <= a.similarity(b) <= 1.0


def test_array_and_pil_inputs_agree(teal: Image.Image) -> None:
    assert describe_appearance(np.asarray(teal)) == describe_appearance(teal)
    assert describe_appearance(teal.convert("RGBA")) == describe_appearance(teal)


def test_small_input_is_upsampled() -> None:
    small = character(side=DESCRIPTOR_SIDE // 2)
    assert sim(small, character()) > 0.9


EDITS = {
    "mirror": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "jpeg75": jpeg,
    "jpeg40": lambda im: jpeg(im, 40),
    "darker": lambda im: ImageEnhance.Brightness(im).enhance(0.75),
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.25),
    "crop80": lambda im: im.crop((13, 13, 115, 115)),
    "shift10": lambda im: im.crop((13, 13, 128, 128)),
    "downscale": lambda im: im.resize((64, 64), Image.Resampling.LANCZOS),
    "non-square": lambda im: im.resize((128, 110), Image.Resampling.BILINEAR),
}


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
@pytest.mark.parametrize("hair", [TEAL, ORANGE, (30, 30, 35), (110, 70, 40)], ids=str)
def test_edits_keep_the_character(edit, hair) -> None:
    original = character(hair=hair)
    edited = edit(original)
    s = sim(original, edited)
    assert s > 0.8
    # and the edited copy is still far closer to its original than to a recoloured character
    other = character(hair=(200, 60, 160) if hair != (200, 60, 160) else TEAL)
    assert s > sim(edited, other) + 0.2


def test_mirror_is_exact(teal: Image.Image) -> None:
    assert sim(teal, teal.transpose(Image.Transpose.FLIP_LEFT_RIGHT)) == pytest.approx(1.0)


@pytest.mark.parametrize("hair", [ORANGE, (30, 30, 35), (240, 200, 60), (150, 80, 200)], ids=str)
def test_other_hair_colour_drops_similarity(teal: Image.Image, hair) -> None:
    recoloured = character(hair=hair)
    # 0.66 is about the similarity that only 5 % of different anime characters reach
    assert sim(teal, recoloured) < 0.66
    assert sim(teal, recoloured) < sim(teal, jpeg(teal)) - 0.3


def test_eye_colour_matters_less_than_hair_but_counts(teal: Image.Image) -> None:
    other_eyes = character(eyes=(200, 40, 40))
    other_hair = character(hair=ORANGE)
    assert sim(teal, other_hair) < sim(teal, other_eyes) < sim(teal, jpeg(teal))


def test_background_change_matters_less_than_hair(teal: Image.Image) -> None:
    other_bg = character(bg=(250, 230, 180))
    assert sim(teal, other_bg) > sim(teal, character(hair=ORANGE)) + 0.3


def test_json_round_trip_is_exact(teal: Image.Image) -> None:
    d = describe_appearance(teal)
    back = AppearanceDescriptor.from_json(json.loads(json.dumps(d.to_json())))
    assert back == d
    assert back.values == d.values
    assert back.similarity(d) == 1.0


def test_version_mismatch_raises(teal: Image.Image) -> None:
    d = describe_appearance(teal)
    data = d.to_json()
    data["version"] = "appearance-v0"
    with pytest.raises(ValueError):
        AppearanceDescriptor.from_json(data)
    old = dataclasses.replace(d, version="appearance-v0")
    with pytest.raises(ValueError):
        d.similarity(old)
    with pytest.raises(ValueError):
        old.similarity(d)


@pytest.mark.parametrize(
    "data",
    [
        {"version": APPEARANCE_VERSION, "values": [0.0] * (DIMENSIONS - 1)},
        {"version": APPEARANCE_VERSION, "values": "abc"},
        {"version": APPEARANCE_VERSION, "values": [float("nan")] * DIMENSIONS},
        {"version": APPEARANCE_VERSION, "values": [True] * DIMENSIONS},
        {"version": APPEARANCE_VERSION},
        ["not", "a", "mapping"],
    ],
)
def test_bad_json_raises(data) -> None:
    with pytest.raises(ValueError):
        AppearanceDescriptor.from_json(data)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), dtype=np.uint8),
        np.zeros((10, 10, 3), dtype=np.float32),
        np.zeros((0, 10, 3), dtype=np.uint8),
        "image.png",
    ],
    ids=["grey", "float", "empty", "str"],
)
def test_bad_images_raise(bad) -> None:
    with pytest.raises(ValueError):
        describe_appearance(bad)


def test_flat_images_are_handled() -> None:
    for colour in ((0, 0, 0), (255, 255, 255), (128, 128, 128), (255, 0, 0)):
        d = describe_appearance(Image.new("RGB", (64, 64), colour))
        assert len(d.values) == DIMENSIONS
        assert all(np.isfinite(d.values))
        assert d.similarity(d) == 1.0


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = scores[positive], scores[~positive]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


@pytest.mark.skipif(not (EVAL / "anime" / "labels.csv").exists(), reason="../shared/eval absent")
def test_anime_identity_auc() -> None:
    with open(EVAL / "anime" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ids = np.array([r["identity"] for r in rows])
    x = np.array([describe_appearance(Image.open(EVAL / "anime" / r["file"])).values for r in rows])
    iu = np.triu_indices(len(ids), 1)
    scores = (x @ x.T)[iu]
    positive = (ids[:, None] == ids[None, :])[iu]
    assert _auc(scores, positive) >= 0.85
