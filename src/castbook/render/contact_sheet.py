"""Batch Render's contact sheet: every variant side by side, captioned with its prompt and
consistency score, the most consistent one starred and framed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from castbook.errors import FieldError
from castbook.render._drawing import (
    BACKGROUND,
    BORDER,
    INK,
    MUTED,
    draw_star,
    draw_text,
    encode_png,
    fit_into,
    font_for,
    line_height,
    load_panel,
    score_colour,
    score_label,
    text_width,
    truncate,
    wrap,
)

__all__ = ["BEST_COLOUR", "SheetItem", "contact_sheet_png"]

BEST_COLOUR = (218, 165, 32)  # the frame and star of the best variant
CAPTION_LINES = 2


@dataclass(frozen=True)
class SheetItem:
    image: bytes  # PNG, JPEG or WebP
    caption: str  # the variant's prompt, as the user wrote it
    score: float | None  # 0-100 consistency, None where it was not scored
    best: bool = False
    attempts: int = 1  # renders it took (consistency-gate re-rolls)

    def __post_init__(self) -> None:
        if self.score is not None and not (math.isfinite(self.score) and 0 <= self.score <= 100):
            raise FieldError("score", f"must be 0-100 or None, got {self.score}")
        if self.attempts < 1:
            raise FieldError("attempts", f"must be at least 1, got {self.attempts}")


def contact_sheet_png(
    items: Sequence[SheetItem], *, title: str = "", tile: int = 320, columns: int | None = None
) -> bytes:
    """The variants in a grid (``columns`` wide, by default about the square root of their
    count), each ``tile`` pixels square with its caption and its score coloured like the
    storyboard's; best variants get a gold frame and a "★ best" badge; re-rolled ones say
    how many attempts."""
    if not items:
        raise FieldError("items", "a contact sheet needs at least one variant")
    if not 64 <= tile <= 2048:
        raise FieldError("tile", f"must be 64-2048 pixels, got {tile}")
    if columns is not None and columns < 1:
        raise FieldError("columns", f"must be at least 1, got {columns}")
    columns = columns or max(1, math.ceil(math.sqrt(len(items))))
    rows = math.ceil(len(items) / columns)
    scale = tile / 320
    text_size = max(10, round(14 * scale))
    title_size = max(14, round(24 * scale))
    gap = max(8, round(18 * scale))
    margin = max(10, round(24 * scale))
    pad = max(4, round(8 * scale))
    frame = max(3, round(5 * scale))
    line = line_height(font_for("", text_size))

    def measure(value: str) -> float:
        return text_width(value, font_for(value, text_size))

    captions = [
        truncate(wrap(" ".join(item.caption.split()), tile, measure), CAPTION_LINES, tile, measure)
        for item in items
    ]
    caption_rows = max(len(caption) for caption in captions)
    cell_height = tile + pad + (caption_rows + 1) * line
    title = " ".join(title.split())
    header = margin + (line_height(font_for(title, title_size, bold=True)) + gap if title else 0)
    width = 2 * margin + columns * tile + (columns - 1) * gap
    height = header + rows * cell_height + (rows - 1) * gap + margin
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        shown = truncate(wrap(title, width - 2 * margin, measure), 1, width - 2 * margin, measure)[
            0
        ]
        draw_text(draw, (margin, margin), shown, font_for(shown, title_size, bold=True), INK)

    for index, (item, caption) in enumerate(zip(items, captions, strict=True)):
        row, column = divmod(index, columns)
        x = margin + column * (tile + gap)
        y = header + row * (cell_height + gap)
        picture = load_panel(item.image, source=f"variant {index + 1}'s image", side=tile)
        canvas.paste(fit_into(picture, tile, tile), (x, y))
        # Frames stand outside the picture, the gold one a little off it so it always shows.
        outline, start, thickness = (BEST_COLOUR, 2, frame) if item.best else (BORDER, 1, 1)
        for step in range(start, start + thickness):
            draw.rectangle(
                (x - step, y - step, x + tile - 1 + step, y + tile - 1 + step), outline=outline
            )
        if item.best:
            _best_badge(draw, x + pad, y + pad, text_size)
        text_y = y + tile + pad
        for caption_line in caption:
            draw_text(draw, (x, text_y), caption_line, font_for(caption_line, text_size), INK)
            text_y += line
        score_y = y + tile + pad + caption_rows * line
        score = "not scored" if item.score is None else f"score {score_label(item.score)}"
        score_font = font_for(score, text_size, bold=True)
        draw_text(draw, (x, score_y), score, score_font, score_colour(item.score))
        if item.attempts > 1:
            attempts = f" · {item.attempts} attempts"
            draw_text(
                draw,
                (x + text_width(score, score_font), score_y),
                attempts,
                font_for(attempts, text_size),
                MUTED,
            )
    return encode_png(canvas)


def _best_badge(draw: ImageDraw.ImageDraw, x: float, y: float, size: int) -> None:
    label = "best"
    font = font_for(label, size, bold=True)
    pad = max(3, size // 3)
    star = size * 0.62
    height = line_height(font) + pad
    width = pad + 2 * star + pad + text_width(label, font) + pad
    draw.rounded_rectangle((x, y, x + width, y + height), radius=pad, fill=INK)
    draw_star(draw, (x + pad + star, y + height / 2), star, BEST_COLOUR)
    draw_text(draw, (x + 2 * pad + 2 * star, y + pad / 2), label, font, BACKGROUND)
