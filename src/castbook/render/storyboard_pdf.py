"""The storyboard as a PDF: A4 landscape, six panels a page with their captions and scores as
real text, then a page with the drift chart and each character's numbers."""

from __future__ import annotations

import math

from PIL import Image

from castbook.render._board import (
    Panel,
    PanelPictures,
    Storyboard,
    character_series,
    weakest_panels,
)
from castbook.render._drawing import (
    BORDER,
    INK,
    MUTED,
    POOR,
    RGB,
    score_colour,
    score_label,
    truncate,
    wrap,
)
from castbook.render._pdf import PdfDocument, PdfPage, text_extent
from castbook.render.drift_chart import drift_chart_image

__all__ = ["PANELS_PER_PAGE", "storyboard_pdf"]

PANELS_PER_PAGE = 6
CAPTION_LINES = 3
_PAGE = (842.0, 595.0)  # A4 landscape, in points
_MARGIN = 36.0
_COLUMNS, _ROWS = 3, 2
_GAP_X, _GAP_Y = 18.0, 14.0
_HEADER = 44.0
_CAPTION_SIZE, _SCORE_SIZE, _META_SIZE = 8.5, 8.5, 7.5
_LEADING = 1.25
# Panels are embedded at most this many pixels a side, about 2 pixels a point in the grid:
# sharp on screen, modest in size, and the size the PNG storyboard draws them by default.
PICTURE_SIDE = 384
_SEPARATOR = " · "


def storyboard_pdf(board: Storyboard) -> bytes:
    """One page per six panels (in scene order, three across), each page headed by the
    title and its page number; a last page with the drift chart and a table of each
    character's panels, mean, lowest and highest score, where any panel was scored."""
    return pdf_with_pictures(board, PanelPictures(board).load_all(fit=PICTURE_SIDE))


