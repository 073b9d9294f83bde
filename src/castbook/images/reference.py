"""Turn an accepted image into the reference castbook stores, plus its thumbnail."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from PIL import Image

from castbook.images.decode import MEDIA_TYPES, decode_image, sha256_hex

__all__ = [
    "MAX_SIDE",
    "THUMBNAIL_SIDE",
    "PreparedImage",
    "fit_within",
    "make_thumbnail",
    "prepare_reference",
]

MAX_SIDE = 1536
THUMBNAIL_SIDE = 256

_JPEG_QUALITY = 95
_WEBP_QUALITY = 95
_THUMBNAIL_QUALITY = 80
_JPEG_MODES = frozenset({"L", "RGB", "CMYK"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


@dataclass(frozen=True)
class PreparedImage:
    data: bytes  # the bytes castbook stores
    format: str  # "PNG" | "JPEG" | "WEBP"
    media_type: str
    width: int
    height: int
    sha256: str  # sha256_hex(data): the image id
    thumbnail: bytes  # WebP, longest side <= THUMBNAIL_SIDE
    thumbnail_media_type: str
    resized: bool  # the original was larger than MAX_SIDE and was shrunk
    reencoded: bool  # data differs from the input bytes


def prepare_reference(data: bytes, *, source: str = "image") -> PreparedImage:
    decoded = decode_image(data, source=source)
    image = decoded.image
    resized = max(image.size) > MAX_SIDE
    stored = data
    # Untouched input is kept byte for byte: re-encoding would only lose quality and change the id.
    if resized or decoded.transposed or decoded.animated:
        lossless = decoded.format == "WEBP" and _is_lossless_webp(data)
        stored = _encode(fit_within(image, MAX_SIDE), decoded.format, lossless=lossless)
        # The thumbnail and sizes come from the stored bytes, so preparing them again gives
        # exactly the same result.
        image = decode_image(stored, source=source).image
    return PreparedImage(
        data=stored,
        format=decoded.format,
        media_type=MEDIA_TYPES[decoded.format],
        width=image.width,
        height=image.height,
        sha256=sha256_hex(stored),
        thumbnail=make_thumbnail(image),
        thumbnail_media_type="image/webp",
        resized=resized,
        reencoded=stored != data,
    )


def make_thumbnail(image: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    small = fit_within(image, side)
    if small.mode in _HIGH_DEPTH_MODES:
        # Converting 16-bit grey straight to 8 bits clips it to white, so scale it down first.
        small = small.convert("I").point(lambda value: value * (1 / 257)).convert("L")
    small = small.convert("RGBA" if small.has_transparency_data else "RGB")
    options: dict[str, Any] = {"quality": _THUMBNAIL_QUALITY}
    if icc_profile := image.info.get("icc_profile"):
        options["icc_profile"] = icc_profile
    buffer = io.BytesIO()
    small.save(buffer, "WEBP", **options)
    return buffer.getvalue()


def fit_within(image: Image.Image, side: int) -> Image.Image:
    """Shrink to fit a side×side box, keeping the aspect ratio; an image that fits is returned
    itself, never upscaled."""
    if side < 1:
        raise ValueError(f"side must be at least 1, not {side}")
    width, height = image.size
    if max(width, height) <= side:
        return image
    if width >= height:
        size = (side, max(1, round(height * side / width)))
    else:
        size = (max(1, round(width * side / height)), side)
    if image.mode in ("1", "P", "PA"):
        # Pillow quietly resizes these with NEAREST, whatever filter is asked for.
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    elif image.mode in ("L", "RGB") and image.has_transparency_data:
        # A tRNS colour key would not survive the blending LANCZOS does.
        image = image.convert("RGBA")
    return image.resize(size, Image.Resampling.LANCZOS)


def _encode(image: Image.Image, fmt: str, *, lossless: bool) -> bytes:
    options: dict[str, Any] = {}
    for key in ("icc_profile", "exif"):
        # exif_transpose has already taken the orientation tag out of info["exif"].
        if value := image.info.get(key):
            options[key] = value
    if fmt == "JPEG":
        if image.mode not in _JPEG_MODES:
            image = image.convert("RGB")
        options["quality"] = _JPEG_QUALITY
    elif fmt == "PNG":
        options["optimize"] = True
    elif lossless:
        options["lossless"] = True
    else:
        options["quality"] = _WEBP_QUALITY
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _is_lossless_webp(data: bytes) -> bool:
    # Pillow does not say how a WebP was compressed, so read the RIFF chunks: the first image
    # chunk is "VP8L" for lossless and "VP8 " for lossy. Animation frames nest theirs in ANMF.
    offset = 12
    while offset + 8 <= len(data):
        fourcc = data[offset : offset + 4]
        if fourcc in (b"VP8L", b"VP8 "):
            return fourcc == b"VP8L"
        if fourcc == b"ANMF":
            offset += 8 + 16
            continue
        length = int.from_bytes(data[offset + 4 : offset + 8], "little")
        offset += 8 + length + (length & 1)
    return False
