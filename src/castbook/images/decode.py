"""Turn untrusted bytes into a fully decoded Pillow image, or a one-line error that says why not."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import struct
import warnings
import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any

from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from castbook.errors import (
    CorruptImageError,
    ImageTooLargeError,
    InvalidInputError,
    UnsupportedImageError,
)

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "MEDIA_TYPES",
    "DecodedImage",
    "decode_image",
    "fast_png_available",
    "open_image",
    "read_image_file",
    "sha256_hex",
]

MAX_FILE_BYTES = 25 * 1024 * 1024
MAX_PIXELS = 40_000_000
MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}

_MB = 1024 * 1024
# Both limits are whole numbers, which is how messages show them.
_LIMIT_MB = MAX_FILE_BYTES // _MB
_LIMIT_MP = MAX_PIXELS // 1_000_000
_ACCEPTED = "castbook accepts PNG, JPEG and WebP"
# Pillow calls a JPEG that carries extra pictures (phone depth maps, stereo pairs) "MPO"; every
# JPEG reader shows its first picture, so for us it is simply a JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}
# Decoders for hostile input fail in many ways; these are the ones that mean "bad data".
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_ROTATING_ORIENTATIONS = frozenset(range(2, 9))


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # fully loaded, first frame, EXIF orientation applied
    format: str  # "PNG" | "JPEG" | "WEBP"
    transposed: bool  # EXIF orientation changed the pixels
    animated: bool  # the source has more frames than the one kept


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_image_file(path: str | os.PathLike[str]) -> bytes:
    shown = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InvalidInputError(f"image file not found: {shown}") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read image file {shown}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InvalidInputError(f"{shown} is a directory, not an image file")
    if info.st_size > MAX_FILE_BYTES:
        raise ImageTooLargeError(_too_many_bytes(shown, info.st_size))
    try:
        with open(path, "rb") as handle:
            # Bounded: the file may have grown since stat(), or be a pipe stat() cannot size.
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read image file {shown}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ImageTooLargeError(f"{shown} is over the limit of {_LIMIT_MB} MB")
    return data


def open_image(data: bytes, *, source: str = "image") -> Image.Image:
    return decode_image(data, source=source).image


def decode_image(
    data: bytes, *, source: str = "image", reduce_to: int | None = None, pixels_only: bool = False
) -> DecodedImage:
    """Validate and decode ``data``.

    ``reduce_to`` asks for a cheaper, smaller decode whose shorter side is still at least
    that many pixels: JPEGs are decoded at 1/2, 1/4 or 1/8 scale by the DCT itself (draft
    mode) and other formats are box-reduced by a whole factor after decoding.

    ``pixels_only``: the caller needs the pixels, not Pillow's ``info`` (text chunks, ICC
    profile). An 8-bit RGB or RGBA PNG is then decoded with libspng when ``pyspng`` is
    installed (the ``fastpng`` extra): ~1.7× faster than Pillow's zlib-bound decoder, with
    the same pixels. Anything else, or a file libspng refuses, goes through Pillow.
    """
    if len(data) > MAX_FILE_BYTES:
        raise ImageTooLargeError(_too_many_bytes(source, len(data)))
    if not data:
        raise UnsupportedImageError(f"{source} is empty (0 bytes); {_ACCEPTED}")
    opened = _open_header(data, source)
    fmt = _FORMAT_ALIASES.get(opened.format or "", opened.format or "unknown")
    if fmt not in MEDIA_TYPES:
        raise UnsupportedImageError(
            f"{source} is a {fmt} image; {_ACCEPTED}, so convert it to one of those first"
        )
    width, height = opened.size
    if width == 0 or height == 0:
        raise ImageTooLargeError(f"{source} is {width}×{height} and has no pixels")
    if width * height > MAX_PIXELS:
        raise ImageTooLargeError(
            f"{source} is {width}×{height} = {_megapixels(width * height)} MP; "
            f"the limit is {_LIMIT_MP} MP"
        )
    fast = _fast_png(opened, data) if pixels_only and fmt == "PNG" else None
    if fast is not None:
        return _reduced(DecodedImage(fast, fmt, transposed=False, animated=False), reduce_to)
    try:
        if reduce_to is not None and fmt == "JPEG":
            opened.draft(opened.mode, (reduce_to, reduce_to))
        opened.load()
        orientation = opened.getexif().get(ExifTags.Base.Orientation, 1)
        animated = opened.format != "MPO" and bool(getattr(opened, "is_animated", False))
        if orientation in _ROTATING_ORIENTATIONS or animated:
            # exif_transpose copies even when nothing rotates, which also drops the other frames.
            image = ImageOps.exif_transpose(opened)
        else:
            image = opened  # a copy of a large image costs more than scoring it
    except _DECODE_ERRORS as exc:
        raise CorruptImageError(
            f"{source} is a damaged or truncated {fmt} file and cannot be decoded ({exc})"
        ) from exc
    decoded = DecodedImage(
        image=image,
        format=fmt,
        transposed=orientation in _ROTATING_ORIENTATIONS,
        animated=animated,
    )
    return _reduced(decoded, reduce_to)


def _reduced(decoded: DecodedImage, reduce_to: int | None) -> DecodedImage:
    if reduce_to is None:
        return decoded
    factor = min(decoded.image.size) // reduce_to
    if factor < 2:
        return decoded
    return DecodedImage(
        decoded.image.reduce(factor), decoded.format, decoded.transposed, decoded.animated
    )


# PNG colour types libspng decodes here: 2 (RGB) and 6 (RGBA), at 8 bits per sample.
_SPNG_FORMATS = {2: "RGB", 6: "RGBA"}


@cache
def _pyspng() -> Any | None:
    try:
        import pyspng
    except ImportError:
        return None
    return pyspng


def fast_png_available() -> bool:
    """Whether PNGs can be decoded with libspng (``pip install 'castbook[fastpng]'``)."""
    return _pyspng() is not None


def _png_chunks_intact(data: bytes) -> bool:
    """Every chunk up to IEND is whole and matches its CRC.

    pyspng decodes a PNG with damaged pixel data into garbage without a word (it does not
    check the chunks' CRCs), where Pillow refuses it; checking them here (~0.3 ms a MB) keeps
    "damaged file" an error whichever decoder runs.
    """
    view = memoryview(data)
    offset = 8
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        end = offset + 8 + length
        if end + 4 > len(data):
            return False
        (crc,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(view[offset + 4 : end]) != crc:
            return False
        if data[offset + 4 : offset + 8] == b"IEND":
            return True
        offset = end + 4
    return False


def _fast_png(opened: ImageFile.ImageFile, data: bytes) -> Image.Image | None:
    """``data`` decoded by libspng, or ``None`` where Pillow must do it: no pyspng, another
    colour type or bit depth, a transparent colour, an EXIF orientation, an animated PNG, or
    a file libspng refuses (Pillow then decodes it, or says why it cannot)."""
    pyspng = _pyspng()
    if pyspng is None or len(data) < 26 or data[12:16] != b"IHDR":
        return None
    bit_depth, colour_type = data[24], data[25]
    mode = _SPNG_FORMATS.get(colour_type)
    if (
        mode is None
        or bit_depth != 8
        or opened.mode != mode
        or "transparency" in opened.info
        or "exif" in opened.info
        or getattr(opened, "is_animated", False)
    ):
        return None
    if not _png_chunks_intact(data):
        return None  # Pillow names the damage
    try:
        pixels = pyspng.load(data, mode)
    except Exception:  # libspng's errors are plain RuntimeErrors; Pillow decides below
        return None
    expected = (opened.height, opened.width, len(mode))
    if getattr(pixels, "shape", None) != expected:
        return None
    return Image.fromarray(pixels, mode)


def _open_header(data: bytes, source: str) -> ImageFile.ImageFile:
    # Only the header is parsed here. Pillow's own bomb guard depends on the global
    # MAX_IMAGE_PIXELS, which we never change; we still map what it raises, and make its
    # warning an error so it never prints for an image we are about to reject anyway.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        counted = re.search(r"\((\d+) pixels\)", str(exc))
        amount = f"is {_megapixels(int(counted[1]))} MP" if counted else "has far too many pixels"
        raise ImageTooLargeError(f"{source} {amount}; the limit is {_LIMIT_MP} MP") from exc
    except UnidentifiedImageError:
        claimed = _claimed_format(data)
        if claimed is None:
            raise UnsupportedImageError(
                f"{source} is not an image castbook can read; {_ACCEPTED}"
            ) from None
        raise CorruptImageError(
            f"{source} starts like a {claimed} file but its header is damaged or truncated"
        ) from None
    except _DECODE_ERRORS as exc:
        raise CorruptImageError(f"{source} cannot be decoded ({exc})") from exc


def _claimed_format(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _too_many_bytes(source: str, size: int) -> str:
    return f"{source} is {_tenths_up(size, _MB)} MB; the limit is {_LIMIT_MB} MB"


def _megapixels(pixels: int) -> str:
    return _tenths_up(pixels, 1_000_000)


def _tenths_up(amount: int, unit: int) -> str:
    # Rounded up, in integers, so a value just over a limit never prints as equal to it.
    whole, tenth = divmod(-(-amount * 10 // unit), 10)
    return f"{whole}.{tenth}" if tenth else f"{whole}"
