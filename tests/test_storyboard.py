"""Storyboard, drift chart and contact sheet: what a user sees in the PNG, PDF and HTML."""

from __future__ import annotations

import base64
import colorsys
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFont

from castbook.errors import CorruptImageError, FieldError, ImageError
from castbook.render import _drawing
from castbook.render.storyboard import (
    Panel,
    SheetItem,
    Storyboard,
    contact_sheet_png,
    drift_chart_png,
    drift_chart_svg,
    storyboard_html,
    storyboard_pdf,
    storyboard_png,
    write_storyboard,
)

CHINESE = "主角走进咖啡馆"


def colour(index: int, count: int = 20) -> tuple[int, int, int]:
    """Saturated, far-apart colours no text or frame is drawn in."""
    red, green, blue = colorsys.hsv_to_rgb(index / count, 1.0, 0.85)
    return round(red * 255), round(green * 255), round(blue * 255)


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (96, 96), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def board(
    count: int,
    scores: Sequence[Mapping[str, float]] | None = None,
    *,
    captions: Sequence[str] | None = None,
    characters: tuple[str, ...] = ("Alice", "Bob"),
    title: str = "Morning at the cafe",
) -> Storyboard:
    if scores is None:
        scores = [{"Alice": 60 + (7 * i) % 39, "Bob": 55 + (11 * i) % 44} for i in range(count)]
    if captions is None:
        captions = [f"scene caption number {i + 1}" for i in range(count)]
    panels = tuple(
        Panel(i + 1, captions[i], solid(colour(i, count)), dict(scores[i]), seed=100 + i)
        for i in range(count)
    )
    return Storyboard(title, characters, panels)


