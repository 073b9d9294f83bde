"""Pillow drawing shared by the storyboard, drift chart and contact sheet: fonts that degrade
gracefully, text wrapping, score colours, and fitting panel images into boxes."""

from __future__ import annotations

import io
import math
import unicodedata
from collections.abc import Callable
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from castbook.images import decode_image

__all__ = [
    "BACKGROUND",
    "BORDER",
    "FAIR",
    "FAIR_FROM",
    "GOOD",
    "GOOD_FROM",
    "INK",
    "MUTED",
    "PANEL_BACKDROP",
    "POOR",
    "RGB",
    "SERIES_COLOURS",
    "Font",
    "draw_star",
    "draw_text",
    "drawable",
    "encode_png",
    "fit_into",
    "flatten",
    "font_for",
    "hex_colour",
    "line_height",
    "load_panel",
    "score_colour",
    "score_label",
    "shrink",
    "text_width",
    "truncate",
    "wrap",
]

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
RGB = tuple[int, int, int]

BACKGROUND: RGB = (255, 255, 255)
PANEL_BACKDROP: RGB = (238, 239, 242)
INK: RGB = (28, 30, 36)
MUTED: RGB = (110, 115, 125)
BORDER: RGB = (206, 209, 215)
GOOD: RGB = (26, 127, 55)  # green, score >= 80
FAIR: RGB = (176, 112, 0)  # amber, 60 <= score < 80
POOR: RGB = (207, 34, 46)  # red, score < 60
# Okabe-Ito, minus the yellow that vanishes on white: distinguishable with colour blindness.
SERIES_COLOURS: tuple[RGB, ...] = (
    (0, 114, 178),
    (230, 159, 0),
    (204, 121, 167),
    (0, 158, 115),
    (86, 180, 233),
    (213, 94, 0),
    (0, 0, 0),
)

GOOD_FROM = 80.0
FAIR_FROM = 60.0

# Tried in order; the first that exists wins. Names are looked up by Pillow in the system's
# font folders, paths are tried as they are.
_REGULAR_FONTS = ("DejaVuSans.ttf", "Arial.ttf", "arial.ttf", "LiberationSans-Regular.ttf")
_BOLD_FONTS = ("DejaVuSans-Bold.ttf", "Arial Bold.ttf", "arialbd.ttf", "LiberationSans-Bold.ttf")
# Fonts with Chinese, Japanese and Korean glyphs, as (file, face index): the Noto collection
# holds JP, KR, SC, TC, HK in that order, and castbook's users write Simplified Chinese most.
_WIDE_FONTS = (
    ("wqy-microhei.ttc", 0),
    ("NotoSansCJK-Regular.ttc", 2),
    ("NotoSansCJKsc-Regular.otf", 0),
    ("wqy-zenhei.ttc", 0),
    ("DroidSansFallbackFull.ttf", 0),
    ("msyh.ttc", 0),
    ("PingFang.ttc", 0),
    ("Arial Unicode.ttf", 0),
)
# A code point no font draws: what a font renders for it is its "missing glyph" box.
_NEVER_DRAWN = "\U000f0000"


def score_label(score: float) -> str:
    # Whole numbers, rounded as `castbook story render`'s table rounds them; the colour goes
    # by the exact score, as the consistency gate does.
    return f"{score:.0f}"


def score_colour(score: float | None) -> RGB:
    if score is None:
        return MUTED
    if score >= GOOD_FROM:
        return GOOD
    return FAIR if score >= FAIR_FROM else POOR


