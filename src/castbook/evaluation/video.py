"""Read a few evenly spaced frames from a video candidate, so each can be scored like an image.

MP4/MOV, WebM and MKV go through the ffmpeg binary that the ``imageio-ffmpeg`` package ships
(the ``video`` extra); animated GIF, WebP and PNG go through Pillow and need no extra.

ffmpeg runs twice per clip: a demux-only pass (``-c copy``, no decoding) counts the frames,
then one decoding pass lets only the chosen frames through a ``select`` filter, so only those
are converted to RGB and piped back (as self-describing PPM images). Memory stays at one frame
plus the samples kept; time grows with the clip's length because every frame is decoded.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar

from PIL import Image, UnidentifiedImageError

from castbook.errors import (
    CorruptImageError,
    FieldError,
    ImageTooLargeError,
    InvalidInputError,
    MissingDependencyError,
    UnsupportedImageError,
)
from castbook.images.decode import MAX_PIXELS
from castbook.images.reference import fit_within

if TYPE_CHECKING:
    from castbook.evaluation.budget import PixelBudget

__all__ = [
    "FFMPEG_TIMEOUT_S",
    "VIDEO_SUFFIXES",
    "VideoFrame",
    "clip_dimensions",
    "container_kind",
    "is_video",
    "sample_frames",
]

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".gif")
# One ffmpeg run (count or decode) that takes longer than this is stopped.
FFMPEG_TIMEOUT_S = 300.0

_SUPPORTED = "castbook samples video from MP4, MOV, WebM, MKV and animated GIF/WebP/PNG"
_HEAD_BYTES = 64
# Container kinds: the first two are read by ffmpeg (the value names its demuxer), the rest by
# Pillow (the value is Pillow's format name).
_FFMPEG_KINDS = {"mov": "MP4/MOV", "matroska": "WebM/MKV"}
_PILLOW_KINDS = {"gif": "GIF", "webp": "WEBP", "png": "PNG"}
# ISO-BMFF major brands that are still pictures or audio, not video.
_NOT_VIDEO_BRANDS = frozenset(
    {
        b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx",
        b"mif1", b"mif2", b"msf1", b"crx ", b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B ",
    }
)  # fmt: skip
# Browsers show GIF frames with a delay under 20 ms for 100 ms; so do we when timing them.
_GIF_MIN_DELAY_MS = 20
_GIF_DEFAULT_DELAY_MS = 100
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError)
_LOG_PREFIX = re.compile(r"^(?:\[[^\]]*@ 0x[0-9a-f]+\] )?\[(\w+)\] ?")
_SHOWINFO = re.compile(r"Parsed_showinfo.*?\bn:\s*(\d+)\s.*?\bpts_time:(\S+)")
_DECODED = re.compile(r"Input stream #0:\d+ \(video\):.*?(\d+) frames decoded")
_STREAM_MAPPING = re.compile(r"Stream #0:(\d+)\S* -> #0:0")
_FRAME_SIZE = re.compile(r"\b(\d{1,6})x(\d{1,6})\b")
_FPS = re.compile(r"\b(\d+(?:\.\d+)?) fps\b")
_T = TypeVar("_T")


@dataclass(frozen=True)
class VideoFrame:
    index: int  # position of the frame in the clip, from 0
    time_s: float  # when it is shown, in seconds from the start of the clip
    image: Image.Image  # RGB, longest side <= max_side when one was given


def is_video(path_or_bytes: str | os.PathLike[str] | bytes) -> bool:
    """Whether the data is a clip to sample frames from, judged by its first bytes.

    MP4/MOV (``ftyp`` box that is not a HEIF/AVIF still or an audio-only brand), WebM/MKV
    (EBML) and GIF, WebP or PNG with more than one frame. A still image, a single-frame GIF
    and anything unrecognised are not videos. A path that cannot be read raises
    :class:`InvalidInputError`.
    """
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        data = bytes(path_or_bytes)
        kind = _sniff(data[:_HEAD_BYTES])
        if kind in _PILLOW_KINDS:
            return _is_animated(io.BytesIO(data), kind)
        return kind is not None
    name = os.fspath(path_or_bytes)
    kind = _sniff(_read_head(path_or_bytes, name))
    if kind in _PILLOW_KINDS:
        return _is_animated(path_or_bytes, kind)
    return kind is not None


def container_kind(data: bytes) -> str | None:
    """``"mov"``, ``"matroska"``, ``"gif"``, ``"webp"`` or ``"png"`` by the first bytes, else
    None (a JPEG, or nothing castbook samples frames from). Says nothing about frame count."""
    return _sniff(bytes(data[:_HEAD_BYTES]))


def clip_dimensions(
    source: str | os.PathLike[str] | bytes, *, label: str | None = None
) -> tuple[int, int, int] | None:
    """``(frames, width, height)`` of a clip without decoding its pictures, or None for a
    still image (or a clip whose frame size ffmpeg does not report).

    Animated GIF/WebP/PNG: Pillow's frame count and canvas size, read from the file's
    structure. MP4/MOV, WebM/MKV: ffmpeg's demux-only pass (the one :func:`sample_frames`
    makes first) counts the packets and reads the stream's frame size. Unreadable data raises
    the error :func:`sample_frames` would.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data: bytes | None = bytes(source)
        name = label or "video"
        head = data[:_HEAD_BYTES]
        path: str | None = None
    else:
        data, path = None, os.fspath(source)
        name = label or path
        head = _read_head(path, name)
    kind = _sniff(head)
    if kind is None:
        return None
    if kind in _PILLOW_KINDS:
        opened: str | IO[bytes] = path if data is None else io.BytesIO(data)
        try:
            with Image.open(opened, formats=[_PILLOW_KINDS[kind]]) as image:
                count = getattr(image, "n_frames", 1)
                width, height = image.size
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"{name} has far too many pixels ({exc})") from exc
        except (UnidentifiedImageError, *_PILLOW_ERRORS) as exc:
            raise CorruptImageError(f"{name} cannot be read as {kind.upper()} ({exc})") from exc
        return (count, width, height) if count >= 2 else None
    exe = _ffmpeg_exe()
    with _on_disk(path, data, kind) as file_path:
        target = "file:" + os.path.abspath(file_path)
        head_args = [exe, "-hide_banner", "-nostdin", "-nostats", "-threads", "0"]
        source_args = ["-f", kind, "-protocol_whitelist", "file", "-i", target, "-map", "0:V:0"]
        probe = _probe(head_args, source_args, kind, name, target)
    if probe.size is None:
        return None
    return probe.frames, probe.size[0], probe.size[1]


