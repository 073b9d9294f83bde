"""The storyboard as one self-contained HTML page: panel images as data URIs, the drift
chart as inline SVG, no scripts and nothing fetched from anywhere (a Content-Security-Policy
says so to the browser too). Every piece of user text is escaped."""

from __future__ import annotations

import base64
import io
from html import escape

from castbook.images import MEDIA_TYPES, fit_within
from castbook.render._board import (
    Panel,
    PanelPictures,
    Storyboard,
    character_series,
    weakest_panels,
)
from castbook.render._drawing import (
    BORDER,
    FAIR,
    GOOD,
    INK,
    MUTED,
    POOR,
    hex_colour,
    score_colour,
    score_label,
)
from castbook.render.drift_chart import drift_chart_svg

__all__ = ["storyboard_html"]

# Panels up to this size are embedded byte for byte; larger ones are re-encoded smaller so
# a 20-panel page stays quick to open.
EMBED_AS_IS_BYTES = 256 * 1024
EMBED_MAX_SIDE = 1024

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STYLE = f"""
body {{ font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans", "DejaVu Sans",
  sans-serif; color: {hex_colour(INK)}; margin: 2rem auto; max-width: 1400px; padding: 0 1rem; }}
h1 {{ margin: 0 0 .25rem; }}
.meta, .seed {{ color: {hex_colour(MUTED)}; }}
.drift svg {{ max-width: 100%; height: auto; }}
table.summary {{ border-collapse: collapse; margin: 1rem 0 2rem; }}
table.summary th, table.summary td {{ border-bottom: 1px solid {hex_colour(BORDER)};
  padding: .3rem .8rem; text-align: left; }}
ol.panels {{ list-style: none; padding: 0; display: grid; gap: 1.5rem;
  grid-template-columns: repeat(auto-fill, minmax(280px, 1fr)); }}
.panel figure {{ margin: 0; }}
.panel img {{ width: 100%; height: auto; display: block; border: 1px solid {hex_colour(BORDER)}; }}
.panel.weakest img {{ border: 4px solid {hex_colour(POOR)}; }}
.caption {{ white-space: pre-line; margin: .5rem 0 .25rem; }}
ul.scores {{ list-style: none; padding: 0; margin: 0; display: flex; flex-wrap: wrap;
  gap: .25rem .9rem; font-weight: bold; }}
.score.good {{ color: {hex_colour(GOOD)}; }}
.score.fair {{ color: {hex_colour(FAIR)}; }}
.score.poor {{ color: {hex_colour(POOR)}; }}
.badge {{ display: inline-block; font-size: .8rem; font-weight: bold; color: #fff;
  border-radius: .3rem; padding: .1rem .45rem; margin: .3rem .3rem 0 0; }}
.badge.weakest-mark {{ background: {hex_colour(POOR)}; }}
.badge.attempts {{ background: {hex_colour(INK)}; }}
.seed {{ font-size: .85rem; margin: .3rem 0 0; }}
"""


def storyboard_html(board: Storyboard) -> str:
    """The whole storyboard as a single HTML document (UTF-8): title, drift chart, a table of
    each character's mean and lowest score, then every panel with its image, full caption,
    scores, attempts, seed, and a "weakest for …" badge where it is some character's
    weakest panel."""
    return html_with_pictures(board, PanelPictures(board).load_all())


def html_with_pictures(board: Storyboard, pictures: PanelPictures) -> str:
    weakest: dict[int, list[str]] = {}
    for weak in weakest_panels(board):
        weakest.setdefault(weak.number, []).append(weak.character)
    title = escape(board.display_title)
    count = len(board.panels)
    meta = [f"{count} panel{'s' if count != 1 else ''}"]
    if board.scored_characters:
        meta.append(escape(", ".join(board.scored_characters)))
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f'<header><h1>{title}</h1><p class="meta">{" · ".join(meta)}</p></header>',
        f'<section class="drift">{drift_chart_svg(board)}</section>',
        _summary_table(board),
        '<ol class="panels">',
    ]
    out.extend(
        _panel_item(panel, board, pictures, weakest.get(panel.number, []))
        for panel in board.ordered_panels
    )
    out += ["</ol>", "</body>", "</html>", ""]
    return "\n".join(out)


def _panel_item(
    panel: Panel, board: Storyboard, pictures: PanelPictures, weakest_for: list[str]
) -> str:
    media_type, data, (width, height) = _embeddable(panel, pictures)
    uri = f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"
    caption = escape(panel.caption)
    classes = "panel weakest" if weakest_for else "panel"
    parts = [
        f'<li class="{classes}" id="scene-{panel.number}" data-scene="{panel.number}"><figure>',
        f'<img src="{uri}" width="{width}" height="{height}" '
        f'alt="Scene {panel.number}: {caption}">',
        f'<figcaption><p class="caption"><b>{panel.number}.</b> {caption}</p>',
    ]
    scores = [name for name in board.scored_characters if name in panel.scores]
    if scores:
        parts.append('<ul class="scores">')
        for name in scores:
            score = panel.scores[name]
            parts.append(
                f'<li class="score {_grade(score)}" data-character="{escape(name)}">'
                f"{escape(name)} {score_label(score)}</li>"
            )
        parts.append("</ul>")
    if weakest_for:
        names = escape(", ".join(weakest_for))
        parts.append(f'<span class="badge weakest-mark">weakest for {names}</span>')
    if panel.attempts > 1:
        parts.append(f'<span class="badge attempts">{panel.attempts} attempts</span>')
    if panel.seed is not None:
        parts.append(f'<p class="seed">seed {panel.seed}</p>')
    parts.append("</figcaption></figure></li>")
    return "\n".join(parts)


def _summary_table(board: Storyboard) -> str:
    series = character_series(board)
    if not series:
        return ""
    rows = [
        '<table class="summary">',
        "<thead><tr><th>Character</th><th>Panels</th><th>Mean</th><th>Lowest</th>"
        "<th>Highest</th></tr></thead><tbody>",
    ]
    for name, points in series.items():
        mean = sum(score for _, score in points) / len(points)
        low_number, low = min(points, key=lambda point: point[1])
        high_number, high = max(points, key=lambda point: point[1])
        rows.append(
            f"<tr><td>{escape(name)}</td><td>{len(points)}</td>"
            f'<td class="score {_grade(mean)}">{score_label(mean)}</td>'
            f'<td class="score {_grade(low)}">{score_label(low)} '
            f'(<a href="#scene-{low_number}">scene {low_number}</a>)</td>'
            f'<td class="score {_grade(high)}">{score_label(high)} '
            f'(<a href="#scene-{high_number}">scene {high_number}</a>)</td></tr>'
        )
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _grade(score: float) -> str:
    return {GOOD: "good", FAIR: "fair", POOR: "poor"}[score_colour(score)]


def _embeddable(panel: Panel, pictures: PanelPictures) -> tuple[str, bytes, tuple[int, int]]:
    image = pictures.image(panel.number)
    small = len(panel.image) <= EMBED_AS_IS_BYTES and max(image.size) <= EMBED_MAX_SIDE
    if small and not pictures.transposed(panel.number):
        return MEDIA_TYPES[pictures.format(panel.number)], panel.image, image.size
    smaller = fit_within(image, EMBED_MAX_SIDE)
    buffer = io.BytesIO()
    smaller.save(buffer, format="JPEG", quality=88)
    return "image/jpeg", buffer.getvalue(), smaller.size