def hex_colour(colour: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def font_for(text: str, size: int, *, bold: bool = False) -> Font:
    """The first available font that draws every character of ``text``.

    Without any font file on the machine this is Pillow's built-in font, which may draw
    missing-glyph boxes for scripts it lacks; it never fails.
    """
    chain = _font_chain(size, bold)
    for font in chain:
        if all(_draws(font, char) for char in set(text)):
            return font
    return chain[0]


def drawable(text: str, font: Font) -> str:
    """``text`` as ``font`` can be asked to draw it: Pillow's bitmap font (used only where
    FreeType is missing) takes Latin-1 alone and raises on anything else."""
    if isinstance(font, ImageFont.FreeTypeFont):
        return text
    return text.encode("latin-1", "replace").decode("latin-1")


def text_width(text: str, font: Font) -> float:
    return float(font.getlength(drawable(text, font))) if text else 0.0


def line_height(font: Font) -> int:
    if isinstance(font, ImageFont.FreeTypeFont):
        ascent, descent = font.getmetrics()
        return math.ceil((ascent + descent) * 1.12)
    return 13


def draw_text(
    draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: Font, fill: RGB | int
) -> None:
    draw.text(xy, drawable(text, font), font=font, fill=fill)


def wrap(text: str, max_width: float, measure: Callable[[str], float]) -> list[str]:
    """Greedy word wrap; a word wider than a line (or unspaced CJK) is broken between
    characters. Line breaks in ``text`` are kept."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if measure(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for char in word:
                if line and measure(line + char) > max_width:
                    lines.append(line)
                    line = ""
                line += char
        lines.append(line)
    return lines


def truncate(
    lines: list[str], max_lines: int, max_width: float, measure: Callable[[str], float]
) -> list[str]:
    """At most ``max_lines`` lines; when some are dropped the last kept one ends in "…"."""
    if len(lines) <= max_lines:
        return lines
    kept = lines[:max_lines]
    last = kept[-1].rstrip()
    while last and measure(last + "…") > max_width:
        last = last[:-1].rstrip()
    kept[-1] = last + "…"
    return kept


def load_panel(data: bytes, *, source: str, side: int) -> Image.Image:
    """Decode untrusted image bytes (castbook's limits and errors) into RGB, transparency
    flattened onto white, reduced cheaply when it is much larger than ``side``."""
    return flatten(decode_image(data, source=source, reduce_to=side).image)


def flatten(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (a plain convert turns it black)."""
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image if image.mode == "RGB" else image.convert("RGB")


def fit_into(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` scaled to fit ``width``×``height`` whole, centred on a neutral backdrop."""
    scale = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    scaled = image if size == image.size else shrink(image, size)
    box = Image.new("RGB", (width, height), PANEL_BACKDROP)
    box.paste(scaled, ((width - size[0]) // 2, (height - size[1]) // 2))
    return box


def shrink(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    # A box reduction first, then Lanczos for the last factor of 3: looks the same as pure
    # Lanczos and takes a fraction of the time on large panels.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def draw_star(
    draw: ImageDraw.ImageDraw, centre: tuple[float, float], radius: float, fill: RGB
) -> None:
    # Drawn as a polygon, not a "★" glyph: the fallback fonts do not all have one.
    cx, cy = centre
    points = []
    for index in range(10):
        r = radius if index % 2 == 0 else radius * 0.45
        angle = math.pi / 2 + index * math.pi / 5
        points.append((cx + r * math.cos(angle), cy - r * math.sin(angle)))
    draw.polygon(points, fill=fill)


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # Level 3 is several times faster than the default on large sheets, for a few % more bytes.
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


@lru_cache(maxsize=64)
def _font_chain(size: int, bold: bool) -> tuple[Font, ...]:
    chain: list[Font] = []
    for name in _BOLD_FONTS if bold else _REGULAR_FONTS:
        font = _try_truetype(name, size, 0)
        if font is not None:
            chain.append(font)
            break
    for name, index in _WIDE_FONTS:
        font = _try_truetype(name, size, index)
        if font is not None:
            chain.append(font)
            break
    chain.append(ImageFont.load_default(size=size))
    return tuple(chain)


def _try_truetype(name: str, size: int, index: int) -> ImageFont.FreeTypeFont | None:
    path = _font_path(name, index)
    return None if path is None else ImageFont.truetype(path, size, index=index)


@lru_cache(maxsize=32)
def _font_path(name: str, index: int) -> str | None:
    # Pillow finds a bare file name by walking the system's font folders; do that once per
    # name rather than once per size.
    try:
        font = ImageFont.truetype(name, 12, index=index)
    except OSError:
        return None
    return str(font.path)


@lru_cache(maxsize=8192)
def _draws(font: Font, char: str) -> bool:
    if unicodedata.category(char)[0] in "ZC":
        return True  # spaces and controls draw nothing in any font
    if not isinstance(font, ImageFont.FreeTypeFont):
        return ord(char) < 256
    return _glyph(font, char) != _glyph(font, _NEVER_DRAWN)


@lru_cache(maxsize=8192)
def _glyph(font: ImageFont.FreeTypeFont, char: str) -> tuple[tuple[int, int], bytes]:
    mask = font.getmask(char)
    return mask.size, bytes(mask)
