"""Behaviour of castbook.images; every image here is generated with Pillow."""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import ExifTags, Image, ImageFile

from castbook.errors import (
    CorruptImageError,
    ImageError,
    ImageTooLargeError,
    InvalidInputError,
    UnsupportedImageError,
)
from castbook.images import (
    MAX_FILE_BYTES,
    MAX_PIXELS,
    MAX_SIDE,
    MEDIA_TYPES,
    THUMBNAIL_SIDE,
    fit_within,
    make_thumbnail,
    open_image,
    prepare_reference,
    read_image_file,
    sha256_hex,
)

MB = 1024 * 1024


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def picture(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Smooth colour gradients: cheap to make and encode, yet every pixel says where it is."""
    across = Image.linear_gradient("L").rotate(90).resize((width, height))
    down = Image.linear_gradient("L").resize((width, height))
    ring = Image.radial_gradient("L").resize((width, height))
    if mode == "RGBA":
        return Image.merge("RGBA", (across, down, ring, across))
    return Image.merge("RGB", (across, down, ring)).convert(mode)


def noisy(width: int, height: int) -> Image.Image:
    """Noise compresses badly, so every part of the file carries pixels."""
    return Image.merge("RGB", [Image.effect_noise((width, height), 60) for _ in range(3)])


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def chunk_types(webp: bytes) -> set[bytes]:
    return {webp[i : i + 4] for i in range(12, len(webp) - 4) if webp[i : i + 3] == b"VP8"}


def two_frame(fmt: str) -> bytes:
    frames = [Image.new("RGB", (40, 30), colour) for colour in ("red", "lime", "blue")]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "castbook-test"
    return encode(image, "JPEG", quality=95, exif=exif)


def half_red_half_blue(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), "blue")
    image.paste("red", (0, 0, width // 2, height))
    return image


@pytest.fixture(scope="module")
def bomb_200mp() -> bytes:
    # One bit per pixel and a single colour: 200 MP that deflate to a few kilobytes.
    return encode(Image.new("1", (20_000, 10_000)), "PNG")


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# Accepted formats


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_small_png_jpeg_webp_are_accepted_and_kept_byte_for_byte(fmt: str) -> None:
    data = encode(picture(120, 80), fmt)

    prepared = prepare_reference(data, source=f"alice.{fmt.lower()}")

    assert prepared.data == data
    assert (prepared.format, prepared.media_type) == (fmt, MEDIA_TYPES[fmt])
    assert (prepared.width, prepared.height) == (120, 80)
    assert not prepared.reencoded
    assert not prepared.resized


def test_open_image_returns_a_loaded_image_of_the_right_size() -> None:
    image = open_image(encode(picture(64, 48, "RGBA"), "PNG"))

    assert image.size == (64, 48)
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0)) is not None


def test_jpeg_with_extra_pictures_counts_as_jpeg() -> None:
    first = half_red_half_blue(60, 40)
    data = encode(first, "MPO", save_all=True, append_images=[Image.new("RGB", (60, 40))])

    prepared = prepare_reference(data)

    assert (prepared.format, prepared.media_type) == ("JPEG", "image/jpeg")
    assert prepared.data == data


# Rejected input


def test_text_file_renamed_png_is_unsupported() -> None:
    with pytest.raises(UnsupportedImageError) as caught:
        open_image(b"just some notes about alice\n", source="alice.png")

    assert "alice.png" in str(caught.value)
    assert "PNG, JPEG and WebP" in str(caught.value)


def test_zero_bytes_are_unsupported() -> None:
    with pytest.raises(UnsupportedImageError) as caught:
        prepare_reference(b"", source="empty.png")

    assert "empty.png" in str(caught.value)
    assert "empty" in str(caught.value).removeprefix("empty.png")


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_image_formats_are_rejected_naming_the_format(fmt: str) -> None:
    data = encode(picture(32, 32), fmt)

    with pytest.raises(UnsupportedImageError) as caught:
        open_image(data, source="bob.img")

    message = str(caught.value)
    assert "bob.img" in message
    assert fmt in message
    assert "PNG, JPEG and WebP" in message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_are_corrupt(fmt: str) -> None:
    data = encode(noisy(128, 128), fmt)

    with pytest.raises(CorruptImageError) as caught:
        open_image(data[: len(data) // 2], source=f"cut.{fmt.lower()}")

    assert f"cut.{fmt.lower()}" in str(caught.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("kept", [12, 20, 30])
def test_png_with_a_cut_off_header_is_corrupt_not_unsupported(kept: int) -> None:
    data = encode(picture(16, 16), "PNG")

    with pytest.raises(CorruptImageError, match=re.escape("head.png")):
        open_image(data[:kept], source="head.png")


def test_png_with_damaged_pixel_data_is_corrupt() -> None:
    data = bytearray(encode(noisy(64, 64), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 10 : start + 40] = bytes(30)

    with pytest.raises(CorruptImageError, match=re.escape("damaged.png")):
        open_image(bytes(data), source="damaged.png")


def test_image_without_pixels_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    # PNG, JPEG and WebP headers cannot even express this, so stand in for a decoder that can.
    empty = Image.new("RGB", (0, 7))
    empty.format = "PNG"
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: empty)

    with pytest.raises(ImageTooLargeError) as caught:
        open_image(b"\x89PNG", source="void.png")

    assert "void.png" in str(caught.value)
    assert "no pixels" in str(caught.value)


def test_png_declaring_zero_width_is_rejected_as_corrupt() -> None:
    data = bytearray(encode(picture(4, 4), "PNG"))
    data[16:20] = bytes(4)  # IHDR width; the PNG spec forbids 0, so Pillow refuses the header

    with pytest.raises(CorruptImageError, match=re.escape("zero.png")):
        open_image(bytes(data), source="zero.png")


# Size limits


def test_bytes_over_the_limit_are_rejected_with_size_in_the_message() -> None:
    data = bytes(int(31.2 * MB))

    with pytest.raises(ImageTooLargeError) as caught:
        open_image(data, source="alice.png")

    assert str(caught.value) == "alice.png is 31.2 MB; the limit is 25 MB"


def test_one_byte_over_the_limit_never_reads_as_equal_to_it() -> None:
    with pytest.raises(ImageTooLargeError, match=re.escape("25.1 MB; the limit is 25 MB")):
        open_image(bytes(MAX_FILE_BYTES + 1))


def test_bomb_bytes_are_small(bomb_200mp: bytes) -> None:
    assert len(bomb_200mp) < 100_000


@pytest.mark.parametrize("pillow_guard", ["default", "disabled"])
@pytest.mark.usefixtures("no_pixel_decoding")
def test_200_megapixel_bomb_is_rejected_quickly_from_the_header(
    bomb_200mp: bytes, pillow_guard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if pillow_guard == "disabled":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    started = time.perf_counter()

    with pytest.raises(ImageTooLargeError) as caught:
        prepare_reference(bomb_200mp, source="bomb.png")

    assert time.perf_counter() - started < 1.0
    message = str(caught.value)
    assert "bomb.png" in message
    assert "200 MP" in message
    assert "the limit is 40 MP" in message


@pytest.mark.usefixtures("no_pixel_decoding")
def test_over_40_megapixels_is_rejected_below_pillows_own_guard() -> None:
    data = encode(Image.new("1", (8000, 6000)), "PNG")

    with pytest.raises(ImageTooLargeError) as caught:
        open_image(data, source="big.png")

    assert str(caught.value) == "big.png is 8000×6000 = 48 MP; the limit is 40 MP"


def test_pillows_bomb_warning_never_escapes() -> None:
    # 100 MP is over Pillow's warning threshold but under its error threshold.
    data = encode(Image.new("1", (10_000, 10_000)), "PNG")

    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        with pytest.raises(ImageTooLargeError, match="100 MP; the limit is 40 MP"):
            open_image(data)

    assert [w.category for w in caught_warnings] == []


def test_exactly_40_megapixels_is_accepted() -> None:
    image = open_image(encode(Image.new("1", (8000, MAX_PIXELS // 8000)), "PNG"))

    assert image.size == (8000, 5000)


def test_pillow_global_limit_is_left_alone(bomb_200mp: bytes) -> None:
    before = Image.MAX_IMAGE_PIXELS

    with pytest.raises(ImageTooLargeError):
        open_image(bomb_200mp)

    assert before == Image.MAX_IMAGE_PIXELS


# Reading files


def test_read_image_file_returns_the_bytes(tmp_path: Path) -> None:
    data = encode(picture(10, 10), "PNG")
    path = tmp_path / "alice.png"
    path.write_bytes(data)

    assert read_image_file(path) == data
    assert read_image_file(str(path)) == data


def test_read_image_file_rejects_a_26_mb_file_before_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.png"
    with path.open("wb") as handle:
        handle.truncate(26 * MB)  # sparse: no disk space used

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file was opened")

    with monkeypatch.context() as patch:
        patch.setattr("builtins.open", refuse)
        patch.setattr("io.open", refuse)
        patch.setattr("os.open", refuse)
        with pytest.raises(ImageTooLargeError) as caught:
            read_image_file(path)

    assert str(caught.value) == f"{path} is 26 MB; the limit is 25 MB"


def test_read_image_file_names_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nobody.png"

    with pytest.raises(InvalidInputError) as caught:
        read_image_file(path)

    assert str(caught.value) == f"image file not found: {path}"


def test_read_image_file_rejects_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as caught:
        read_image_file(tmp_path)

    assert not isinstance(caught.value, ImageError)
    assert str(caught.value) == f"{os.fspath(tmp_path)} is a directory, not an image file"


# Orientation, resizing, animation


def test_exif_orientation_6_is_applied_and_the_tag_removed() -> None:
    # Stored landscape with red on the left; orientation 6 means "turn 90° clockwise to view".
    data = with_orientation(half_red_half_blue(300, 200), 6)

    prepared = prepare_reference(data)
    stored = decoded(prepared.data)

    assert (prepared.width, prepared.height) == (200, 300)
    assert stored.size == (200, 300)
    assert prepared.reencoded and not prepared.resized
    assert prepared.format == stored.format == "JPEG"
    assert ExifTags.Base.Orientation not in stored.getexif()
    assert stored.getexif()[ExifTags.Base.Make] == "castbook-test"
    red, _, blue = stored.getpixel((100, 20))
    assert red > 200 and blue < 60
    assert open_image(data).size == (200, 300)


def test_exif_orientation_1_needs_no_reencoding() -> None:
    data = with_orientation(half_red_half_blue(300, 200), 1)

    prepared = prepare_reference(data)

    assert prepared.data == data
    assert not prepared.reencoded


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize(
    ("size", "fitted"), [((3000, 1000), (1536, 512)), ((900, 2400), (576, 1536))]
)
def test_large_images_are_shrunk_to_fit_1536(
    fmt: str, size: tuple[int, int], fitted: tuple[int, int]
) -> None:
    data = encode(picture(*size), fmt)

    prepared = prepare_reference(data)
    stored = decoded(prepared.data)

    assert prepared.resized and prepared.reencoded
    assert (prepared.width, prepared.height) == fitted == stored.size
    assert stored.format == prepared.format == fmt


def test_resized_greyscale_jpeg_stays_greyscale() -> None:
    prepared = prepare_reference(encode(picture(2000, 100, "L"), "JPEG"))

    assert decoded(prepared.data).mode == "L"


def test_image_exactly_max_side_is_not_resized() -> None:
    data = encode(picture(MAX_SIDE, 40), "PNG")

    prepared = prepare_reference(data)

    assert prepared.data == data
    assert not prepared.resized


def test_resized_transparent_palette_png_keeps_its_transparency() -> None:
    image = Image.new("P", (2000, 500), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (1000, 0, 2000, 500))
    data = encode(image, "PNG", transparency=1)

    stored = decoded(prepare_reference(data).data).convert("RGBA")

    assert stored.getpixel((100, 100)) == (255, 0, 0, 255)
    assert stored.getpixel((1400, 100))[3] == 0


@pytest.mark.parametrize("lossless", [True, False])
def test_resized_webp_keeps_its_compression_kind(lossless: bool) -> None:
    data = encode(picture(2000, 300), "WEBP", lossless=lossless, quality=80)
    assert chunk_types(data) == ({b"VP8L"} if lossless else {b"VP8 "})

    prepared = prepare_reference(data)

    assert chunk_types(prepared.data) == ({b"VP8L"} if lossless else {b"VP8 "})


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_images_keep_only_the_first_frame(fmt: str) -> None:
    data = two_frame(fmt)
    assert decoded(data).n_frames == 3

    prepared = prepare_reference(data)
    stored = decoded(prepared.data)

    assert prepared.reencoded
    assert not getattr(stored, "is_animated", False)
    for image in (stored, open_image(data)):
        red, green, blue = image.convert("RGB").getpixel((5, 5))
        assert red > 240 and green < 15 and blue < 15


# Stability


IDEMPOTENCY_CASES: dict[str, Callable[[], bytes]] = {
    "small png": lambda: encode(picture(50, 40), "PNG"),
    "large png": lambda: encode(picture(3000, 1000), "PNG"),
    "large rgba png": lambda: encode(picture(1000, 2000, "RGBA"), "PNG"),
    "large jpeg": lambda: encode(picture(2000, 2000), "JPEG", quality=85),
    "rotated jpeg": lambda: with_orientation(half_red_half_blue(300, 200), 8),
    "large lossy webp": lambda: encode(picture(1700, 900), "WEBP"),
    "large lossless webp": lambda: encode(picture(1700, 900, "RGBA"), "WEBP", lossless=True),
    "animated png": lambda: two_frame("PNG"),
    "animated webp": lambda: two_frame("WEBP"),
    "large grey jpeg": lambda: encode(picture(1600, 100, "L"), "JPEG"),
    "large 16-bit png": lambda: encode(Image.new("I;16", (1600, 100), 30_000), "PNG"),
}


@pytest.mark.parametrize("make", IDEMPOTENCY_CASES.values(), ids=IDEMPOTENCY_CASES.keys())
def test_preparing_twice_changes_nothing(make: Callable[[], bytes]) -> None:
    first = prepare_reference(make())

    second = prepare_reference(first.data)

    assert second.data == first.data
    assert not second.reencoded and not second.resized
    assert second.thumbnail == first.thumbnail
    assert (second.width, second.height, second.sha256) == (first.width, first.height, first.sha256)


@pytest.mark.parametrize("make", IDEMPOTENCY_CASES.values(), ids=IDEMPOTENCY_CASES.keys())
def test_same_input_gives_the_same_result(make: Callable[[], bytes]) -> None:
    data = make()

    assert prepare_reference(data) == prepare_reference(data)


def test_sha256_is_the_hash_of_the_stored_bytes() -> None:
    prepared = prepare_reference(encode(picture(3000, 100), "PNG"))

    assert prepared.sha256 == hashlib.sha256(prepared.data).hexdigest()
    assert sha256_hex(b"castbook") == hashlib.sha256(b"castbook").hexdigest()


# Thumbnails


def test_thumbnail_is_webp_with_longest_side_256() -> None:
    prepared = prepare_reference(encode(picture(3000, 1000), "JPEG"))
    thumbnail = decoded(prepared.thumbnail)

    assert prepared.thumbnail_media_type == "image/webp"
    assert thumbnail.format == "WEBP"
    assert thumbnail.size == (THUMBNAIL_SIDE, 85)


def test_thumbnail_of_a_small_image_is_not_upscaled() -> None:
    thumbnail = decoded(prepare_reference(encode(picture(100, 60), "PNG")).thumbnail)

    assert thumbnail.size == (100, 60)


def test_thumbnail_keeps_transparency() -> None:
    image = Image.new("RGBA", (600, 300), (0, 0, 0, 0))
    image.paste((0, 128, 255, 255), (300, 0, 600, 300))

    thumbnail = decoded(make_thumbnail(image))

    assert thumbnail.mode == "RGBA"
    assert thumbnail.getpixel((20, 60))[3] == 0
    assert thumbnail.getpixel((230, 60))[3] == 255


def test_thumbnail_of_16_bit_grey_is_not_blown_out_to_white() -> None:
    thumbnail = decoded(make_thumbnail(Image.new("I;16", (64, 64), 20_000)))

    red, _, _ = thumbnail.convert("RGB").getpixel((10, 10))
    assert 70 <= red <= 85  # 20000 / 65535 of full scale


def test_fit_within_never_upscales_and_keeps_aspect_ratio() -> None:
    small = picture(100, 40)

    assert fit_within(small, 256).size == (100, 40)
    assert fit_within(picture(1000, 400), 250).size == (250, 100)
    assert fit_within(picture(400, 1000), 250).size == (100, 250)


# ---- libspng for scoring's PNG decodes (the fastpng extra) --------------------------------


def _png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "I;16", "RGB+tRNS"])
def test_pixels_only_png_decode_gives_pillows_pixels(mode: str) -> None:
    from castbook.images.decode import decode_image

    picture = noisy(67, 41).convert("RGB")
    if mode == "RGBA":
        picture = picture.convert("RGBA")
        picture.putalpha(Image.linear_gradient("L").resize(picture.size))
    elif mode in ("P", "L", "I;16"):
        picture = picture.convert("P" if mode == "P" else "L")
        picture = picture.convert("I;16") if mode == "I;16" else picture
    options = {"transparency": (1, 2, 3)} if mode == "RGB+tRNS" else {}
    data = _png(picture, **options)
    fast = decode_image(data, source="x.png", pixels_only=True)
    pillow = decode_image(data, source="x.png")
    assert fast.format == "PNG" and not fast.animated and not fast.transposed
    assert fast.image.mode == pillow.image.mode and fast.image.size == pillow.image.size
    assert fast.image.tobytes() == pillow.image.tobytes()
    reduced = decode_image(_png(noisy(300, 260)), reduce_to=128, pixels_only=True)
    assert reduced.image.size == (150, 130)


def test_pixels_only_png_uses_libspng_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from castbook.images import decode

    pytest.importorskip("pyspng", reason="the fastpng extra is not installed")
    calls: list[str] = []
    real = decode._pyspng()

    class Spy:
        @staticmethod
        def load(data: bytes, fmt: str) -> object:
            calls.append(fmt)
            return real.load(data, fmt)

    monkeypatch.setattr(decode, "_pyspng", lambda: Spy)
    picture = noisy(50, 30).convert("RGB")
    image = decode.decode_image(_png(picture), pixels_only=True).image
    assert calls == ["RGB"] and image.tobytes() == picture.tobytes()
    decode.decode_image(_png(picture))  # Pillow's info (text chunks) wanted: Pillow decodes
    assert calls == ["RGB"]


def test_pixels_only_damaged_png_is_corrupt_and_missing_pyspng_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from castbook.images import decode

    data = bytearray(_png(noisy(64, 64).convert("RGB")))
    start = data.index(b"IDAT") + 4
    data[start + 10 : start + 40] = bytes(30)
    with pytest.raises(CorruptImageError, match=re.escape("damaged.png")):
        decode.decode_image(bytes(data), source="damaged.png", pixels_only=True)
    monkeypatch.setattr(decode, "_pyspng", lambda: None)
    picture = noisy(20, 10).convert("RGB")
    assert decode.decode_image(_png(picture), pixels_only=True).image.tobytes() == (
        picture.tobytes()
    )
