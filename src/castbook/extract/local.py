"""The offline local analyser: what can be measured honestly around a detected face.

Used when no vision-language model provider is configured. It finds the largest face with
dlib (the ``faces`` extra) and measures colours only:

* **skin**: the median CIELAB colour of the mid-face (between the eyes and the mouth,
  inside the face box), named by its individual typology angle
  ``ITA = atan2(L* - 50, b*)`` in degrees (Chardon et al. 1991). Photos are lit and
  white-balanced, so the classic six classes are merged into four families:

  ========  ====================
  family    ITA (degrees)
  ========  ====================
  light     > 41
  medium    28 .. 41
  tan       10 .. 28
  dark      <= 10
  ========  ====================

* **hair**: a band above the face box (from 0.65 to 0.2 face heights above its top, which
  dlib puts at the eyebrows, so the forehead is mostly skipped; the face's width). Its
  pixels are grouped into 3 colour clusters (k-means in CIELAB, deterministic start);
  clusters that look like the skin or like the picture's border (the background) are
  dropped and the largest remaining cluster is named as a hair colour family (see
  :func:`_hair_name`). When the band is mostly outside the picture, or nothing but skin
  and background is left (a bald head, or hair the colour of the background), hair is
  "unknown" rather than a guess.

* **clothing**: a band below the chin (0.5 to 1.75 face heights below the box, twice the
  face's width), skin-like pixels dropped, named as its one or two dominant colours.

Eyes, face shape and body cannot be measured honestly from colours: they stay "unknown",
and accessories / distinctive features stay empty. Without the ``faces`` extra, or when no
face is found, nothing is measured at all (whole-picture colours would be mostly
background) and the note says why.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from castbook.extract.schema import UNKNOWN, Extraction, PhysicalGuess
from castbook.images import open_image

if TYPE_CHECKING:
    import numpy as np

__all__ = ["analyse_locally"]

_PREFIX = "Local analyser (no vision-language model configured): "
# Colour analysis runs on a copy whose longest side is at most this many pixels.
_WORK_SIDE = 1024
_SAMPLE_PIXELS = 4000  # k-means sees at most this many pixels of a region
_HAIR_BAND = (0.65, 0.2)  # face heights above the box's top (it is at the eyebrows)
_CLOTHING_BAND = (0.5, 1.75)  # face heights below the box
_SKIN_DELTA = 14.0  # CIELAB ΔE under which a pixel looks like the measured skin
_BACKGROUND_DELTA = 12.0  # ΔE under which a cluster looks like the picture's border
_MIN_SHARE = 0.15  # a hair / clothing cluster must hold at least this share of its band
# Skin families by ITA angle (degrees), lowest bound first.
_SKIN_FAMILIES = ((41.0, "light"), (28.0, "medium"), (10.0, "tan"), (-math.inf, "dark"))
_ALWAYS_UNKNOWN = ("physical.eyes", "physical.face", "physical.body")


def analyse_locally(image_bytes: bytes) -> Extraction:
    """Propose the fields the local analyser can measure from ``image_bytes``.

    Raises :class:`castbook.errors.ImageError` (subclasses) for data that is not a usable
    image. Deterministic: the same bytes give the same answer.
    """
    import numpy as np
    from PIL import Image

    from castbook.evaluation.faces import faces_available, load_face_embedder

    picture = open_image(image_bytes).convert("RGB")
    if max(picture.size) > _WORK_SIDE:
        picture = picture.copy()
        picture.thumbnail((_WORK_SIDE, _WORK_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if not faces_available():
        return _without_face("the faces extra (dlib) is not installed, so no face was looked for")
    # The precise detection: hair and skin are measured in regions placed by the face box.
    faces = load_face_embedder(fast_detection=False).embed(picture)
    if not faces:
        return _without_face("no face was found")
    rgb = np.asarray(picture, dtype=np.uint8)
    lab = _rgb_to_lab(rgb)
    box = faces[0].box
    skin_lab = _skin_colour(lab, box)
    skin = _skin_name(skin_lab) if skin_lab is not None else UNKNOWN
    hair = _hair(lab, box, skin_lab)
    clothing = _clothing(lab, box, skin_lab)
    return _result(hair=hair, skin=skin, clothing=clothing, found=len(faces))


# -- the three measurements ------------------------------------------------------------------


def _skin_colour(lab: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
    """Median Lab of the mid-face: the box's middle half across, 30–50 % down.

    dlib's box runs from the eyebrows to the chin: that strip is the cheeks and nose under
    the eyes, above the mouth and any moustache.
    """
    import numpy as np

    left, top, right, bottom = box
    width, height = right - left, bottom - top
    region = _crop(
        lab,
        left + 0.25 * width,
        top + 0.30 * height,
        right - 0.25 * width,
        top + 0.50 * height,
    )
    if region.shape[0] < 4:
        return None
    return np.median(region, axis=0)


def _hair(lab: np.ndarray, box: tuple[int, int, int, int], skin: np.ndarray | None) -> str:
    left, top, right, bottom = box
    height = bottom - top
    far, near = _HAIR_BAND
    band_top, band_bottom = top - far * height, top - near * height
    inside = (band_bottom - max(band_top, 0.0)) / (band_bottom - band_top)
    if inside < 0.5:  # the face touches the top edge: the hair is not in the picture
        return UNKNOWN
    pixels = _crop(lab, left, band_top, right, band_bottom)
    colour = _dominant(pixels, skin, _background(lab, box))
    return _hair_name(colour[0]) if colour else UNKNOWN


def _clothing(lab: np.ndarray, box: tuple[int, int, int, int], skin: np.ndarray | None) -> str:
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    first, last = _CLOTHING_BAND
    y0, y1 = bottom + first * height, bottom + last * height
    x0, x1 = left - 0.5 * width, right + 0.5 * width
    image_height = lab.shape[0]
    inside = (min(y1, image_height) - y0) / (y1 - y0)
    if inside < 0.25:  # the picture ends at the chin
        return UNKNOWN
    pixels = _crop(lab, x0, y0, x1, y1)
    colours = _dominant(pixels, skin, None, keep=2)
    names: list[str] = []
    for colour in colours:
        name = _colour_name(colour)
        if name not in names:
            names.append(name)
    return ", ".join(names) if names else UNKNOWN


# -- clustering ------------------------------------------------------------------------------


def _dominant(
    pixels: np.ndarray,
    skin: np.ndarray | None,
    background: np.ndarray | None,
    *,
    keep: int = 1,
) -> list[np.ndarray]:
    """The centres of the largest clusters that are neither skin nor background.

    Each kept cluster holds at least ``_MIN_SHARE`` of the band's pixels; ``[]`` if none.
    """
    import numpy as np

    if pixels.shape[0] < 20:
        return []
    total = pixels.shape[0]
    if skin is not None:
        pixels = pixels[np.linalg.norm(pixels - skin, axis=1) >= _SKIN_DELTA]
    if pixels.shape[0] < max(20, _MIN_SHARE * total):
        return []
    centres, shares = _kmeans(pixels, 3)
    kept: list[tuple[float, np.ndarray]] = []
    for centre, share in zip(centres, shares, strict=True):
        count = share * pixels.shape[0]  # pixels of the band (skin removed) in this cluster
        if count < _MIN_SHARE * total:
            continue
        if background is not None and (
            np.linalg.norm(background - centre, axis=1).min() < _BACKGROUND_DELTA
        ):
            continue
        kept.append((count, centre))
    kept.sort(key=lambda item: -item[0])
    return [centre for _, centre in kept[:keep]]


def _kmeans(pixels: np.ndarray, k: int, rounds: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Plain k-means, started from L* quantiles: deterministic. Returns centres and shares."""
    import numpy as np

    if pixels.shape[0] > _SAMPLE_PIXELS:
        step = pixels.shape[0] / _SAMPLE_PIXELS
        pixels = pixels[(np.arange(_SAMPLE_PIXELS) * step).astype(int)]
    order = np.argsort(pixels[:, 0], kind="stable")
    starts = [order[int((i + 0.5) * len(order) / k)] for i in range(k)]
    centres = pixels[starts].astype(np.float64)
    labels = np.zeros(len(pixels), dtype=int)
    for _ in range(rounds):
        distances = np.linalg.norm(pixels[:, None, :] - centres[None, :, :], axis=2)
        labels = distances.argmin(axis=1)
        for i in range(k):
            members = pixels[labels == i]
            if len(members):
                centres[i] = members.mean(axis=0)
    shares = np.bincount(labels, minlength=k) / max(1, len(pixels))
    return centres, shares


def _background(lab: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Colours of the picture's border above the chin: the top rows and the side columns."""
    import numpy as np

    height, width = lab.shape[:2]
    edge = max(2, round(0.03 * min(height, width)))
    bottom = min(height, max(box[3], edge + 1))
    strips = [
        lab[:edge].reshape(-1, 3),
        lab[:bottom, :edge].reshape(-1, 3),
        lab[:bottom, width - edge :].reshape(-1, 3),
    ]
    border = np.concatenate(strips)
    centres, shares = _kmeans(border, 4)
    return centres[shares >= 0.1]


def _crop(lab: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """The Lab pixels of a rectangle, clipped to the picture, as an (N, 3) array."""
    height, width = lab.shape[:2]
    left, right = max(0, round(x0)), min(width, round(x1))
    top, bottom = max(0, round(y0)), min(height, round(y1))
    if right <= left or bottom <= top:
        return lab[:0, :0].reshape(0, 3)
    return lab[top:bottom, left:right].reshape(-1, 3)


# -- naming ----------------------------------------------------------------------------------


def _skin_name(lab: np.ndarray) -> str:
    lightness, _, yellow = (float(v) for v in lab)
    ita = math.degrees(math.atan2(lightness - 50.0, yellow))
    return next(name for bound, name in _SKIN_FAMILIES if ita > bound)


def _lch(lab: np.ndarray) -> tuple[float, float, float]:
    lightness, a, b = (float(v) for v in lab)
    return lightness, math.hypot(a, b), math.degrees(math.atan2(b, a)) % 360.0


def _hair_name(lab: np.ndarray) -> str:
    """A hair colour family from CIELAB lightness L*, chroma C* and hue angle h.

    Natural hair sits at hues of about 25–95° (orange to yellow) with modest chroma:
    C* > 30 outside that range is a dyed colour (blue, pink, green…); red/auburn is a warm
    (h < 50°) chroma over 22 below L* 60. Grey/white is nearly neutral and not dark
    (C* < 10 with L* > 55, or C* < 4 with L* > 45). Otherwise by lightness, as photographed
    (the dominant cluster includes the shading of the hair): black < 20 <= dark brown < 30
    <= brown < 42 <= light brown < 52 <= blonde. Checked on the shared evaluation photos.
    """
    lightness, chroma, hue = _lch(lab)
    if chroma > 30 and not 25 <= hue <= 95:
        return _hue_name(hue)
    if chroma > 22 and hue < 50 and lightness < 60:
        return "red/auburn"
    if (chroma < 10 and lightness > 55) or (chroma < 4 and lightness > 45):
        return "grey/white"
    for bound, name in ((20, "black"), (30, "dark brown"), (42, "brown"), (52, "light brown")):
        if lightness < bound:
            return name
    return "blonde"


def _hue_name(hue: float) -> str:
    """A saturated colour's name from its CIELAB hue angle (degrees)."""
    for bound, name in (
        (20, "pink"),
        (50, "red"),
        (75, "orange"),
        (100, "yellow"),
        (165, "green"),
        (250, "teal"),
        (300, "blue"),
        (335, "purple"),
        (360, "pink"),
    ):
        if hue < bound:
            return name
    return "pink"


def _colour_name(lab: np.ndarray) -> str:
    """A plain clothing colour name: neutrals by lightness, others by hue, dark/light."""
    lightness, chroma, hue = _lch(lab)
    if chroma < 12:
        if lightness < 22:
            return "black"
        if lightness < 45:
            return "dark grey"
        if lightness < 75:
            return "grey"
        return "white"
    if 40 <= hue < 100 and chroma < 45 and lightness < 60:
        return "brown" if lightness >= 25 else "dark brown"
    if 40 <= hue < 100 and chroma < 30 and lightness >= 60:
        return "beige"
    name = _hue_name(hue)
    if lightness < 30:
        return f"dark {name}"
    if lightness > 75:
        return f"light {name}"
    return name


# -- assembling the answer -------------------------------------------------------------------


def _result(*, hair: str, skin: str, clothing: str, found: int) -> Extraction:
    measured = []
    if hair != UNKNOWN:
        measured.append(f"hair colour {hair} (band above the face)")
    if skin != UNKNOWN:
        measured.append(f"skin tone {skin} (median colour of the mid-face)")
    if clothing != UNKNOWN:
        measured.append(f"clothing colours {clothing} (band below the chin)")
    unfilled = [
        field
        for field, value in (
            ("physical.hair", hair),
            ("physical.skin", skin),
            ("clothing", clothing),
        )
        if value == UNKNOWN
    ]
    unfilled = _order_unfilled([*unfilled, *_ALWAYS_UNKNOWN])
    faces = "1 face" if found == 1 else f"{found} faces (measured the largest)"
    note = (
        f"{_PREFIX}found {faces}; measured "
        + ("; ".join(measured) if measured else "nothing reliable")
        + ". Could not determine: "
        + ", ".join(unfilled)
        + " (colours only; eyes, face shape, body, accessories and distinctive features"
        " are never guessed)."
    )
    parts = []
    if hair != UNKNOWN:
        parts.append(f"{hair} hair")
    if skin != UNKNOWN:
        parts.append(f"{skin} skin")
    if clothing != UNKNOWN:
        parts.append(f"wearing {clothing}")
    return Extraction(
        note=note,
        physical=PhysicalGuess(hair=hair, skin=skin),
        clothing=clothing,
        style_prompt=", ".join(parts),
        source="local",
        unfilled=unfilled,
    )


def _without_face(reason: str) -> Extraction:
    unfilled = _order_unfilled(["physical.hair", "physical.skin", "clothing", *_ALWAYS_UNKNOWN])
    return Extraction(
        note=(
            f"{_PREFIX}{reason}; hair, skin and clothing are measured around a face, so "
            "nothing was filled in (whole-picture colours would mostly be the background). "
            "Could not determine: " + ", ".join(unfilled) + "."
        ),
        source="local",
        unfilled=unfilled,
    )


_FIELD_ORDER = (
    "description",
    "physical.hair",
    "physical.eyes",
    "physical.face",
    "physical.body",
    "physical.skin",
    "clothing",
    "accessories",
    "distinctive_features",
)


def _order_unfilled(fields: list[str]) -> list[str]:
    """Unfilled fields in the schema's order; the description (who the character is),
    accessories and features are always listed: colours cannot tell them."""
    wanted = {*fields, "description", "accessories", "distinctive_features"}
    return [field for field in _FIELD_ORDER if field in wanted]


# -- colour space ----------------------------------------------------------------------------


def _rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (uint8, H×W×3) to CIELAB (D65), float32."""
    import numpy as np

    c = rgb.astype(np.float32) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    matrix = np.array(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ],
        dtype=np.float32,
    )
    xyz = c @ matrix.T
    xyz /= np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    lightness = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1).astype(np.float32)