def sample_frames(
    source: str | os.PathLike[str] | bytes,
    *,
    max_frames: int = 16,
    max_side: int | None = 1024,
    label: str | None = None,
    budget: PixelBudget | None = None,
) -> list[VideoFrame]:
    """Up to ``max_frames`` frames spread evenly over the whole clip, in order.

    With two or more samples the first and last frames are always among them; a single
    sample is the first frame; a clip with fewer frames than ``max_frames`` gives all of them.
    Frames are RGB (transparency is laid on white) and, when ``max_side`` is set, shrunk to fit
    a ``max_side`` square keeping their aspect ratio (never enlarged). ``label`` names bytes
    input in error messages (a path names itself). ``budget`` is charged for every frame
    decoded (all of them, not only the samples: each is decoded to reach the next), and stops
    the decoding with :class:`~castbook.evaluation.budget.BudgetExceededError` when it runs out.
    """
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise FieldError("max_frames", f"must be a whole number of at least 1, not {max_frames!r}")
    if max_side is not None and (
        isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1
    ):
        raise FieldError(
            "max_side", f"must be a whole number of at least 1 or None, not {max_side!r}"
        )
    if isinstance(source, bytes | bytearray | memoryview):
        data: bytes | None = bytes(source)
        name = label or "video"
        head = data[:_HEAD_BYTES]
        path: str | None = None
    elif isinstance(source, str | os.PathLike):
        data = None
        path = os.fspath(source)
        name = label or path
        head = _read_head(path, name)
    else:
        raise TypeError(f"source must be a path or bytes, not {type(source).__name__}")
    if not head:
        raise CorruptImageError(f"{name} is empty (0 bytes), not a video")
    kind = _sniff(head)
    if kind is None:
        raise UnsupportedImageError(f"{name} is not a video ({_describe(head)}); {_SUPPORTED}")
    if kind in _PILLOW_KINDS:
        opened: str | IO[bytes] = path if data is None else io.BytesIO(data)
        return _sample_with_pillow(opened, kind, name, max_frames, max_side, budget)
    return _sample_with_ffmpeg(path, data, kind, name, max_frames, max_side, budget)


# --- choosing frames ---------------------------------------------------------------------


