"""Just enough of PDF to lay out a storyboard: pages with text, pictures, lines and boxes.

Text that Windows-1252 can spell is real Helvetica text. Anything else (主角, emoji) has no
standard font to show it, so it is drawn as a picture with whatever font Pillow finds and
overlaid with invisible text in a font whose glyphs are empty but whose ToUnicode map is
exact: the page looks right where a font exists, and its text can always be selected,
searched and extracted. The output is deterministic: no dates, no random ids.
"""

from __future__ import annotations

import io
import unicodedata
import zlib
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

from castbook.render._drawing import RGB, draw_text, font_for, line_height, text_width

__all__ = ["PdfDocument", "PdfPage", "helvetica_width"]

# Text drawn as a picture gets this many pixels per point: sharp when printed.
_RASTER_SCALE = 4
_GLYPHS_PER_FONT = 256
# Where a line's baseline sits below its top, in ems: Helvetica's ascent is about 0.72.
_BASELINE = 0.8

# Helvetica's advance widths (1/1000 em) for ASCII 32-126, from Adobe's AFM files.
# fmt: off
_HELVETICA = (
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
)
_HELVETICA_BOLD = (
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611,
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556,
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611,
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,
)
# fmt: on
_WIDE_PUNCTUATION = {"…": 1000, "—": 1000, "‰": 1000, "™": 1000, "€": 556, "–": 556, "•": 350}


def helvetica_width(text: str, size: float, *, bold: bool = False) -> float:
    """Width in points of ``text`` set in Helvetica (accented letters measured as their base
    letter, which is what Helvetica's metrics give them)."""
    table = _HELVETICA_BOLD if bold else _HELVETICA
    total = 0
    for char in text:
        code = ord(char)
        if 32 <= code <= 126:
            total += table[code - 32]
        elif char in _WIDE_PUNCTUATION:
            total += _WIDE_PUNCTUATION[char]
        else:
            base = unicodedata.normalize("NFD", char)[0]
            total += table[ord(base) - 32] if 32 <= ord(base) <= 126 else 556
    return total * size / 1000


def is_standard_text(text: str) -> bool:
    """Whether Helvetica with WinAnsiEncoding (Windows-1252) can show ``text``."""
    try:
        text.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return True


def text_extent(text: str, size: float, *, bold: bool = False) -> float:
    """Width in points ``text`` takes on a page, however :meth:`PdfPage.text` draws it."""
    if is_standard_text(text):
        return helvetica_width(text, size, bold=bold)
    font = font_for(text, round(size * _RASTER_SCALE), bold=bold)
    return text_width(text, font) / _RASTER_SCALE


