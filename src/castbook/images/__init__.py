"""Accepting reference images: limits, validation, decoding, resizing and thumbnails."""

from castbook.images.decode import (
    MAX_FILE_BYTES,
    MAX_PIXELS,
    MEDIA_TYPES,
    DecodedImage,
    decode_image,
    open_image,
    read_image_file,
    sha256_hex,
)
from castbook.images.reference import (
    MAX_SIDE,
    THUMBNAIL_SIDE,
    PreparedImage,
    fit_within,
    make_thumbnail,
    prepare_reference,
)

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "MAX_SIDE",
    "MEDIA_TYPES",
    "THUMBNAIL_SIDE",
    "DecodedImage",
    "PreparedImage",
    "decode_image",
    "fit_within",
    "make_thumbnail",
    "open_image",
    "prepare_reference",
    "read_image_file",
    "sha256_hex",
]
