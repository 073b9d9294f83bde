"""Batched vs serial rendering, and castbook's overhead over the raw diffusers pipeline.

    .venv/bin/python benchmarks/batch_render.py [--steps 10] [--repeats 5]
    # on a GPU: SD 1.5-sized random weights (the real model's compute), 512 px, fp16
    python benchmarks/batch_render.py --full-size --device cuda --dtype float16 \
        --size 512 --steps 30

On a tiny random-weight SD 1.5 pipeline (the same one the tests build), at 256 px:

1. 8 variants as one batched call (castbook's default) vs 8 serial calls; ratio printed.
2. castbook's ``run_generation`` for one image vs calling the same loaded diffusers
   pipeline directly with the same prompt, steps, size and seed; the overhead is printed
   as a percentage of the raw pipeline time (target ≤ 5 %).
3. The Batch Render path end to end (8 different prompt variants of one character,
   rendered and scored): castbook's ``render_batch`` (variants in one pipeline call) vs
   rendering and scoring them one after another.

Medians of ``--repeats`` runs, all measured in this one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from castbook.generation import (  # noqa: E402
    Mode,
    PreparedRequest,
    Preset,
    parse_request,
    run_generation,
)
from castbook.generation.diffusers_backend import DiffusersBackend  # noqa: E402

PROMPT = "long black hair, blue eyes, white shirt, silver necklace, at a cafe, morning light"


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--full-size", action="store_true", help="SD 1.5-sized random weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    options = parser.parse_args()

    import torch
    from tests.support.tiny_diffusers import make_sd15_sized, make_tiny_sd15

    with tempfile.TemporaryDirectory() as tmp:
        if options.full_size:
            model = make_sd15_sized(Path(tmp) / "sd15", getattr(torch, options.dtype))
        else:
            model = make_tiny_sd15(Path(tmp) / "sd15")
        preset = Preset(
            id="bench-sd15",
            backend="diffusers",
            model=str(model),
            modes=(Mode.T2I,),
            options={"family": "sd15", "device": options.device, "dtype": options.dtype},
        )
        backend = DiffusersBackend(preset)

        def prepared(batch: int, seed: int) -> PreparedRequest:
            request = parse_request(
                {"prompt": PROMPT, "width": options.size, "height": options.size,
                 "steps": options.steps, "batch": batch, "seed": seed}
            )  # fmt: skip
            return PreparedRequest(request, PROMPT, "", seed, options=dict(preset.options))

        def castbook_batch() -> None:
            run_generation(backend, prepared(8, 1), lambda _: None)

        def castbook_serial() -> None:
            for i in range(8):
                run_generation(backend, prepared(1, 1 + i), lambda _: None)

        castbook_batch()  # load the pipeline outside the timings
        batched = median_seconds(castbook_batch, options.repeats)
        serial = median_seconds(castbook_serial, options.repeats)
        kind = "SD 1.5-sized" if options.full_size else "tiny SD 1.5"
        print(f"{kind}, {options.size} px, {options.steps} steps, {options.device} "
              f"{options.dtype}, median of {options.repeats}")  # fmt: skip
        print(f"  8 variants, one batched call : {batched * 1000:8.1f} ms "
              f"({8 / batched:6.1f} images/s)")  # fmt: skip
        print(f"  8 variants, 8 serial calls   : {serial * 1000:8.1f} ms "
              f"({8 / serial:6.1f} images/s)")  # fmt: skip
        print(f"  batched is {serial / batched:.2f}× the serial throughput\n")

        (entry,) = backend_pipelines(backend)
        pipe = entry

        def raw_pipeline() -> None:
            generator = torch.Generator("cpu").manual_seed(1)  # as castbook does
            pipe(
                PROMPT,
                negative_prompt="",
                num_inference_steps=options.steps,
                width=options.size,
                height=options.size,
                guidance_scale=7.5,
                generator=[generator],
                output_type="pil",
            )

        def castbook_single() -> None:
            run_generation(backend, prepared(1, 1), lambda _: None)

        raw_pipeline()
        # Interleave the two so drifting machine load affects both alike.
        raw_times, ours_times = [], []
        for _ in range(options.repeats * 2):
            raw_times.append(median_seconds(raw_pipeline, 1))
            ours_times.append(median_seconds(castbook_single, 1))
        raw, ours = statistics.median(raw_times), statistics.median(ours_times)
        overhead = 100 * (ours - raw) / raw
        verdict = "ok" if overhead <= 5 else "MISSED"
        print(f"  raw diffusers pipeline, 1 image : {raw * 1000:8.1f} ms")
        print(f"  castbook run_generation, 1 image: {ours * 1000:8.1f} ms")
        print(f"  castbook overhead: {overhead:+.1f} % of the raw pipeline time "
              f"(target ≤ 5 %) {verdict}\n")  # fmt: skip
        if options.full_size:
            print("  (the Batch Render path is measured on the tiny model only)")
            return
        from tests.support.tiny_diffusers import IP_ADAPTER_WEIGHT, make_tiny_ip_adapter

        with_adapter = Preset(
            id="bench-sd15-ip",
            backend="diffusers",
            model=str(model),
            modes=(Mode.T2I,),
            options={
                **preset.options,
                "ip_adapter": str(make_tiny_ip_adapter(Path(tmp) / "ip")),
                "ip_adapter_subfolder": "",
                "ip_adapter_weight": IP_ADAPTER_WEIGHT,
                "image_encoder_folder": "image_encoder",
            },
        )
        batch_render_path(Path(tmp), with_adapter, DiffusersBackend(with_adapter), options)


def batch_render_path(root: Path, preset: Preset, backend: DiffusersBackend, options) -> None:
    """8 prompt variants through render_batch vs one after another, scoring included."""
    from tests.test_evaluation import ALICE, character, png_bytes

    from castbook.blobs import BlobStore
    from castbook.db import Database
    from castbook.evaluation import Scorer
    from castbook.generation import apply_preset, prepare_request
    from castbook.library import CharacterLibrary, ImageInput
    from castbook.render.batch import BatchRender, render_batch, score_characters
    from castbook.render.references import character_reference_features

    library = CharacterLibrary(Database(f"sqlite:///{root / 'bench.db'}"), BlobStore(root / "b"))
    library.create(
        {"name": "Alice", "style_prompt": "long black hair, blue eyes"},
        [ImageInput(png_bytes(character(**ALICE)), "alice.png")],
    )
    prompts = tuple(f"variant {i}: at a cafe, morning light" for i in range(8))
    fields = {"width": options.size, "height": options.size, "steps": options.steps, "seed": 1}
    scorer = Scorer(faces=False)
    alice = library.get("Alice")
    references = {"Alice": character_reference_features(library, scorer, alice)}

    def batched() -> None:
        render_batch(BatchRender(("Alice",), prompts, preset.id, fields), library=library,
                     preset=preset, backend=backend, scorer=scorer)  # fmt: skip

    def one_after_another() -> None:
        for i, prompt in enumerate(prompts):
            values = {**fields, "prompt": prompt, "characters": ["Alice"], "seed": 1 + i}
            request = apply_preset(parse_request(values), preset)
            prepared = prepare_request(request, preset, library=library)
            image = run_generation(backend, prepared, lambda _: None).images[0]
            score_characters(scorer, references, [alice], image)

    batched()
    ours = median_seconds(batched, options.repeats)
    serial = median_seconds(one_after_another, options.repeats)
    print("  Batch Render, 8 variants rendered and scored:")
    print(f"    render_batch (one pipeline call) : {ours * 1000:8.1f} ms")
    print(f"    one after another                : {serial * 1000:8.1f} ms")
    print(f"    render_batch is {serial / ours:.2f}× faster")


def backend_pipelines(backend: DiffusersBackend) -> list[object]:
    """The text-to-image pipelines the backend has loaded (the ones castbook really calls)."""
    return [entry.pipeline for entry in backend.cache.entries()]


if __name__ == "__main__":
    main()
