"""Writing results: PNGs that carry their generation parameters, MP4 (and GIF) videos."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from castbook import __version__
from castbook.errors import MissingDependencyError
from castbook.generation.base import GenerationResult, PreparedRequest, Video

__all__ = [
    "SavedOutput",
    "encode_mp4",
    "encode_png",
    "generation_parameters",
    "read_parameters",
    "save_result",
]

PARAMETERS_KEY = "castbook"


@dataclass(frozen=True)
class SavedOutput:
    path: Path
    kind: str  # "image", "video" or "gif"
    seed: int


def generation_parameters(
    prepared: PreparedRequest, result: GenerationResult, index: int
) -> dict[str, Any]:
    request = prepared.request
    parameters = {
        "castbook_version": __version__,
        "mode": request.mode.value,
        "prompt": prepared.prompt,
        "negative_prompt": prepared.negative_prompt,
        "user_prompt": request.prompt,
        "characters": list(request.characters),
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "guidance": request.guidance,
        "denoise": request.denoise if request.mode.value != "t2i" else None,
        "seed": result.seed,
        "index": index,
        "batch": request.batch,
        "reference_scale": request.reference_scale,
        **{f"backend_{k}": v for k, v in result.metadata.items() if _plain(v)},
    }
    for key in ("loras", "lora_notes"):  # which character LoRAs applied, and which not
        if key in result.metadata:
            parameters[key] = result.metadata[key]
    return parameters


def _plain(value: object) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _a1111_line(parameters: dict[str, Any]) -> str:
    # The "parameters" text chunk in the form most image viewers and UIs already read.
    return (
        f"{parameters['prompt']}\nNegative prompt: {parameters['negative_prompt']}\n"
        f"Steps: {parameters['steps']}, CFG scale: {parameters['guidance']}, "
        f"Seed: {parameters['seed']}, Size: {parameters['width']}x{parameters['height']}"
    )


def save_result(
    result: GenerationResult,
    prepared: PreparedRequest,
    folder: str | os.PathLike[str],
    *,
    gif: bool = False,
    stem: str | None = None,
) -> list[SavedOutput]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = stem or datetime.now(UTC).strftime("castbook-%Y%m%d-%H%M%S")
    saved: list[SavedOutput] = []
    for index, image in enumerate(result.images):
        path = _free_path(folder / f"{stem}-{result.seed}-{index + 1}.png")
        path.write_bytes(encode_png(image, generation_parameters(prepared, result, index)))
        saved.append(SavedOutput(path, "image", result.seed))
    for index, video in enumerate(result.videos):
        path = _free_path(folder / f"{stem}-{result.seed}-{index + 1}.mp4")
        write_mp4(video, path)
        saved.append(SavedOutput(path, "video", result.seed))
        if gif:
            gif_path = path.with_suffix(".gif")
            write_gif(video, gif_path)
            saved.append(SavedOutput(gif_path, "gif", result.seed))
    return saved


def encode_png(image: Image.Image, parameters: dict[str, Any]) -> bytes:
    """PNG bytes that carry ``parameters`` (A1111-style text chunk + castbook JSON chunk)."""
    import io

    info = PngInfo()
    info.add_text("parameters", _a1111_line(parameters))
    info.add_itxt(PARAMETERS_KEY, json.dumps(parameters, ensure_ascii=False))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def encode_mp4(video: Video) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="castbook-video-") as tmp:
        path = Path(tmp) / "video.mp4"
        write_mp4(video, path)
        return path.read_bytes()


def read_parameters(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parameters castbook stored in one of its PNGs."""
    with Image.open(path) as image:
        return json.loads(image.text[PARAMETERS_KEY])


def write_mp4(video: Video, path: Path) -> None:
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise MissingDependencyError("saving videos", "video", "imageio-ffmpeg") from exc
    import numpy as np

    first = video.frames[0].convert("RGB")
    # H.264 wants even sides; pad by one pixel rather than resample.
    width, height = first.width + first.width % 2, first.height + first.height % 2
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=video.fps, quality=8, macro_block_size=1
    )
    writer.send(None)
    for frame in video.frames:
        canvas = Image.new("RGB", (width, height))
        canvas.paste(frame.convert("RGB"))
        writer.send(np.ascontiguousarray(np.asarray(canvas)))
    writer.close()


def write_gif(video: Video, path: Path) -> None:
    frames = [frame.convert("RGB") for frame in video.frames]
    frames[0].save(
        path,
        save_all=True,
        append_images=frames[1:],
        duration=round(1000 / video.fps),
        loop=0,
    )


def _free_path(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate
