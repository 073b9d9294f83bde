"""Story Mode's storyboard: the panels of a rendered story in a captioned, scored grid.

The storyboard comes as a PNG (:func:`storyboard_png`), a PDF (:func:`storyboard_pdf`) and a
self-contained HTML page (:func:`storyboard_html`), with a drift chart of every character's
score panel by panel (:mod:`castbook.render.drift_chart`). :func:`write_storyboard` writes
them all, and each panel's own image, into one folder. Every output is a pure function of
the :class:`Storyboard`: the same board gives the same bytes.
"""

from __future__ import annotations

import math
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from castbook.errors import FieldError, StorageError
from castbook.render._board import Panel, PanelPictures, Storyboard, weakest_panels
from castbook.render._drawing import (
    BACKGROUND,
    BORDER,
    INK,
    MUTED,
    POOR,
    RGB,
    draw_text,
    encode_png,
    fit_into,
    font_for,
    line_height,
    score_colour,
    score_label,
    text_width,
    truncate,
    wrap,
)
from castbook.render.contact_sheet import SheetItem, contact_sheet_png
from castbook.render.drift_chart import drift_chart_png, drift_chart_svg
from castbook.render.storyboard_html import html_with_pictures, storyboard_html
from castbook.render.storyboard_pdf import pdf_with_pictures, storyboard_pdf

__all__ = [
    "Panel",
    "SheetItem",
    "Storyboard",
    "contact_sheet_png",
    "drift_chart_png",
    "drift_chart_svg",
    "storyboard_html",
    "storyboard_pdf",
    "storyboard_png",
    "write_storyboard",
]

CAPTION_LINES = 3
DEFAULT_PANEL_SIDE = 384
_SEPARATOR = " · "
_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


def storyboard_png(
    board: Storyboard, *, columns: int | None = None, panel_side: int = DEFAULT_PANEL_SIDE
) -> bytes:
    """The storyboard as one PNG: the title, then the panels in scene order in a grid of
    ``columns`` (about the square root of the panel count by default), each ``panel_side``
    pixels square with its caption (at most three lines) and its per-character scores in
    green (80+), amber (60-80) or red (under 60) below. Each character's weakest panel is
    framed in red and badged; a panel that took more than one attempt says how many."""
    if not 64 <= panel_side <= 2048:
        raise FieldError("panel_side", f"must be 64-2048 pixels, got {panel_side}")
    if columns is not None and columns < 1:
        raise FieldError("columns", f"must be at least 1, got {columns}")
    pictures = PanelPictures(board).load_all(fit=panel_side)
    return _png_with_pictures(board, pictures, columns, panel_side)


def _png_with_pictures(
    board: Storyboard, pictures: PanelPictures, columns: int | None, panel_side: int
) -> bytes:
    panels = board.ordered_panels
    columns = min(grid_columns(len(panels)) if columns is None else columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    scale = panel_side / 384
    sizes = _Sizes(
        caption=max(10, round(15 * scale)),
        meta=max(9, round(12 * scale)),
        title=max(14, round(30 * scale)),
        gap=max(8, round(20 * scale)),
        margin=max(10, round(28 * scale)),
    )
    weakest: dict[int, list[str]] = {}
    for weak in weakest_panels(board):
        weakest.setdefault(weak.number, []).append(weak.character)

    texts = [_panel_text(panel, board, panel_side, sizes) for panel in panels]
    caption_rows = max(len(text.caption) for text in texts)
    score_rows = max(len(text.scores) for text in texts)
    meta_rows = 1 if any(text.meta for text in texts) else 0
    caption_height = line_height(font_for("", sizes.caption))
    meta_height = line_height(font_for("", sizes.meta))
    pad = max(4, round(8 * scale))
    cell_height = (
        panel_side + pad + (caption_rows + score_rows) * caption_height + meta_rows * meta_height
    )

    title_font_height = line_height(font_for("", sizes.title, bold=True))
    header = sizes.margin + title_font_height + meta_height + sizes.gap
    width = 2 * sizes.margin + columns * panel_side + (columns - 1) * sizes.gap
    height = header + rows * cell_height + (rows - 1) * sizes.gap + sizes.margin
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)

    usable = width - 2 * sizes.margin
    title = _one_line(board.display_title, usable, sizes.title, bold=True)
    draw_text(
        draw, (sizes.margin, sizes.margin), title, font_for(title, sizes.title, bold=True), INK
    )
    subtitle = _one_line(_subtitle(board), usable, sizes.meta)
    draw_text(
        draw,
        (sizes.margin, sizes.margin + title_font_height),
        subtitle,
        font_for(subtitle, sizes.meta),
        MUTED,
    )

    frame = max(3, round(4 * scale))
    for index, (panel, text) in enumerate(zip(panels, texts, strict=True)):
        row, column = divmod(index, columns)
        x = sizes.margin + column * (panel_side + sizes.gap)
        y = header + row * (cell_height + sizes.gap)
        picture = fit_into(pictures.fitted(panel.number, panel_side), panel_side, panel_side)
        canvas.paste(picture, (x, y))
        marked = weakest.get(panel.number)
        # The red frame stands a little off the picture so it shows on a red picture too.
        outline, start, thickness = (POOR, 2, frame) if marked else (BORDER, 1, 1)
        for step in range(start, start + thickness):
            draw.rectangle(
                (x - step, y - step, x + panel_side - 1 + step, y + panel_side - 1 + step),
                outline=outline,
            )
        if marked:
            _badge(draw, (x + pad, y + pad), "weakest: " + ", ".join(marked), sizes.meta, POOR)
        if panel.attempts > 1:
            label = f"{panel.attempts} attempts"
            badge_width = text_width(label, font_for(label, sizes.meta)) + 2 * _badge_pad(
                sizes.meta
            )
            _badge(draw, (x + panel_side - pad - badge_width, y + pad), label, sizes.meta, INK)
        line_y = y + panel_side + pad
        for line in text.caption:
            draw_text(draw, (x, line_y), line, font_for(line, sizes.caption), INK)
            line_y += caption_height
        line_y = y + panel_side + pad + caption_rows * caption_height
        for segments in text.scores:
            segment_x = float(x)
            for segment, colour in segments:
                font = font_for(segment, sizes.caption, bold=colour != MUTED)
                draw_text(draw, (segment_x, line_y), segment, font, colour)
                segment_x += text_width(segment, font)
            line_y += caption_height
        if text.meta:
            meta_y = y + panel_side + pad + (caption_rows + score_rows) * caption_height
            draw_text(draw, (x, meta_y), text.meta, font_for(text.meta, sizes.meta), MUTED)
    return encode_png(canvas)


def write_storyboard(board: Storyboard, folder: Path) -> dict[str, Path]:
    """Write every output into ``folder``: ``panels/scene-01.png`` … (each panel's image as
    given, named with its format's extension), ``storyboard.png``, ``storyboard.pdf``,
    ``storyboard.html`` and ``drift.png``. Returns the paths by name: ``"png"``, ``"pdf"``,
    ``"html"``, ``"drift"``, and ``"scene-01"`` … for the panels.

    Each file is replaced whole, so re-rendering one scene and writing again updates the
    board without ever leaving a half-written file; a panel file that already holds the
    panel's bytes is left alone."""
    folder = Path(folder)
    pictures = PanelPictures(board).load_all(fit=DEFAULT_PANEL_SIDE)
    outputs: dict[str, tuple[str, bytes]] = {}
    for panel in board.ordered_panels:
        name = f"scene-{panel.number:02d}"
        extension = _EXTENSIONS[pictures.format(panel.number)]
        outputs[name] = (f"panels/{name}.{extension}", panel.image)
    # Side by side: most of the time goes to Pillow's encoders, which let go of the GIL.
    with ThreadPoolExecutor(max_workers=4) as pool:
        png = pool.submit(_png_with_pictures, board, pictures, None, DEFAULT_PANEL_SIDE)
        pdf = pool.submit(pdf_with_pictures, board, pictures)
        html = pool.submit(html_with_pictures, board, pictures)
        drift = pool.submit(drift_chart_png, board)
        outputs["png"] = ("storyboard.png", png.result())
        outputs["pdf"] = ("storyboard.pdf", pdf.result())
        outputs["html"] = ("storyboard.html", html.result().encode("utf-8", "replace"))
        outputs["drift"] = ("drift.png", drift.result())
    written = {}
    for name, (relative, data) in outputs.items():
        path = folder / relative
        if not (name.startswith("scene-") and _holds(path, data)):
            _replace_file(path, data)
        written[name] = path
    return written