def _plan(count: int, max_frames: int) -> list[int]:
    """Evenly spaced indices into ``count`` frames, first and last included; see _select_expr."""
    samples = min(count, max_frames)
    if samples <= 1:
        return [0] if count else []
    # round(k * (count-1) / (samples-1)), halves rounded up, in exact integer arithmetic.
    gaps = samples - 1
    return [(2 * k * (count - 1) + gaps) // (2 * gaps) for k in range(samples)]


def _select_expr(count: int, max_frames: int) -> str:
    """An ffmpeg ``select`` expression true exactly for the frame numbers ``_plan`` picks.

    The spacing is at least one frame, so frame ``n`` can only be sample ``k = round(n / step)``;
    the expression computes that ``k`` and checks that it maps back to ``n``. It costs the same
    for every frame however many samples are asked for. The integers involved are far below
    2**52, so ffmpeg's double arithmetic gives the exact results the integer code does.
    """
    samples = min(count, max_frames)
    if samples <= 1:
        return "eq(n,0)"
    gaps, last = samples - 1, count - 1
    k = f"floor((2*n*{gaps}+{last})/(2*{last}))"
    return f"eq(floor((2*{k}*{last}+{gaps})/(2*{gaps})),n)"


# --- recognising the container -----------------------------------------------------------


def _sniff(head: bytes) -> str | None:
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return None if head[8:12] in _NOT_VIDEO_BRANDS else "mov"
    if len(head) >= 8 and head[4:8] in (b"moov", b"wide", b"mdat"):
        return "mov"  # QuickTime files from before the ftyp box
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    return None


def _describe(head: bytes) -> str:
    if head.startswith(b"\xff\xd8\xff"):
        return "it is a JPEG image"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace").strip()
        return f"its ISO media brand {brand!r} is a still image or audio"
    if head.startswith((b"BM", b"II*\x00", b"MM\x00*")):
        return "it is a still image"
    return "castbook does not recognise its format"


def _read_head(path: str | os.PathLike[str], name: str) -> bytes:
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise InvalidInputError(f"{name} is a directory, not a video file")
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError(f"{name} is not a regular file")
        with open(path, "rb") as handle:
            return handle.read(_HEAD_BYTES)
    except FileNotFoundError:
        raise InvalidInputError(f"video file not found: {name}") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read video file {name}: {exc.strerror}") from None


# --- Pillow: animated GIF, WebP and PNG --------------------------------------------------


def _is_animated(fp: str | os.PathLike[str] | IO[bytes], kind: str) -> bool:
    try:
        with Image.open(fp, formats=[_PILLOW_KINDS[kind]]) as image:
            return bool(getattr(image, "is_animated", False))
    except Image.DecompressionBombError:
        return False
    except (UnidentifiedImageError, *_PILLOW_ERRORS):
        # A damaged GIF is most likely a damaged clip; sample_frames then says what is wrong.
        return kind == "gif"


def _sample_with_pillow(
    fp: str | IO[bytes],
    kind: str,
    name: str,
    max_frames: int,
    max_side: int | None,
    budget: PixelBudget | None = None,
) -> list[VideoFrame]:
    fmt = _PILLOW_KINDS[kind]
    try:
        with Image.open(fp, formats=[fmt]) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageTooLargeError(
                    f"{name} has {width}×{height} frames; the limit is "
                    f"{MAX_PIXELS // 1_000_000} MP a frame"
                )
            count = getattr(image, "n_frames", 1)
            if count < 2:
                what = "single-frame GIF" if kind == "gif" else f"still {fmt} image"
                raise UnsupportedImageError(f"{name} is a {what}, not a video; {_SUPPORTED}")
            chosen = _plan(count, max_frames)
            wanted = set(chosen)
            frames: list[VideoFrame] = []
            elapsed_ms = 0
            for index in range(chosen[-1] + 1):
                if budget is not None:
                    budget.charge(width * height, name)  # before the frame is decoded
                image.seek(index)
                # Reaching a frame decodes the ones before it anyway (they draw on each
                # other), and WebP only reports a frame's duration once it is loaded.
                image.load()
                if index in wanted:
                    picture = _flatten(image)
                    if max_side is not None:
                        picture = fit_within(picture, max_side)
                    frames.append(VideoFrame(index, elapsed_ms / 1000, picture))
                elapsed_ms += _delay_ms(image, kind)
            return frames
    except InvalidInputError:
        raise  # ours, from above; it is a ValueError, which the next clauses would catch
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name} has far too many pixels ({exc})") from exc
    except UnidentifiedImageError:
        raise CorruptImageError(
            f"{name} starts like a {fmt} file but its header is damaged or truncated"
        ) from None
    except _PILLOW_ERRORS as exc:
        raise CorruptImageError(
            f"{name} is a damaged or truncated {fmt} file and cannot be decoded ({exc})"
        ) from exc


def _flatten(frame: Image.Image) -> Image.Image:
    """The frame as RGB, with transparent parts shown on white."""
    if frame.mode == "RGB" and not frame.has_transparency_data:
        return frame.copy()
    rgba = frame.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def _delay_ms(image: Image.Image, kind: str) -> int:
    delay = image.info.get("duration") or 0
    if kind == "gif" and delay < _GIF_MIN_DELAY_MS:
        return _GIF_DEFAULT_DELAY_MS
    return int(delay)


# --- ffmpeg: MP4/MOV, WebM/MKV -----------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    frames: int
    size: tuple[int, int] | None
    fps: float | None


def _ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise MissingDependencyError("video scoring", "video", "imageio-ffmpeg") from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        raise MissingDependencyError(
            "video scoring", "video", "an ffmpeg binary; imageio-ffmpeg found none"
        ) from None


def _sample_with_ffmpeg(
    path: str | None,
    data: bytes | None,
    kind: str,
    name: str,
    max_frames: int,
    max_side: int | None,
    budget: PixelBudget | None = None,
) -> list[VideoFrame]:
    exe = _ffmpeg_exe()
    with _on_disk(path, data, kind) as file_path:
        target = "file:" + os.path.abspath(file_path)
        head = [exe, "-hide_banner", "-nostdin", "-nostats", "-threads", "0"]
        source = ["-f", kind, "-protocol_whitelist", "file", "-i", target, "-map", "0:V:0"]
        probe = _probe(head, source, kind, name, target)
        if probe.frames == 0:
            raise CorruptImageError(f"{name} has a video stream with no frames in it")
        if probe.size is not None and probe.size[0] * probe.size[1] > MAX_PIXELS:
            width, height = probe.size
            raise ImageTooLargeError(
                f"{name} has {width}×{height} frames; the limit is "
                f"{MAX_PIXELS // 1_000_000} MP a frame"
            )
        count = probe.frames
        if budget is not None and probe.size is not None:
            # Every frame is decoded (the select filter sees them all), so all are charged.
            budget.charge(count * probe.size[0] * probe.size[1], name)
        frames, decoded = _decode(
            head, source, count, max_frames, max_side, probe, kind, name, target
        )
        if decoded and decoded != count:
            # The demuxer's packet count was not the decoder's frame count (damaged data,
            # packets that hold no picture): choose again among the frames that really exist.
            if budget is not None and probe.size is not None:
                budget.charge(decoded * probe.size[0] * probe.size[1], name)  # decoded again
            frames, _ = _decode(
                head, source, decoded, max_frames, max_side, probe, kind, name, target
            )
        if not frames:
            raise CorruptImageError(
                f"{name} is a damaged {_FFMPEG_KINDS[kind]} file: no frame could be decoded"
            )
        return frames


@contextlib.contextmanager
def _on_disk(path: str | None, data: bytes | None, kind: str) -> Iterator[str]:
    if path is not None:
        yield path
        return
    assert data is not None
    suffix = ".mp4" if kind == "mov" else ".mkv"
    with tempfile.TemporaryDirectory(prefix="castbook-video-") as folder:
        file_path = os.path.join(folder, "clip" + suffix)
        Path(file_path).write_bytes(data)
        yield file_path


def _probe(head: list[str], source: list[str], kind: str, name: str, target: str) -> _Probe:
    command = [*head, "-loglevel", "level+info", *source]
    command += ["-c", "copy", "-f", "null", "-progress", "pipe:1", "-"]
    stdout, log, code = _run(command, name, lambda out: out.read())
    if code != 0:
        _raise_for_failure(log, kind, name, target)
    if any("partial file" in message for level, message in _messages(log) if level == "error"):
        raise CorruptImageError(
            f"{name} is a truncated {_FFMPEG_KINDS[kind]} file: it ends before its last frame"
        )
    counts = re.findall(rb"^frame=\s*(\d+)", stdout, re.MULTILINE)
    if not counts:
        raise CorruptImageError(f"{name} could not be read as {_FFMPEG_KINDS[kind]} video")
    mapped = _STREAM_MAPPING.search(log)
    stream_line = ""
    for line in log.splitlines():
        if "Video:" in line and (mapped is None or f"Stream #0:{mapped[1]}" in line):
            stream_line = line
            break
    size = _FRAME_SIZE.search(stream_line.split("Video:", 1)[-1])
    fps = _FPS.search(stream_line)
    return _Probe(
        frames=int(counts[-1]),
        size=(int(size[1]), int(size[2])) if size else None,
        fps=float(fps[1]) if fps else None,
    )


