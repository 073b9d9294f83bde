"""How fast a character LoRA trains: steps/s and peak memory.

    .venv/bin/python benchmarks/train_lora.py [--steps 40] [--resolution 64] [--rank 4]
    .venv/bin/python benchmarks/train_lora.py --full-size [--steps 60]   # on a CUDA GPU

Default: the tests' tiny random-weight SD 1.5 (tests/support/tiny_diffusers.py) on the CPU,
fp32, batch 1. ``--full-size``: an SD 1.5-*sized* pipeline with random weights
(``make_sd15_sized``: the real UNet, VAE and text-encoder shapes, so the real compute) on
CUDA, fp16 frozen weights with gradient checkpointing, 512 px, rank 16 — the issue's goal on
an H100-class GPU is ≥ 3 steps/s at batch 1 and < 12 GB peak VRAM.

Both run castbook's own ``train_lora`` (the code a task runs) on three reference images.
steps/s counts the steps after the first ``--warmup`` (the first steps pay for lazy
initialisation); loading the model is reported apart. Peak memory: the process's peak RSS
on the CPU (everything the process held, the model included), ``torch.cuda.max_memory_
allocated`` on the GPU. Prints the core count and the load average before and after, and
counts failed runs (a NaN loss counts as one): a run that fails is reported, not hidden.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _images(count: int, size: int) -> list:
    """Distinct pictures: a coloured canvas with a face-like oval placed differently."""
    from PIL import Image, ImageDraw

    colours = [(200, 60, 40), (40, 160, 90), (60, 80, 200)]
    images = []
    for i in range(count):
        image = Image.new("RGB", (size, size), colours[i % 3])
        shift = i * size // 10
        ImageDraw.Draw(image).ellipse(
            (size // 4 + shift, size // 5, 3 * size // 4 + shift, 4 * size // 5),
            fill=(240, 210, 180),
        )
        images.append(image)
    return images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="SD 1.5-sized, CUDA, fp16")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--rank", type=int, default=None)
    options = parser.parse_args()

    import torch
    from tests.support.tiny_diffusers import make_sd15_sized, make_tiny_sd15

    from castbook.generation.lora_train import TrainingProgress, TrainingSettings, train_lora

    full = options.full_size
    if full and not torch.cuda.is_available():
        print("--full-size needs a CUDA GPU; torch sees none here: not run")
        return 2
    steps = options.steps or (60 if full else 40)
    resolution = options.resolution or (512 if full else 64)
    rank = options.rank or (16 if full else 4)
    device = "cuda" if full else "cpu"
    print(
        f"cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, "
        f"load average: {_load()}"
    )
    if full:
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        built = time.perf_counter()
        if full:
            folder = make_sd15_sized(Path(tmp) / "sd15", torch.float16)
        else:
            folder = make_tiny_sd15(Path(tmp) / "sd15")
        print(f"model written in {time.perf_counter() - built:.1f} s")
        settings = TrainingSettings(
            steps=steps,
            rank=rank,
            resolution=resolution,
            checkpoint_every=steps + 1,
            device=device,
            precision="fp16" if full else None,
        )
        stamps: list[float] = []

        def progress(event: TrainingProgress) -> None:
            stamps.append(time.perf_counter())

        if full:
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            result = train_lora(
                folder,
                _images(3, max(96, resolution)),
                "cbk000000, long black hair, blue eyes",
                settings,
                Path(tmp) / "work",
                progress,
            )
        except Exception as exc:  # reported, counted: the figure is meaningless then
            failures += 1
            print(f"training failed: {type(exc).__name__}: {exc}")
            result = None
    if result is not None and any(math.isnan(loss) for loss in result.losses):
        failures += 1
        print("a loss was NaN")
    if result is not None and len(stamps) > options.warmup + 1:
        timed = stamps[options.warmup :]
        rate = (len(timed) - 1) / (timed[-1] - timed[0])
        load_time = stamps[0] - started
        tail = max(1, len(result.losses) // 10)
        first = sum(result.losses[:tail]) / tail
        last = sum(result.losses[-tail:]) / tail
        what = "SD 1.5-sized" if full else "tiny SD 1.5"
        print(
            f"{what}, {result.dtype} on {result.device}, {resolution}², rank {rank}, batch 1: "
            f"{rate:.2f} steps/s over steps {options.warmup + 1}–{steps} "
            f"(load + first step {load_time:.1f} s); loss {first:.4f} → {last:.4f}; "
            f"LoRA {len(result.data) / 1e6:.2f} MB"
        )
    if full:
        peak = torch.cuda.max_memory_allocated() / 1e9
        print(f"peak VRAM (allocated): {peak:.2f} GB")
    else:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"peak RSS of the process: {peak_kib / 1024:.0f} MiB")
    print(f"failed runs: {failures}; load average after: {_load()}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
