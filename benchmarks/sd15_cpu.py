"""How long SD 1.5 takes on a CPU: seconds per denoising step and for the VAE decode.

    .venv/bin/python benchmarks/sd15_cpu.py [--size 512] [--steps 3]

Builds an SD 1.5-*sized* pipeline with random weights (tests/support/tiny_diffusers.py
``make_sd15_sized``: the real UNet, VAE and text encoder shapes, so the same compute as the
real model) in float32, as castbook runs it on a CPU, and times one text-to-image call with
``--steps`` steps at ``--size``² (one warm-up step first). Prints the core count and load
average: CPU time depends on both. The README's CPU figures come from here.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    options = parser.parse_args()

    import torch
    from diffusers import StableDiffusionPipeline
    from tests.support.tiny_diffusers import make_sd15_sized

    print(
        f"cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, "
        f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_sd15_sized(Path(tmp) / "sd15", torch.float32)
        pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    steps: list[float] = []

    def on_step(_pipe, _step, _timestep, tensors):
        steps.append(time.perf_counter())
        return tensors

    common = {"prompt": "a portrait", "height": options.size, "width": options.size}
    pipe(**common, num_inference_steps=1, output_type="latent")  # warm-up
    started = time.perf_counter()
    latents = pipe(
        **common,
        num_inference_steps=options.steps,
        output_type="latent",
        callback_on_step_end=on_step,
    ).images
    per_step = (steps[-1] - started) / options.steps
    decode_started = time.perf_counter()
    with torch.no_grad():
        pipe.vae.decode(latents / pipe.vae.config.scaling_factor)
    decode = time.perf_counter() - decode_started
    print(
        f"SD 1.5-sized, float32, {options.size}²: {per_step:.2f} s per step "
        f"(text encoding included in the first), VAE decode {decode:.2f} s"
    )
    for count in (20, 30):
        print(f"  {count} steps + decode ≈ {count * per_step + decode:.0f} s")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