@dataclass
class PdfPage:
    width: float
    height: float
    document: PdfDocument
    _ops: list[str] = field(default_factory=list)
    _images: list[tuple[str, int]] = field(default_factory=list)

    def text(
        self, x: float, top: float, text: str, size: float, colour: RGB, *, bold: bool = False
    ) -> float:
        """Draw one line whose top is ``top`` points from the top of the page; returns its width."""
        if not text:
            return 0.0
        baseline = self.height - top - size * _BASELINE
        if is_standard_text(text):
            encoded = text.encode("cp1252")
            escaped = encoded.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
            font = "F2" if bold else "F1"
            self._ops.append(
                f"BT {_colour(colour)} rg /{font} {_n(size)} Tf {_n(x)} {_n(baseline)} Td "
                f"({escaped.decode('latin-1')}) Tj ET"
            )
            return helvetica_width(text, size, bold=bold)
        return self._pictured_text(x, top, baseline, text, size, colour, bold)

    def image(self, image: Image.Image, x: float, top: float, width: float, height: float) -> None:
        """Place ``image`` (RGB) stretched to the box; JPEG-encoded, so meant for pictures."""
        number = self.document.add_image(image, jpeg=True)
        self._place(number, x, top, width, height)

    def lossless_image(
        self, image: Image.Image, x: float, top: float, width: float, height: float
    ) -> None:
        """Like :meth:`image`, compressed losslessly: for charts and text."""
        number = self.document.add_image(image, jpeg=False)
        self._place(number, x, top, width, height)

    def rectangle(
        self, x: float, top: float, width: float, height: float, *, stroke: RGB, line: float = 1
    ) -> None:
        y = self.height - top - height
        self._ops.append(
            f"q {_colour(stroke)} RG {_n(line)} w {_n(x)} {_n(y)} {_n(width)} {_n(height)} re S Q"
        )

    def fill(self, x: float, top: float, width: float, height: float, colour: RGB) -> None:
        y = self.height - top - height
        self._ops.append(f"q {_colour(colour)} rg {_n(x)} {_n(y)} {_n(width)} {_n(height)} re f Q")

    def _place(self, number: int, x: float, top: float, width: float, height: float) -> None:
        name = f"Im{number}"
        self._images.append((name, number))
        y = self.height - top - height
        self._ops.append(f"q {_n(width)} 0 0 {_n(height)} {_n(x)} {_n(y)} cm /{name} Do Q")

    def _pictured_text(
        self, x: float, top: float, baseline: float, text: str, size: float, colour: RGB, bold: bool
    ) -> float:
        font = font_for(text, round(size * _RASTER_SCALE), bold=bold)
        pixels_wide = max(1, round(text_width(text, font)))
        pixels_high = max(1, line_height(font))
        alpha = Image.new("L", (pixels_wide, pixels_high), 0)
        draw_text(ImageDraw.Draw(alpha), (0, 0), text, font, 255)
        width = pixels_wide / _RASTER_SCALE
        number = self.document.add_mask_image(alpha, colour)
        # Pillow draws from the top of the ascent; line its baseline up with Helvetica's.
        if isinstance(font, ImageFont.FreeTypeFont):
            ascent: float = font.getmetrics()[0]
        else:
            ascent = 0.8 * pixels_high
        picture_top = top + size * _BASELINE - ascent / _RASTER_SCALE
        self._place(number, x, picture_top, width, pixels_high / _RASTER_SCALE)
        # The invisible text over it: empty glyphs one em wide, squeezed to the picture's width.
        runs = self.document.hidden_codes(text)
        glyphs = sum(len(codes) for _, codes in runs)
        squeeze = 100 * width / (glyphs * size)
        shown = " ".join(
            f"/{font_name} {_n(size)} Tf <{codes.hex()}> Tj" for font_name, codes in runs
        )
        # Inside q/Q, since the squeeze is text state that would outlive ET.
        self._ops.append(f"q BT {_n(squeeze)} Tz {_n(x)} {_n(baseline)} Td {shown} ET Q")
        return width