def grid_columns(count: int) -> int:
    return max(1, math.ceil(math.sqrt(count)))


@dataclass(frozen=True)
class _Sizes:
    caption: int
    meta: int
    title: int
    gap: int
    margin: int


@dataclass(frozen=True)
class _PanelText:
    caption: list[str]
    scores: list[list[tuple[str, RGB]]]  # lines of (text, colour) segments
    meta: str


def _panel_text(panel: Panel, board: Storyboard, width: int, sizes: _Sizes) -> _PanelText:
    def measure(value: str) -> float:
        return text_width(value, font_for(value, sizes.caption))

    caption = f"{panel.number}. {' '.join(panel.caption.split())}"
    lines = truncate(wrap(caption, width, measure), CAPTION_LINES, width, measure)
    score_lines: list[list[tuple[str, RGB]]] = []
    line: list[tuple[str, RGB]] = []
    line_width = 0.0
    for name in board.scored_characters:
        if name not in panel.scores:
            continue
        score = panel.scores[name]
        segment = f"{name} {score_label(score)}"
        bold = font_for(segment, sizes.caption, bold=True)
        segment_width = text_width(segment, bold)
        separator_width = measure(_SEPARATOR)
        if line and line_width + separator_width + segment_width > width:
            score_lines.append(line)
            line, line_width = [], 0.0
        if line:
            line.append((_SEPARATOR, MUTED))
            line_width += separator_width
        line.append((segment, score_colour(score)))
        line_width += segment_width
    if line:
        score_lines.append(line)
    meta = f"seed {panel.seed}" if panel.seed is not None else ""
    return _PanelText(lines, score_lines, meta)


def _subtitle(board: Storyboard) -> str:
    count = len(board.panels)
    parts = [f"{count} panel{'s' if count != 1 else ''}"]
    if board.scored_characters:
        parts.append(", ".join(board.scored_characters))
    return _SEPARATOR.join(parts)


def _one_line(text: str, width: float, size: int, *, bold: bool = False) -> str:
    def measure(value: str) -> float:
        return text_width(value, font_for(value, size, bold=bold))

    return truncate(wrap(" ".join(text.split()), width, measure), 1, width, measure)[0]


def _badge_pad(size: int) -> int:
    return max(3, size // 3)


def _badge(
    draw: ImageDraw.ImageDraw, at: tuple[float, float], label: str, size: int, fill: RGB
) -> None:
    font = font_for(label, size, bold=True)
    pad = _badge_pad(size)
    x, y = at
    width = text_width(label, font) + 2 * pad
    draw.rounded_rectangle((x, y, x + width, y + line_height(font) + pad), radius=pad, fill=fill)
    draw_text(draw, (x + pad, y + pad / 2), label, font, BACKGROUND)


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def _replace_file(path: Path, data: bytes) -> None:
    # A unique name beside the target, opened normally so the file gets the usual
    # permissions (mkstemp's are owner-only), then renamed over the target in one step.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            temporary.write_bytes(data)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
