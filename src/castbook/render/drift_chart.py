"""The drift chart: each character's consistency score panel by panel, with the 60 and 80
guide lines, so a long story's weakest panel shows at a glance. One layout, drawn twice: as
SVG (for the HTML page) and with Pillow (for drift.png and the PDF)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

from PIL import Image, ImageDraw

from castbook.errors import FieldError
from castbook.render._board import Storyboard, Weakest, character_series, weakest_panels
from castbook.render._drawing import (
    BACKGROUND,
    BORDER,
    FAIR_FROM,
    GOOD,
    GOOD_FROM,
    INK,
    MUTED,
    POOR,
    RGB,
    SERIES_COLOURS,
    draw_text,
    encode_png,
    font_for,
    hex_colour,
    score_label,
    text_width,
)

__all__ = ["drift_chart_png", "drift_chart_svg"]

_HEADING = "Consistency per panel"
_EMPTY = "No consistency scores yet"
_FONT_FAMILY = "DejaVu Sans, Verdana, Arial, sans-serif"
_GUIDES = ((GOOD_FROM, GOOD), (FAIR_FROM, POOR))
_BANDS = ((GOOD_FROM, 100.0, (236, 247, 239)), (FAIR_FROM, GOOD_FROM, (252, 246, 232)),
          (0.0, FAIR_FROM, (252, 238, 238)))  # fmt: skip
_SUPERSAMPLE = 2  # Pillow draws without anti-aliasing; drawing large and shrinking smooths it


@dataclass(frozen=True)
class _Series:
    name: str
    colour: RGB
    points: tuple[tuple[float, float, int, float], ...]  # x, y, scene number, score


@dataclass(frozen=True)
class _Label:
    x: float  # centre
    y: float  # baseline
    text: str
    colour: RGB
    ring: tuple[float, float]  # the marked point
    half_width: float


@dataclass(frozen=True)
class _Layout:
    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    x_ticks: tuple[tuple[float, str], ...]
    series: tuple[_Series, ...]
    weakest: tuple[_Label, ...]

    def y(self, score: float) -> float:
        return self.bottom - (self.bottom - self.top) * score / 100.0


def drift_chart_svg(board: Storyboard, *, width: int = 900, height: int = 360) -> str:
    """The chart as a standalone SVG document (also fit to inline in HTML): one
    ``<polyline>`` per character, a point per scored panel with a tooltip, dashed guides at
    60 and 80, and each character's weakest panel ringed and labelled."""
    layout = _layout(board, width, height)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="drift-chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(_HEADING)}" font-family="{_FONT_FAMILY}" font-size="12">',
        f"<title>{escape(_HEADING)}: {escape(board.display_title)}</title>",
        f'<rect width="{width}" height="{height}" fill="{hex_colour(BACKGROUND)}"/>',
    ]
    plot_width = layout.right - layout.left
    for low, high, band in _BANDS:
        top, bottom = layout.y(high), layout.y(low)
        out.append(
            f'<rect class="band" x="{_n(layout.left)}" y="{_n(top)}" width="{_n(plot_width)}" '
            f'height="{_n(bottom - top)}" fill="{hex_colour(band)}"/>'
        )
    for tick in range(0, 101, 20):
        y = layout.y(tick)
        out.append(
            f'<text x="{_n(layout.left - 6)}" y="{_n(y + 4)}" text-anchor="end" '
            f'fill="{hex_colour(MUTED)}">{tick}</text>'
        )
    for threshold, guide in _GUIDES:
        y = layout.y(threshold)
        out.append(
            f'<line class="guide" data-score="{threshold:g}" x1="{_n(layout.left)}" '
            f'y1="{_n(y)}" x2="{_n(layout.right)}" y2="{_n(y)}" stroke="{hex_colour(guide)}" '
            'stroke-width="1" stroke-dasharray="5 4"/>'
        )
    out.append(
        f'<rect x="{_n(layout.left)}" y="{_n(layout.top)}" width="{_n(plot_width)}" '
        f'height="{_n(layout.bottom - layout.top)}" fill="none" stroke="{hex_colour(BORDER)}"/>'
    )
    for x, scene in layout.x_ticks:
        out.append(
            f'<text x="{_n(x)}" y="{_n(layout.bottom + 16)}" text-anchor="middle" '
            f'fill="{hex_colour(MUTED)}">{scene}</text>'
        )
    out.append(
        f'<text x="{_n(layout.right)}" y="{height - 6}" text-anchor="end" '
        f'fill="{hex_colour(MUTED)}">scene</text>'
    )
    out.append(
        f'<text x="{_n(layout.left)}" y="20" font-size="14" font-weight="bold" '
        f'fill="{hex_colour(INK)}">{escape(_HEADING)}</text>'
    )
    for entry_x, series in _legend(layout):
        out.append(
            f'<rect x="{_n(entry_x)}" y="10" width="12" height="12" rx="2" '
            f'fill="{hex_colour(series.colour)}"/>'
            f'<text x="{_n(entry_x + 16)}" y="20" fill="{hex_colour(INK)}">'
            f"{escape(series.name)}</text>"
        )
    if not layout.series:
        out.append(
            f'<text x="{_n((layout.left + layout.right) / 2)}" '
            f'y="{_n((layout.top + layout.bottom) / 2)}" text-anchor="middle" '
            f'fill="{hex_colour(MUTED)}">{_EMPTY}</text>'
        )
    for series in layout.series:
        colour = hex_colour(series.colour)
        points = " ".join(f"{_n(x)},{_n(y)}" for x, y, _, _ in series.points)
        out.append(f'<g class="series" data-character="{escape(series.name)}">')
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2" '
            'stroke-linejoin="round"/>'
        )
        for x, y, number, score in series.points:
            out.append(
                f'<circle cx="{_n(x)}" cy="{_n(y)}" r="3.5" fill="{colour}">'
                f"<title>scene {number} · {escape(series.name)} {score_label(score)}</title>"
                "</circle>"
            )
        out.append("</g>")
    for label in layout.weakest:
        ring_x, ring_y = label.ring
        colour = hex_colour(label.colour)
        out.append(
            f'<g class="weakest"><circle cx="{_n(ring_x)}" cy="{_n(ring_y)}" r="7.5" '
            f'fill="none" stroke="{hex_colour(POOR)}" stroke-width="2"/>'
            f'<rect x="{_n(label.x - label.half_width - 3)}" y="{_n(label.y - 12)}" '
            f'width="{_n(2 * label.half_width + 6)}" height="16" rx="3" fill="#ffffff" '
            'fill-opacity="0.85"/>'
            f'<text x="{_n(label.x)}" y="{_n(label.y)}" text-anchor="middle" '
            f'font-weight="bold" fill="{colour}">{escape(label.text)}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out)


def drift_chart_png(board: Storyboard, *, width: int = 900, height: int = 360) -> bytes:
    """The same chart as :func:`drift_chart_svg`, drawn with Pillow."""
    return encode_png(drift_chart_image(board, width=width, height=height))


def drift_chart_image(
    board: Storyboard, *, width: int = 900, height: int = 360, pixel_scale: int = 1
) -> Image.Image:
    """The chart as a Pillow image, ``pixel_scale`` times the pixels for the same layout
    (sharper in a PDF)."""
    layout = _layout(board, width, height)
    k = _SUPERSAMPLE * pixel_scale
    canvas = Image.new("RGB", (width * k, height * k), BACKGROUND)
    draw = ImageDraw.Draw(canvas)

    def text(
        x: float,
        y: float,
        value: str,
        size: int,
        colour: RGB,
        anchor: str = "l",
        bold: bool = False,
    ) -> None:
        font = font_for(value, size * k, bold=bold)
        shift = {"l": 0.0, "m": 0.5, "r": 1.0}[anchor] * text_width(value, font)
        draw_text(draw, (x * k - shift, y * k), value, font, colour)

    for low, high, band in _BANDS:
        draw.rectangle(_box(layout.left, layout.y(high), layout.right, layout.y(low), k), band)
    for tick in range(0, 101, 20):
        text(layout.left - 6, layout.y(tick) - 7, str(tick), 12, MUTED, "r")
    for threshold, guide in _GUIDES:
        y = layout.y(threshold)
        dash = 5.0
        x = layout.left
        while x < layout.right:
            end = min(x + dash, layout.right)
            draw.line([(x * k, y * k), (end * k, y * k)], fill=guide, width=k)
            x = end + 4.0
    draw.rectangle(
        _box(layout.left, layout.top, layout.right, layout.bottom, k), outline=BORDER, width=k
    )
    for x, scene in layout.x_ticks:
        text(x, layout.bottom + 4, scene, 12, MUTED, "m")
    text(layout.right, height - 18, "scene", 12, MUTED, "r")
    text(layout.left, 6, _HEADING, 14, INK, bold=True)
    for entry_x, series in _legend(layout):
        draw.rounded_rectangle(
            _box(entry_x, 10, entry_x + 12, 22, k), radius=2 * k, fill=series.colour
        )
        text(entry_x + 16, 8, series.name, 12, INK)
    if not layout.series:
        text(
            (layout.left + layout.right) / 2,
            (layout.top + layout.bottom) / 2 - 7,
            _EMPTY,
            12,
            MUTED,
            "m",
        )
    for series in layout.series:
        points = [(x * k, y * k) for x, y, _, _ in series.points]
        if len(points) > 1:
            draw.line(points, fill=series.colour, width=2 * k, joint="curve")
        for x, y in points:
            r = 3.5 * k
            draw.ellipse((x - r, y - r, x + r, y + r), fill=series.colour)
    for label in layout.weakest:
        x, y = label.ring
        r = 7.5 * k
        draw.ellipse((x * k - r, y * k - r, x * k + r, y * k + r), outline=POOR, width=2 * k)
        backdrop = _box(
            label.x - label.half_width - 3,
            label.y - 12,
            label.x + label.half_width + 3,
            label.y + 4,
            k,
        )
        draw.rounded_rectangle(backdrop, radius=3 * k, fill=(255, 255, 255))
        text(label.x, label.y - 12, label.text, 12, label.colour, "m", bold=True)
    return canvas.resize((width * pixel_scale, height * pixel_scale), Image.Resampling.LANCZOS)


def _layout(board: Storyboard, width: int, height: int) -> _Layout:
    if not (320 <= width <= 4000 and 160 <= height <= 2000):
        raise FieldError("size", f"a drift chart is 320-4000 × 160-2000 px, not {width}×{height}")
    left, top, right, bottom = 44.0, 38.0, width - 16.0, height - 40.0
    panels = board.ordered_panels
    step = (right - left) / len(panels)
    x_of = {p.number: left + step * (index + 0.5) for index, p in enumerate(panels)}
    every = max(1, math.ceil(len(panels) / max(1, (right - left) // 30)))
    x_ticks = tuple(
        (x_of[p.number], str(p.number)) for index, p in enumerate(panels) if index % every == 0
    )

    def y(score: float) -> float:
        return bottom - (bottom - top) * score / 100.0

    colours = {
        name: SERIES_COLOURS[i % len(SERIES_COLOURS)]
        for i, name in enumerate(board.scored_characters)
    }
    series = tuple(
        _Series(name, colours[name], tuple((x_of[n], y(s), n, s) for n, s in points))
        for name, points in character_series(board).items()
    )
    return _Layout(
        width, height, left, top, right, bottom, x_ticks, series,
        tuple(_weakest_labels(weakest_panels(board), x_of, y, colours, left, right)),
    )  # fmt: skip


def _weakest_labels(
    found: list[Weakest],
    x_of: dict[int, float],
    y: Callable[[float], float],
    colours: dict[str, RGB],
    left: float,
    right: float,
) -> list[_Label]:
    labels: list[_Label] = []
    taken: list[tuple[float, float, float]] = []  # x0, x1, baseline of labels placed so far
    for weak in found:
        x, point_y = x_of[weak.number], y(weak.score)
        text = f"weakest: {weak.character} #{weak.number} ({score_label(weak.score)})"
        half = _text_width(text, 12, bold=True) / 2
        centre = min(max(x, left + half + 4), right - half - 4)
        # Under the point where it fits, else over it; a line further out each time it
        # would overlap a label already placed.
        for level in range(len(found) + 1):
            baseline = point_y + 24 + 16 * level
            if baseline > y(0) - 4:
                baseline = point_y - 14 - 16 * level
            clash = any(
                abs(baseline - other) < 15 and centre - half < x1 and x0 < centre + half
                for x0, x1, other in taken
            )
            if not clash:
                break
        taken.append((centre - half, centre + half, baseline))
        labels.append(_Label(centre, baseline, text, colours[weak.character], (x, point_y), half))
    return labels


def _legend(layout: _Layout) -> list[tuple[float, _Series]]:
    # Right-aligned along the top, after the heading.
    widths = [16 + _text_width(series.name, 12) + 14 for series in layout.series]
    x = layout.right - sum(widths)
    entries = []
    for series, entry_width in zip(layout.series, widths, strict=True):
        entries.append((x, series))
        x += entry_width
    return entries


def _text_width(value: str, size: int, *, bold: bool = False) -> float:
    # SVG text is measured with the fonts Pillow finds: close enough to place a legend.
    return text_width(value, font_for(value, size, bold=bold))


def _box(x0: float, y0: float, x1: float, y1: float, k: int) -> tuple[int, int, int, int]:
    return round(x0 * k), round(y0 * k), round(x1 * k), round(y1 * k)


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")