def _decode(
    head: list[str],
    source: list[str],
    count: int,
    max_frames: int,
    max_side: int | None,
    probe: _Probe,
    kind: str,
    name: str,
    target: str,
) -> tuple[list[VideoFrame], int | None]:
    """The planned frames, and how many frames the decoder produced in all (when it said)."""
    chosen = _plan(count, max_frames)
    graph = f"select='{_select_expr(count, max_frames)}',showinfo,format=rgb24"
    command = [*head, "-loglevel", "level+verbose", *source, "-an", "-sn", "-dn"]
    command += ["-vf", graph, "-fps_mode", "passthrough", "-f", "image2pipe", "-c:v", "ppm"]
    command += ["pipe:1"]

    def read(out: IO[bytes]) -> list[Image.Image]:
        pictures = []
        while (picture := _read_ppm(out, name)) is not None:
            pictures.append(fit_within(picture, max_side) if max_side is not None else picture)
        return pictures

    pictures, log, code = _run(command, name, read)
    if code != 0:
        _raise_for_failure(log, kind, name, target)
    times = {int(n): value for n, value in _SHOWINFO.findall(log)}
    frames = []
    for position, (index, picture) in enumerate(zip(chosen, pictures, strict=False)):
        frames.append(VideoFrame(index, _seconds(times.get(position), index, probe), picture))
    decoded = _DECODED.search(log)
    return frames, int(decoded[1]) if decoded else None


def _seconds(pts_time: str | None, index: int, probe: _Probe) -> float:
    try:
        return max(0.0, float(pts_time)) if pts_time is not None else _guess(index, probe)
    except ValueError:  # "NOPTS"
        return _guess(index, probe)


def _guess(index: int, probe: _Probe) -> float:
    return index / probe.fps if probe.fps else 0.0


def _read_ppm(out: IO[bytes], name: str) -> Image.Image | None:
    """One binary PPM image as ffmpeg's ppm encoder writes it, or None at the end of the pipe."""
    magic = out.readline()
    if not magic:
        return None
    dims = out.readline().split()
    depth = out.readline().strip()
    if magic.strip() != b"P6" or len(dims) != 2 or depth != b"255":
        raise CorruptImageError(f"{name}: ffmpeg sent frames castbook cannot read")
    width, height = int(dims[0]), int(dims[1])
    if width * height > MAX_PIXELS:
        raise ImageTooLargeError(
            f"{name} has {width}×{height} frames; the limit is {MAX_PIXELS // 1_000_000} MP a frame"
        )
    pixels = out.read(width * height * 3)
    if len(pixels) != width * height * 3:
        return None  # ffmpeg stopped mid-frame; the caller judges by how many came
    return Image.frombytes("RGB", (width, height), pixels)


def _run(command: list[str], name: str, read: Callable[[IO[bytes]], _T]) -> tuple[_T, str, int]:
    """Run ffmpeg with ``read`` consuming its stdout; returns (what read gave, log, exit code)."""
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file
        )

        def stop() -> None:
            timed_out.set()
            process.kill()

        timer = threading.Timer(FFMPEG_TIMEOUT_S, stop)
        timer.start()
        try:
            assert process.stdout is not None
            result = read(process.stdout)
            process.stdout.read()  # drain what is left, so ffmpeg is never blocked writing
            code = process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:  # read() raised: stop ffmpeg before leaving
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        log_file.seek(0)
        log = log_file.read().decode("utf-8", "replace")
    if timed_out.is_set():
        raise InvalidInputError(
            f"{name} took more than {FFMPEG_TIMEOUT_S:g} s to read; try a shorter clip"
        )
    return result, log, code


def _messages(log: str) -> Iterator[tuple[str, str]]:
    for line in log.splitlines():
        match = _LOG_PREFIX.match(line)
        if match:
            yield match[1], line[match.end() :].strip()


def _raise_for_failure(log: str, kind: str, name: str, target: str) -> None:
    problems = [text for level, text in _messages(log) if level in ("error", "fatal")]
    if any("matches no streams" in text for text in problems):
        raise UnsupportedImageError(f"{name} has no video stream (audio only?); {_SUPPORTED}")
    specific = [text for text in problems if not text.startswith("Error opening input")]
    reason = (specific or problems or ["ffmpeg could not read it"])[0]
    reason = reason.replace(target, "the file").rstrip(".")
    raise CorruptImageError(
        f"{name} is a damaged or truncated {_FFMPEG_KINDS.get(kind, kind)} file and "
        f"cannot be decoded ({reason})"
    )