def pdf_with_pictures(board: Storyboard, pictures: PanelPictures) -> bytes:
    panels = board.ordered_panels
    series = character_series(board)
    page_count = math.ceil(len(panels) / PANELS_PER_PAGE) + (1 if series else 0)
    weakest: dict[int, list[str]] = {}
    for weak in weakest_panels(board):
        weakest.setdefault(weak.number, []).append(weak.character)
    scores = {panel.number: _score_lines(panel, board) for panel in panels}
    score_rows = max(len(lines) for lines in scores.values())
    document = PdfDocument(board.display_title)
    for page_index in range(0, len(panels), PANELS_PER_PAGE):
        page = _new_page(document, board, page_index // PANELS_PER_PAGE + 1, page_count)
        for slot, panel in enumerate(panels[page_index : page_index + PANELS_PER_PAGE]):
            marked = weakest.get(panel.number, [])
            picture = pictures.fitted(panel.number, PICTURE_SIDE)
            _panel(page, panel, picture, slot, scores[panel.number], score_rows, marked)
    if series:
        _summary_page(_new_page(document, board, page_count, page_count), board, series)
    return document.finish()


def _new_page(document: PdfDocument, board: Storyboard, number: int, count: int) -> PdfPage:
    width, height = _PAGE
    page = document.page(width, height)
    usable = width - 2 * _MARGIN
    numbering = f"page {number} of {count}"
    numbering_width = text_extent(numbering, 9)
    title = _fit_line(board.display_title, usable - numbering_width - 24, 16, bold=True)
    page.text(_MARGIN, _MARGIN - 8, title, 16, INK, bold=True)
    page.text(width - _MARGIN - numbering_width, _MARGIN - 4, numbering, 9, MUTED)
    characters = ", ".join(board.scored_characters)
    subtitle = _SEPARATOR.join(part for part in (f"{len(board.panels)} panels", characters) if part)
    page.text(_MARGIN, _MARGIN + 14, _fit_line(subtitle, usable, 9), 9, MUTED)
    return page


_CELL_WIDTH = (_PAGE[0] - 2 * _MARGIN - (_COLUMNS - 1) * _GAP_X) / _COLUMNS
_CELL_HEIGHT = (_PAGE[1] - 2 * _MARGIN - _HEADER - (_ROWS - 1) * _GAP_Y) / _ROWS
_MAX_SCORE_ROWS = 3

ScoreLine = list[tuple[str, RGB, bool]]  # (text, colour, bold) segments


def _panel(
    page: PdfPage,
    panel: Panel,
    picture: Image.Image,
    slot: int,
    score_lines: list[ScoreLine],
    score_rows: int,
    weakest_for: list[str],
) -> None:
    cell_width, cell_height = _CELL_WIDTH, _CELL_HEIGHT
    step = _CAPTION_SIZE * _LEADING
    text_height = (CAPTION_LINES + score_rows) * step + _META_SIZE * _LEADING + 4
    box_height = cell_height - text_height
    row, column = divmod(slot, _COLUMNS)
    x = _MARGIN + column * (cell_width + _GAP_X)
    top = _MARGIN + _HEADER + row * (cell_height + _GAP_Y)

    scale = min(cell_width / picture.width, box_height / picture.height)
    shown_width, shown_height = picture.width * scale, picture.height * scale
    left = x + (cell_width - shown_width) / 2
    image_top = top + (box_height - shown_height) / 2
    page.image(picture, left, image_top, shown_width, shown_height)
    if weakest_for:
        page.rectangle(
            left - 1.5, image_top - 1.5, shown_width + 3, shown_height + 3, stroke=POOR, line=3
        )
    else:
        page.rectangle(left, image_top, shown_width, shown_height, stroke=BORDER, line=0.5)

    line = top + box_height + 4

    def measure(value: str) -> float:
        return text_extent(value, _CAPTION_SIZE)

    caption = f"{panel.number}. {' '.join(panel.caption.split())}"
    for caption_line in truncate(
        wrap(caption, cell_width, measure), CAPTION_LINES, cell_width, measure
    ):
        page.text(x, line, caption_line, _CAPTION_SIZE, INK)
        line += step
    line = top + box_height + 4 + CAPTION_LINES * step
    for segments in score_lines:
        cursor = x
        for segment, colour, bold in segments:
            cursor += page.text(cursor, line, segment, _SCORE_SIZE, colour, bold=bold)
        line += step
    line = top + box_height + 4 + (CAPTION_LINES + score_rows) * step
    cursor = x
    if weakest_for:
        cursor += page.text(
            cursor, line, f"weakest for {', '.join(weakest_for)}", _META_SIZE, POOR, bold=True
        )
    details = [f"seed {panel.seed}"] if panel.seed is not None else []
    if panel.attempts > 1:
        details.append(f"{panel.attempts} attempts")
    if details:
        prefix = _SEPARATOR if cursor > x else ""
        page.text(cursor, line, prefix + _SEPARATOR.join(details), _META_SIZE, MUTED)


def _score_lines(panel: Panel, board: Storyboard) -> list[ScoreLine]:
    lines: list[ScoreLine] = []
    line: ScoreLine = []
    used = 0.0
    separator = text_extent(_SEPARATOR, _SCORE_SIZE)
    for name in board.scored_characters:
        if name not in panel.scores:
            continue
        score = panel.scores[name]
        segment = f"{name} {score_label(score)}"
        width = text_extent(segment, _SCORE_SIZE, bold=True)
        if line and used + separator + width > _CELL_WIDTH:
            if len(lines) + 1 == _MAX_SCORE_ROWS:
                # More characters than a cell has room for: the summary page lists them all.
                line.append((_SEPARATOR + "…", MUTED, False))
                break
            lines.append(line)
            line, used = [], 0.0
        if line:
            line.append((_SEPARATOR, MUTED, False))
            used += separator
        line.append((segment, score_colour(score), True))
        used += width
    if line:
        lines.append(line)
    return lines


def _summary_page(
    page: PdfPage, board: Storyboard, series: dict[str, list[tuple[int, float]]]
) -> None:
    usable = page.width - 2 * _MARGIN
    chart_height = usable * 360 / 900
    top = _MARGIN + _HEADER
    chart = drift_chart_image(board, width=900, height=360, pixel_scale=2)
    page.lossless_image(chart, _MARGIN, top, usable, chart_height)
    top += chart_height + 18
    columns = (
        ("Character", 0.0),
        ("Panels", 220.0),
        ("Mean", 290.0),
        ("Lowest", 360.0),
        ("Highest", 480.0),
    )
    for heading, offset in columns:
        page.text(_MARGIN + offset, top, heading, 9, MUTED, bold=True)
    top += 14
    page.fill(_MARGIN, top - 3, 600, 0.5, BORDER)
    for name, points in series.items():
        scores = [score for _, score in points]
        mean = sum(scores) / len(scores)
        low_number, low = min(points, key=lambda point: point[1])
        high_number, high = max(points, key=lambda point: point[1])
        cells = (
            (_fit_line(name, 210, 9), INK),
            (str(len(points)), INK),
            (score_label(mean), score_colour(mean)),
            (f"{score_label(low)} (scene {low_number})", score_colour(low)),
            (f"{score_label(high)} (scene {high_number})", score_colour(high)),
        )
        for (value, colour), (_, offset) in zip(cells, columns, strict=True):
            page.text(_MARGIN + offset, top, value, 9, colour)
        top += 14


def _fit_line(text: str, width: float, size: float, *, bold: bool = False) -> str:
    def measure(value: str) -> float:
        return text_extent(value, size, bold=bold)

    return truncate(wrap(" ".join(text.split()), width, measure), 1, width, measure)[0]
