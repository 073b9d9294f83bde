"""The offline local analyser: honest colour measurements around a detected face.

The photo tests use the shared evaluation photos (../shared/eval/faces) and dlib; they skip
when either is absent. The expected values below were written down by looking at each photo
(not by running the analyser): the hair colour family and skin family most people would
agree with. Where a photo is ambiguous, the neighbouring family is accepted too, and why is
said next to it. The analyser must agree on most photos, not all: it sees colours only, in
photos with very different lighting.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import pytest

from castbook.extract.local import analyse_locally
from castbook.extract.schema import UNKNOWN, Extraction

FACES_DIR = Path(__file__).resolve().parents[2] / "shared" / "eval" / "faces"

BLONDE = {"blonde", "light brown"}  # "light brown / dark blonde" is one ambiguous family
DARK = {"black", "dark brown"}  # very dark brown hair photographs as black

# photo: (acceptable hair families, acceptable skin families, what a person sees)
EXPECTED: dict[str, tuple[set[str], set[str], str]] = {
    "img3.jpg": (BLONDE, {"light"}, "long blonde hair with darker roots, light skin"),
    "img6.jpg": (DARK, {"light"}, "dark brown hair pulled back, light skin"),
    "img9.jpg": (BLONDE, {"light"}, "golden blonde curled hair, light skin"),
    "img11.jpg": (DARK, {"light"}, "long dark brown / near-black hair, light skin"),
    "img12.jpg": (BLONDE, {"light"}, "honey blonde hair, light skin"),
    # Short dark brown hair; in this photo it is dark enough to read as black too.
    "img13.jpg": (DARK | {"brown"}, {"light"}, "short dark brown hair, light skin"),
    "img22.jpg": (BLONDE, {"light"}, "blonde bob, light skin"),
    "img23.jpg": (BLONDE, {"light"}, "blonde bob, light skin"),
    # Brown skin in soft studio light: "medium" or "tan" are both fair.
    "img24.jpg": (DARK, {"medium", "tan"}, "short black hair, brown skin"),
    "img27.jpg": (BLONDE | {"grey/white"}, {"light"}, "platinum (near-white) blonde, light"),
    "img40.jpg": ({"grey/white"}, {"light"}, "grey/silver hair, light skin"),
    "img45.jpg": (DARK, {"light"}, "long black hair, light skin"),
    "img46.jpg": (DARK, {"light"}, "long black hair, light skin"),
    "img48.jpg": (BLONDE, {"light"}, "wavy blonde hair, light skin"),
}
NEVER_MEASURED = ("physical.eyes", "physical.face", "physical.body")


def _faces_ready() -> bool:
    from castbook.evaluation.faces import faces_available

    return FACES_DIR.is_dir() and faces_available()


needs_photos = pytest.mark.skipif(
    not _faces_ready(), reason="needs ../shared/eval/faces and the faces extra (dlib)"
)


@cache
def _analysed(name: str) -> Extraction:
    return analyse_locally((FACES_DIR / name).read_bytes())


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _no_face_image() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 240), (40, 90, 160))
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 40, 200, 200), fill=(220, 200, 30))
    draw.ellipse((180, 60, 300, 180), fill=(200, 40, 40))
    return _png(image)


def _assert_honest(extraction: Extraction) -> None:
    Extraction.model_validate(extraction.model_dump())
    assert extraction.source == "local"
    assert extraction.note.startswith("Local analyser (no vision-language model configured): ")
    # The report is the analyser's note, not the character's description: it is never saved.
    assert extraction.description == UNKNOWN and "description" in extraction.unfilled
    assert extraction.character_fields("X")["description"] == ""
    physical = extraction.physical
    assert (physical.eyes, physical.face, physical.body) == (UNKNOWN, UNKNOWN, UNKNOWN)
    assert extraction.accessories == [] and extraction.distinctive_features == []
    for field in (*NEVER_MEASURED, "accessories", "distinctive_features"):
        assert field in extraction.unfilled
    for field, value in (
        ("physical.hair", physical.hair),
        ("physical.skin", physical.skin),
        ("clothing", extraction.clothing),
    ):
        assert (value == UNKNOWN) == (field in extraction.unfilled), field
        if value != UNKNOWN:
            assert value in extraction.style_prompt
    for word in ("eyes", "body"):
        assert word not in extraction.style_prompt


@needs_photos
def test_hair_and_skin_families_match_what_a_person_sees() -> None:
    hair_hits = skin_hits = 0
    report = []
    for name, (hair_ok, skin_ok, seen) in EXPECTED.items():
        extraction = _analysed(name)
        _assert_honest(extraction)
        hair, skin = extraction.physical.hair, extraction.physical.skin
        hair_hits += hair in hair_ok
        skin_hits += skin in skin_ok
        report.append(f"{name}: hair={hair} skin={skin} (a person sees: {seen})")
    summary = "\n".join(report)
    # Colours only, in very different lighting: most, not all (14 photos).
    assert hair_hits >= 10, summary
    assert skin_hits >= 12, summary


@needs_photos
def test_clothing_colour_below_the_chin_and_style_prompt() -> None:
    extraction = _analysed("img13.jpg")  # a blue crew-neck jumper on a white background
    assert "blue" in extraction.clothing
    assert extraction.style_prompt.startswith(f"{extraction.physical.hair} hair")
    assert f"wearing {extraction.clothing}" in extraction.style_prompt
    assert "found 1 face" in extraction.note


@needs_photos
def test_deterministic() -> None:
    data = (FACES_DIR / "img22.jpg").read_bytes()
    assert analyse_locally(data) == analyse_locally(data)


def test_no_face_leaves_everything_unknown() -> None:
    extraction = analyse_locally(_no_face_image())
    _assert_honest(extraction)
    assert extraction.physical.hair == extraction.physical.skin == UNKNOWN
    assert extraction.clothing == UNKNOWN
    assert extraction.style_prompt == ""
    assert {"physical.hair", "physical.skin", "clothing"} <= set(extraction.unfilled)
    from castbook.evaluation.faces import faces_available

    if faces_available():
        assert "no face was found" in extraction.note
    else:
        assert "faces extra" in extraction.note


def test_without_the_faces_extra_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import castbook.evaluation.faces as faces

    monkeypatch.setattr(faces, "faces_available", lambda: False)
    monkeypatch.setattr(
        faces, "load_face_embedder", lambda **_: pytest.fail("must not look for faces")
    )
    extraction = analyse_locally(_no_face_image())
    _assert_honest(extraction)
    assert "faces extra (dlib) is not installed" in extraction.note
    assert extraction.physical.hair == extraction.physical.skin == extraction.clothing == UNKNOWN


def test_rejects_data_that_is_not_an_image() -> None:
    from castbook.errors import ImageError

    with pytest.raises(ImageError):
        analyse_locally(b"not an image at all")
