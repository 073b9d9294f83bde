"""Consistency Eval throughput, as ratios against imagehash measured in the same run.

    .venv/bin/python benchmarks/eval_throughput.py [--count 1000] [--face-count 48]

1. Writes ``--count`` generated 1024×1024 candidates as JPEG and as PNG, then scores them
   against one reference with castbook's hash/appearance components (all cores) and times
   ``imagehash.average_hash`` on the same files. Targets: ≥ 3× imagehash on JPEG, ≥ 1.8× on
   PNG. Also prints how often castbook's aHash equals imagehash's on those files.
2. Scores 1024×1024 photos (from ../shared/eval/faces, padded to a square) with the face
   component on. Target: ≥ 8 images/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_data import EVAL_DIR

from castbook.evaluation import Scorer

SIDE = 1024


def render(index: int) -> Image.Image:
    """A render-like picture: smooth background, a lit figure, fine noise (not flat art)."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) / SIDE
    base = rng.uniform(40, 220, 3).astype(np.float32)
    tilt = rng.uniform(-60, 60, 3).astype(np.float32)
    pixels = base + tilt * (0.6 * x + 0.4 * y)[..., None]
    pixels += rng.normal(0, 4, (SIDE, SIDE, 1)).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    hair, cloth = (tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(2))
    cx = SIDE // 2 + int(rng.integers(-80, 80))
    draw.ellipse((cx - 220, 120, cx + 220, 600), fill=hair)
    draw.ellipse((cx - 150, 230, cx + 150, 590), fill=(240, 205, 180))
    draw.rectangle((cx - 300, 640, cx + 300, SIDE), fill=cloth)
    return image.filter(ImageFilter.GaussianBlur(1.2))


def write_pair(args: tuple[int, str]) -> None:
    index, folder = args
    image = render(index)
    image.save(Path(folder) / f"{index:04d}.jpg", quality=90)
    image.save(Path(folder) / f"{index:04d}.png")


def imagehash_rate(paths: list[str]) -> tuple[float, list[str]]:
    import imagehash

    started = time.perf_counter()
    hashes = []
    for path in paths:
        with Image.open(path) as image:
            hashes.append(str(imagehash.average_hash(image)))
    return len(paths) / (time.perf_counter() - started), hashes


def castbook_rate(scorer: Scorer, reference: Path, paths: list[str]) -> tuple[float, list]:
    features = [scorer.features(reference)]
    # Start the worker processes outside the timing (a long-lived Scorer keeps them).
    scorer.score(features, paths[:64])
    started = time.perf_counter()
    scores = scorer.score(features, paths)
    return len(paths) / (time.perf_counter() - started), scores


def ahash_agreement(
    scorer: Scorer, paths: list[str], reference_hashes: list[str]
) -> tuple[float, float]:
    same = 0
    drift = []
    for path, theirs in zip(paths, reference_hashes, strict=True):
        ours = scorer.features(path).ahash.hex()
        same += ours == theirs
        drift.append(bin(int(ours, 16) ^ int(theirs, 16)).count("1") * 100 / 64)
    return 100 * same / len(paths), float(np.mean(drift))


def face_images(folder: Path, count: int) -> list[str]:
    photos = sorted((EVAL_DIR / "faces").glob("*.jpg"))
    paths = []
    for index in range(count):
        with Image.open(photos[index % len(photos)]) as photo:
            photo = photo.convert("RGB")
            photo.thumbnail((SIDE, SIDE))
            canvas = Image.new("RGB", (SIDE, SIDE), (128, 128, 128))
            canvas.paste(photo, ((SIDE - photo.width) // 2, (SIDE - photo.height) // 2))
        path = folder / f"face-{index:03d}.jpg"
        canvas.save(path, quality=92)
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--face-count", type=int, default=48)
    parser.add_argument(
        "--images", type=Path, help="keep the generated candidates here and reuse them next time"
    )
    parser.add_argument("--skip-faces", action="store_true")
    options = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="castbook-bench-") as tmp:
        folder = options.images or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        missing = [i for i in range(options.count) if not (folder / f"{i:04d}.png").exists()]
        started = time.perf_counter()
        with ProcessPoolExecutor(cores) as pool:
            list(pool.map(write_pair, [(i, str(folder)) for i in missing], chunksize=8))
        print(
            f"wrote {len(missing)} of {options.count} JPEG + PNG candidates at {SIDE}×{SIDE} "
            f"in {time.perf_counter() - started:.0f} s ({cores} cores)\n"
        )
        reference = folder / "reference.png"
        render(10_000).save(reference)
        scorer = Scorer(faces=False)
        print(
            f"{'format':<6} {'imagehash img/s':>16} {'castbook img/s':>15} {'ratio':>6} "
            f"{'target':>7} {'aHash equal':>12} {'mean |Δ|':>9}"
        )
        for suffix, target in ((".jpg", 3.0), (".png", 1.8)):
            paths = [str(folder / f"{i:04d}{suffix}") for i in range(options.count)]
            theirs, their_hashes = imagehash_rate(paths)
            ours, scores = castbook_rate(scorer, reference, paths)
            assert all(s.ok for s in scores), [s.error for s in scores if not s.ok][:3]
            equal, drift = ahash_agreement(scorer, paths[:200], their_hashes[:200])
            verdict = "ok" if ours / theirs >= target else "MISSED"
            print(
                f"{suffix[1:]:<6} {theirs:16.1f} {ours:15.1f} {ours / theirs:5.2f}× "
                f"{target:5.1f}× {equal:10.1f} % {drift:7.2f}  {verdict}"
            )

        if options.skip_faces:
            return
        if not (EVAL_DIR / "faces").is_dir():
            print(f"\n{EVAL_DIR} is absent: face throughput not measured")
            return
        face_scorer = Scorer(faces=True)
        paths = face_images(folder, options.face_count)
        reference_features = [face_scorer.features(paths[0])]
        for workers in (1, cores):
            face_scorer.score(reference_features, paths[:24], workers=workers)
            started = time.perf_counter()
            results = face_scorer.score(reference_features, paths, workers=workers)
            rate = len(paths) / (time.perf_counter() - started)
            found = sum(r.basis == "face" for r in results)
            print(
                f"\nfaces at {SIDE}×{SIDE}, {workers} process(es): {rate:.1f} images/s "
                f"(face found in {found}/{len(paths)}; target ≥ 8 images/s with all cores)"
            )


if __name__ == "__main__":
    main()