class PdfDocument:
    def __init__(self, title: str) -> None:
        self.title = title
        self._objects: list[bytes] = []
        self._pages: list[PdfPage] = []
        self._hidden: dict[str, int] = {}  # character -> its index among the hidden glyphs

    def page(self, width: float, height: float) -> PdfPage:
        page = PdfPage(width, height, self)
        self._pages.append(page)
        return page

    def add_image(self, image: Image.Image, *, jpeg: bool) -> int:
        buffer = io.BytesIO()
        if jpeg:
            image.convert("RGB").save(buffer, format="JPEG", quality=88)
            data, codec = buffer.getvalue(), "/DCTDecode"
        else:
            data, codec = zlib.compress(image.convert("RGB").tobytes(), 6), "/FlateDecode"
        return self._stream(
            f"/Type /XObject /Subtype /Image /Width {image.width} /Height {image.height} "
            f"/ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter {codec}",
            data,
        )

    def add_mask_image(self, alpha: Image.Image, colour: RGB) -> int:
        """A picture of one colour showing through ``alpha``: anti-aliased text."""
        mask = self._stream(
            f"/Type /XObject /Subtype /Image /Width {alpha.width} /Height {alpha.height} "
            "/ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode",
            zlib.compress(alpha.tobytes(), 6),
        )
        solid = bytes(colour) * (alpha.width * alpha.height)
        return self._stream(
            f"/Type /XObject /Subtype /Image /Width {alpha.width} /Height {alpha.height} "
            f"/ColorSpace /DeviceRGB /BitsPerComponent 8 /SMask {mask} 0 R /Filter /FlateDecode",
            zlib.compress(solid, 6),
        )

    def hidden_codes(self, text: str) -> list[tuple[str, bytes]]:
        """``text`` as runs of (font name, one-byte codes) in the hidden-glyph fonts."""
        runs: list[tuple[str, bytearray]] = []
        for char in text:
            index = self._hidden.setdefault(char, len(self._hidden))
            name = f"H{index // _GLYPHS_PER_FONT}"
            if not runs or runs[-1][0] != name:
                runs.append((name, bytearray()))
            runs[-1][1].append(index % _GLYPHS_PER_FONT)
        return [(name, bytes(codes)) for name, codes in runs]

    def finish(self) -> bytes:
        fonts = [
            "/F1 " + self._ref(self._object(_standard_font("Helvetica"))),
            "/F2 " + self._ref(self._object(_standard_font("Helvetica-Bold"))),
        ]
        hidden = list(self._hidden)
        for start in range(0, len(hidden), _GLYPHS_PER_FONT):
            chunk = hidden[start : start + _GLYPHS_PER_FONT]
            fonts.append(f"/H{start // _GLYPHS_PER_FONT} " + self._ref(self._hidden_font(chunk)))
        pages_number = len(self._objects) + 1 + len(self._pages) * 2
        kids = []
        for page in self._pages:
            content = self._stream(
                "", zlib.compress("\n".join(page._ops).encode("latin-1"), 6), flate=True
            )
            images = " ".join(f"/{name} {number} 0 R" for name, number in page._images)
            kids.append(
                self._object(
                    f"<< /Type /Page /Parent {pages_number} 0 R "
                    f"/MediaBox [0 0 {_n(page.width)} {_n(page.height)}] "
                    f"/Resources << /Font << {' '.join(fonts)} >> /XObject << {images} >> >> "
                    f"/Contents {content} 0 R >>"
                )
            )
        pages = self._object(
            f"<< /Type /Pages /Kids [{' '.join(f'{kid} 0 R' for kid in kids)}] "
            f"/Count {len(kids)} >>"
        )
        assert pages == pages_number, "page tree numbered before it was written"
        catalog = self._object(f"<< /Type /Catalog /Pages {pages} 0 R >>")
        info = self._object(
            f"<< /Title {_text_string(self.title)} /Producer (castbook) /Creator (castbook) >>"
        )
        out = io.BytesIO()
        out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for number, body in enumerate(self._objects, start=1):
            offsets.append(out.tell())
            out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
        xref = out.tell()
        out.write(f"xref\n0 {len(self._objects) + 1}\n0000000000 65535 f \n".encode())
        out.write("".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode())
        out.write(
            f"trailer\n<< /Size {len(self._objects) + 1} /Root {catalog} 0 R /Info {info} 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n".encode()
        )
        return out.getvalue()

    def _hidden_font(self, chars: list[str]) -> int:
        # A Type 3 font: its glyphs are procedures in this file, here all empty, so nothing
        # depends on fonts the reader may lack. ToUnicode maps each code back to its text.
        empty = self._stream("", b"1000 0 0 0 0 0 d1")
        mapping = "\n".join(f"<{code:02x}> <{_utf16_hex(char)}>" for code, char in enumerate(chars))
        cmap = (
            "/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n"
            "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
            "/CMapName /Adobe-Identity-UCS def /CMapType 2 def\n"
            "1 begincodespacerange <00> <ff> endcodespacerange\n"
            f"{len(chars)} beginbfchar\n{mapping}\nendbfchar\n"
            "endcmap CMapName currentdict /CMap defineresource pop end end"
        )
        to_unicode = self._stream("", zlib.compress(cmap.encode("ascii"), 6), flate=True)
        names = " ".join(f"/g{code}" for code in range(len(chars)))
        procs = " ".join(f"/g{code} {empty} 0 R" for code in range(len(chars)))
        return self._object(
            "<< /Type /Font /Subtype /Type3 /FontBBox [0 0 0 0] "
            "/FontMatrix [0.001 0 0 0.001 0 0] "
            f"/CharProcs << {procs} >> /Encoding << /Type /Encoding /Differences [0 {names}] >> "
            f"/FirstChar 0 /LastChar {len(chars) - 1} /Widths [{' '.join(['1000'] * len(chars))}] "
            f"/Resources << >> /ToUnicode {to_unicode} 0 R >>"
        )

    def _object(self, body: str | bytes) -> int:
        self._objects.append(body.encode("latin-1") if isinstance(body, str) else body)
        return len(self._objects)

    def _stream(self, entries: str, data: bytes, *, flate: bool = False) -> int:
        filters = " /Filter /FlateDecode" if flate else ""
        head = f"<< {entries}{filters} /Length {len(data)} >>\nstream\n".encode("latin-1")
        return self._object(head + data + b"\nendstream")

    @staticmethod
    def _ref(number: int) -> str:
        return f"{number} 0 R"


def _standard_font(name: str) -> str:
    return f"<< /Type /Font /Subtype /Type1 /BaseFont /{name} /Encoding /WinAnsiEncoding >>"


def _text_string(text: str) -> str:
    """A PDF text string: UTF-16 with its byte-order mark, as hex, which needs no escaping."""
    return f"<feff{_utf16_hex(text)}>"


def _utf16_hex(text: str) -> str:
    # surrogatepass: a lone surrogate (from a broken JSON caption) must not stop the export.
    return text.encode("utf-16-be", "surrogatepass").hex()


def _colour(colour: RGB) -> str:
    return " ".join(_n(channel / 255) for channel in colour)


def _n(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"