def decode(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB")).astype(int)


def locate(pixels: np.ndarray, rgb: tuple[int, int, int], least: int) -> tuple[int, int, int, int]:
    """The box (left, top, right, bottom) of the pixels exactly ``rgb``; fails if too few."""
    ys, xs = np.nonzero((pixels == np.array(rgb)).all(axis=2))
    assert len(xs) >= least, f"{rgb} covers {len(xs)} pixels, expected at least {least}"
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def reddish(pixel: np.ndarray) -> bool:
    return bool(pixel[0] > 150 and pixel[1] < 90 and pixel[2] < 90)


def pdf_text(data: bytes) -> tuple[int, str]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    text = " ".join(page.extract_text() for page in reader.pages)
    return len(reader.pages), " ".join(text.split())


# --- storyboard PNG -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "columns", "expected_columns"),
    [(4, None, 2), (20, None, 5), (5, 2, 2), (3, 10, 3), (1, None, 1)],
)
def test_png_lays_the_panels_out_in_scene_order_on_a_grid(
    count: int, columns: int | None, expected_columns: int
) -> None:
    side = 128
    pixels = decode(storyboard_png(board(count), columns=columns, panel_side=side))
    boxes = [locate(pixels, colour(i, count), (side // 2) ** 2) for i in range(count)]
    lefts = sorted({box[0] for box in boxes})
    tops = sorted({box[1] for box in boxes})
    assert len(lefts) == expected_columns
    assert len(tops) == math.ceil(count / expected_columns)
    for index, (left, top, right, bottom) in enumerate(boxes):
        row, column = divmod(index, expected_columns)
        assert (lefts.index(left), tops.index(top)) == (column, row)
        assert right - left + 1 == side and bottom - top + 1 == side
    # Nothing but margins around the grid: the canvas is as wide as the columns need.
    assert expected_columns * side < pixels.shape[1] < expected_columns * (side + 60)


def test_png_marks_each_characters_weakest_panel_in_red() -> None:
    scores = [{"Alice": 90, "Bob": 85}, {"Alice": 41, "Bob": 88}, {"Alice": 86}, {"Bob": 52}]
    pixels = decode(storyboard_png(board(4, scores), panel_side=128))
    rings = []
    for index in range(4):
        left, top, _, bottom = locate(pixels, colour(index, 4), 64 * 64)
        rings.append(pixels[(top + bottom) // 2, left - 3])
    assert reddish(rings[1]) and reddish(rings[3])  # Alice's weakest, Bob's weakest
    assert not reddish(rings[0]) and not reddish(rings[2])


def test_png_marks_no_panel_when_no_panel_is_weaker() -> None:
    flat = [{"Alice": 80.0}] * 3
    pixels = decode(storyboard_png(board(3, flat), panel_side=128))
    for index in range(3):
        left, top, _, bottom = locate(pixels, colour(index, 3), 64 * 64)
        assert not reddish(pixels[(top + bottom) // 2, left - 3])


def test_png_colours_scores_green_from_80_amber_from_60_red_below() -> None:
    good, fair, poor = (26, 127, 55), (176, 112, 0), (207, 34, 46)
    scores = [{"Alice": 80}, {"Alice": 79}, {"Alice": 60}, {"Alice": 59}]
    story = board(4, scores, captions=["a", "b", "c", "d"])
    pixels = decode(storyboard_png(story, columns=4, panel_side=128))

    def text_colours_under(index: int) -> set[tuple[int, int, int]]:
        left, _, right, bottom = locate(pixels, colour(index, 4), 64 * 64)
        below = pixels[bottom + 2 :, left : right + 1].reshape(-1, 3)
        found = {(int(r), int(g), int(b)) for r, g, b in below}
        return found & {good, fair, poor}

    assert [text_colours_under(i) for i in range(4)] == [{good}, {fair}, {fair}, {poor}]


def test_png_is_the_same_for_the_same_board() -> None:
    assert storyboard_png(board(6)) == storyboard_png(board(6))
    assert storyboard_png(board(6)) != storyboard_png(board(6, title="Another title"))


def test_png_rejects_bad_layouts_and_bad_images() -> None:
    with pytest.raises(FieldError, match="columns"):
        storyboard_png(board(4), columns=0)
    with pytest.raises(FieldError, match="panel_side"):
        storyboard_png(board(4), panel_side=8)
    broken = Storyboard("t", (), (Panel(1, "x", solid((1, 2, 3))[:60], {}),))
    with pytest.raises(CorruptImageError, match="scene 1"):
        storyboard_png(broken)
    with pytest.raises(ImageError, match="scene 1"):
        storyboard_png(Storyboard("t", (), (Panel(1, "x", b"not an image", {}),)))


def test_boards_and_panels_validate_their_fields() -> None:
    with pytest.raises(FieldError, match="at least one panel"):
        Storyboard("t", (), ())
    with pytest.raises(FieldError, match="scene 2 appears twice"):
        Storyboard("t", (), (Panel(2, "a", b"", {}), Panel(2, "b", b"", {})))
    with pytest.raises(FieldError, match="0-100"):
        Panel(1, "a", b"", {"Alice": 120})
    with pytest.raises(FieldError, match="attempts"):
        Panel(1, "a", b"", {}, attempts=0)


# --- unusual text ---------------------------------------------------------------------------


def chinese_board() -> Storyboard:
    return board(
        2,
        [{"主角": 91, "Bob": 47}, {"主角": 58}],
        captions=[f"{CHINESE} ☕ at dusk", "🙂 emoji and ümlauts"],
        characters=("主角", "Bob"),
        title="主角的一天",
    )


def test_chinese_and_emoji_text_renders_everywhere() -> None:
    story = chinese_board()
    assert decode(storyboard_png(story)).shape[0] > 384
    html = storyboard_html(story)
    assert f"{CHINESE} ☕ at dusk" in html and "主角 91" in html and "<h1>主角的一天</h1>" in html
    _, text = pdf_text(storyboard_pdf(story))
    for expected in (CHINESE, "主角的一天", "主角 91", "🙂 emoji and ümlauts", "Bob 47"):
        assert expected in text
    drift_chart_png(story)
    assert 'data-character="主角"' in drift_chart_svg(story)


def test_text_still_renders_with_no_font_files_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    # A bare CI machine without FreeType falls back to Pillow's bitmap font, which raises
    # on anything outside Latin-1 unless castbook replaces those characters first.
    bitmap = ImageFont.load_default_imagefont()
    monkeypatch.setattr(_drawing, "_font_chain", lambda size, bold: (bitmap,))
    story = chinese_board()
    storyboard_png(story)
    drift_chart_png(story)
    contact_sheet_png([SheetItem(solid((9, 9, 9)), CHINESE, 80.0, best=True)])
    assert CHINESE in pdf_text(storyboard_pdf(story))[1]


# --- HTML -----------------------------------------------------------------------------------


def test_html_is_self_contained_with_every_caption_score_and_image() -> None:
    scores = [{"Alice": 91, "Bob": 64}, {"Alice": 47}, {"Bob": 73}, {"Alice": 82, "Bob": 58}]
    captions = ["Alice orders a coffee", "<script>alert('x')</script> & friends", "Bob", "end"]
    story = board(4, scores, captions=captions)
    html = storyboard_html(story)

    assert "<script" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; friends" in html
    for caption in ("Alice orders a coffee", ">Bob<", "end"):
        assert caption in html
    for text in ("Alice 91", "Bob 64", "Alice 47", "Bob 73", "Alice 82", "Bob 58"):
        assert text in html
    sources = re.findall(r'<img src="([^"]*)"', html)
    assert len(sources) == 4 == html.count("<img ")
    for source, panel in zip(sources, story.panels, strict=True):
        assert source == "data:image/png;base64," + base64.b64encode(panel.image).decode()
    # Nothing is fetched: every src/href is a data URI or an in-page anchor.
    for link in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert link.startswith(("data:", "#"))
    assert "url(" not in html and "<link" not in html and "@import" not in html
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert svg.count("<polyline") == 2
    assert 'data-character="Alice"' in svg and 'data-character="Bob"' in svg


def test_html_marks_weakest_panels_attempts_and_escapes_names() -> None:
    panels = (
        Panel(1, "a", solid(colour(0)), {"<b>Eve</b>": 88}),
        Panel(2, "b", solid(colour(1)), {"<b>Eve</b>": 35}, attempts=3),
    )
    html = storyboard_html(Storyboard("Eve's <i>story</i>", ("<b>Eve</b>",), panels))
    assert "<b>Eve</b>" not in html and "<i>story</i>" not in html
    assert "&lt;b&gt;Eve&lt;/b&gt; 35" in html
    weakest = re.findall(r'<li class="panel weakest" id="scene-(\d+)"', html)
    assert weakest == ["2"]
    assert "3 attempts" in html


def test_html_shrinks_very_large_panels() -> None:
    noise = np.random.default_rng(7).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    assert len(buffer.getvalue()) > 1_000_000
    story = Storyboard("big", (), (Panel(1, "noise", buffer.getvalue(), {}),))
    html = storyboard_html(story)
    assert "data:image/jpeg;base64," in html and "data:image/png" not in html
    assert len(html) < len(buffer.getvalue())


# --- PDF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "pages"), [(4, 2), (6, 2), (7, 3), (20, 5)])
def test_pdf_has_a_page_per_six_panels_and_a_summary_page(count: int, pages: int) -> None:
    story = board(count)
    found, text = pdf_text(storyboard_pdf(story))
    assert found == pages
    assert "Morning at the cafe" in text and f"page {pages} of {pages}" in text
    for panel in story.panels:
        assert f"{panel.number}. {panel.caption}" in text
        for name, score in panel.scores.items():
            assert f"{name} {score:.0f}" in text
    assert "Character Panels Mean Lowest Highest" in text


def test_pdf_without_scores_has_no_summary_page() -> None:
    found, text = pdf_text(storyboard_pdf(board(7, [{}] * 7)))
    assert found == 2 and "Character Panels" not in text


def test_pdf_is_deterministic_and_titled() -> None:
    from pypdf import PdfReader

    story = board(3)
    data = storyboard_pdf(story)
    assert data == storyboard_pdf(story) and data.startswith(b"%PDF-")
    metadata = PdfReader(io.BytesIO(data)).metadata
    assert metadata is not None and metadata.title == "Morning at the cafe"


def test_pdf_caption_is_truncated_to_three_lines() -> None:
    long = " ".join(f"word{i}" for i in range(200))
    _, text = pdf_text(storyboard_pdf(board(1, [{}], captions=[long])))
    assert "1. word0 word1" in text and "…" in text and "word199" not in text


# --- drift chart ----------------------------------------------------------------------------


def test_drift_chart_svg_has_a_series_per_character_guides_and_the_weakest_panel() -> None:
    scores = [{"Alice": 90, "Bob": 70}, {"Alice": 42, "Bob": 75}, {"Alice": 88, "Bob": 30}]
    svg = drift_chart_svg(board(3, scores))
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 3 + 3 + 2
    assert 'data-score="80"' in svg and 'data-score="60"' in svg
    labels = re.findall(r'<g class="weakest">.*?>([^<>]+)</text></g>', svg)
    assert labels == ["weakest: Alice #2 (42)", "weakest: Bob #3 (30)"]


def test_drift_chart_svg_escapes_names_and_handles_no_scores() -> None:
    svg = drift_chart_svg(board(2, [{'A"<x>': 50}, {'A"<x>': 60}], characters=('A"<x>',)))
    assert 'data-character="A&quot;&lt;x&gt;"' in svg and "<x>" not in svg
    empty = drift_chart_svg(board(2, [{}, {}]))
    assert "<polyline" not in empty and "No consistency scores" in empty


def test_drift_chart_png_has_its_size_and_rings_the_weakest_panel() -> None:
    def red_pixels(scores: list[Mapping[str, float]]) -> int:
        pixels = decode(drift_chart_png(board(3, scores), width=600, height=300))
        assert pixels.shape == (300, 600, 3)
        red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
        return int(((red > 150) & (green < 90) & (blue < 90)).sum())

    flat = red_pixels([{"Alice": 90}, {"Alice": 90}, {"Alice": 90}])
    dipping = red_pixels([{"Alice": 90}, {"Alice": 85}, {"Alice": 90}])
    assert dipping > flat + 40  # the ring round scene 2


# --- contact sheet --------------------------------------------------------------------------


def test_contact_sheet_has_a_tile_per_variant_and_marks_the_best() -> None:
    items = [
        SheetItem(solid(colour(i, 5)), f"variant {i}", score, best=i == 3, attempts=1 + i % 2)
        for i, score in enumerate([71.0, 55.5, None, 93.2, 80.0])
    ]
    pixels = decode(contact_sheet_png(items, title="Alice, five ways", tile=128))
    boxes = [locate(pixels, colour(i, 5), 64 * 64) for i in range(5)]
    assert len({box[0] for box in boxes}) == 3 and len({box[1] for box in boxes}) == 2
    rings = [tuple(pixels[(top + bottom) // 2, left - 3]) for left, top, _, bottom in boxes]
    best = rings.pop(3)
    assert best[0] > 180 and best[1] > 130 and best[2] < 90  # gold
    assert len(set(rings)) == 1 and best not in rings
    # The star badge sits in the best tile's corner, and in no other tile's.
    corners = [pixels[top + 2 : top + 30, left + 2 : left + 60] for left, top, _, _ in boxes]
    dark = [int((corner.sum(axis=2) < 150).sum()) for corner in corners]
    assert dark[3] > 100 and dark[:3] + dark[4:] == [0, 0, 0, 0]


def test_contact_sheet_validates() -> None:
    with pytest.raises(FieldError, match="at least one"):
        contact_sheet_png([])
    with pytest.raises(FieldError, match="score"):
        SheetItem(b"", "x", 101.0)


# --- writing it all -------------------------------------------------------------------------


def test_write_storyboard_writes_every_file_and_rewrites_only_what_changed(tmp_path: Path) -> None:
    story = board(4)
    files = write_storyboard(story, tmp_path / "out")
    assert set(files) == {"png", "pdf", "html", "drift", "scene-01", "scene-02", "scene-03",
                          "scene-04"}  # fmt: skip
    assert files["scene-02"] == tmp_path / "out" / "panels" / "scene-02.png"
    assert files["scene-02"].read_bytes() == story.panels[1].image
    assert files["png"].name == "storyboard.png" and files["drift"].name == "drift.png"
    assert files["pdf"].read_bytes() == storyboard_pdf(story)
    assert files["html"].read_text(encoding="utf-8") == storyboard_html(story)
    assert files["png"].read_bytes() == storyboard_png(story)
    assert files["drift"].read_bytes().startswith(b"\x89PNG")
    assert not list((tmp_path / "out").rglob(".*"))  # no temporary files left behind

    untouched = files["scene-01"].stat().st_mtime_ns
    old_board = files["png"].read_bytes()
    changed = list(story.panels)
    changed[1] = Panel(2, "redrawn", solid((1, 2, 3), fmt="JPEG"), {"Alice": 99})
    again = write_storyboard(
        Storyboard(story.title, story.characters, tuple(changed)), files["png"].parent
    )
    assert again["scene-02"].name == "scene-02.jpg"
    assert files["scene-01"].stat().st_mtime_ns == untouched
    assert again["png"].read_bytes() != old_board
