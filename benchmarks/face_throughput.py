"""How many 1024×1024 pictures per second face identity scoring embeds, and how accurately.

    .venv/bin/python benchmarks/face_throughput.py [--n 40] [--workers 2] [--detect-side 640 ...]
        [--runtime torch dlib]

Inputs: the labelled photos in ``../shared/eval/faces`` (never copied into the repository),
each fitted into 1024×1024 (scaled, then padded with grey) and saved as a JPEG (quality 92),
cycled up to ``--n`` pictures. Without that folder the script says so and exits 0. Each timed
picture is decoded from its JPEG bytes inside the clock (castbook's ``decode_image``, as
scoring a file does), then embedded.

Measured per ``--runtime`` (what runs the embedding network: torch or dlib, the same
network and weights) and ``--detect-side`` setting:

* model load time (excluded from the rates),
* images/s of decoding + ``FaceEmbedder.embed`` in this process, and with ``--workers``
  processes that each
  load their own embedder and pull pictures from a shared queue (timed from the moment every
  worker is loaded until the last picture is done), with the CPU time per picture,
* accuracy on the original photos: how many had a face found, and the ROC AUC of -distance
  over every pair of photos with a face (same person = positive).

The issue's target: at least 8 images/s on 1024×1024 inputs on a 2-core machine.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

from PIL import Image, ImageOps

from castbook.evaluation import faces
from castbook.evaluation.faces import FaceEmbedder, best_match_distance, faces_available
from castbook.images import decode_image

TARGET_PER_SECOND = 8.0


def shared_faces_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "eval" / "faces"


def read_labels(folder: Path) -> dict[str, str]:
    with open(folder / "labels.csv", newline="") as handle:
        return {row["file"]: row["identity"] for row in csv.DictReader(handle)}


def open_photo(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        return ImageOps.exif_transpose(opened).convert("RGB")


def bench_pictures(folder: Path, files: list[str], count: int, side: int) -> list[bytes]:
    """The pictures as JPEG files' bytes: decoding them is part of what is timed."""
    pictures = []
    for name in itertools.islice(itertools.cycle(files), count):
        fitted = ImageOps.pad(open_photo(folder / name), (side, side), color=(128, 128, 128))
        buffer = io.BytesIO()
        fitted.save(buffer, "JPEG", quality=92)
        pictures.append(buffer.getvalue())
    return pictures


def embed_file(embedder: FaceEmbedder, data: bytes) -> list:
    """Decode a JPEG file's bytes (full size, as scoring with faces does), then embed."""
    return embedder.embed(decode_image(data).image)


def roc_auc(positives: list[float], negatives: list[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    ranked = sorted([(s, 1) for s in positives] + [(s, 0) for s in negatives])
    rank_sum = 0.0
    index = 0
    while index < len(ranked):
        end = index
        while end < len(ranked) and ranked[end][0] == ranked[index][0]:
            end += 1
        mean_rank = (index + 1 + end) / 2  # 1-based ranks index+1 … end share their mean
        rank_sum += mean_rank * sum(label for _, label in ranked[index:end])
        index = end
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def accuracy(embedder: FaceEmbedder, folder: Path, labels: dict[str, str]) -> tuple[int, float]:
    embeddings = {}
    for name in labels:
        faces = embedder.embed(open_photo(folder / name))
        if faces:
            embeddings[name] = faces
    positives: list[float] = []
    negatives: list[float] = []
    for a, b in itertools.combinations(sorted(embeddings), 2):
        distance = best_match_distance(embeddings[a], embeddings[b])
        assert distance is not None
        (positives if labels[a] == labels[b] else negatives).append(-distance)
    return len(embeddings), roc_auc(positives, negatives)


def run_single(embedder: FaceEmbedder, pictures: list) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, pictures with a face) in this process."""
    embed_file(embedder, pictures[0])  # warm-up: first-call allocations
    cpu = time.process_time()
    start = time.perf_counter()
    found = sum(1 for picture in pictures if embed_file(embedder, picture))
    return time.perf_counter() - start, time.process_time() - cpu, found


def _worker(settings, pictures, tasks, barrier, results) -> None:
    faces._detector_state = None  # a forked worker loads everything itself, from scratch
    started = time.perf_counter()
    embedder = FaceEmbedder(**settings)
    loaded = time.perf_counter() - started
    embed_file(embedder, pictures[0])  # warm-up, like the single-process run
    barrier.wait()
    cpu = time.process_time()
    found = 0
    while (index := tasks.get()) is not None:
        found += bool(embed_file(embedder, pictures[index]))
    results.put((loaded, time.perf_counter(), time.process_time() - cpu, found))


def run_parallel(settings: dict, pictures: list, workers: int) -> tuple[float, float, int, float]:
    """(wall seconds, CPU seconds, pictures with a face, slowest load) with ``workers``."""
    context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    tasks = context.Queue()
    for index in range(len(pictures)):
        tasks.put(index)
    for _ in range(workers):
        tasks.put(None)
    results = context.Queue()
    barrier = context.Barrier(workers + 1)
    processes = [
        context.Process(target=_worker, args=(settings, pictures, tasks, barrier, results))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    barrier.wait()
    start = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes on Linux
    outcomes = [results.get() for _ in processes]
    for process in processes:
        process.join()
    end = max(outcome[1] for outcome in outcomes)
    cpu = sum(outcome[2] for outcome in outcomes)
    found = sum(outcome[3] for outcome in outcomes)
    return end - start, cpu, found, max(outcome[0] for outcome in outcomes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="pictures per timed run")
    parser.add_argument("--side", type=int, default=1024, help="picture size (square)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the median is shown")
    parser.add_argument("--detect-side", type=int, nargs="+", default=[512])
    parser.add_argument("--max-upsample", type=int, default=2)
    parser.add_argument(
        "--fast-side", type=int, default=256, help="the first, cheaper pass (0: none)"
    )
    parser.add_argument("--no-accuracy", action="store_true", help="skip the AUC pass")
    parser.add_argument(
        "--runtime",
        nargs="+",
        default=["auto"],
        choices=faces.NETWORK_RUNTIMES,
        help="what runs the embedding network (auto: torch when installed)",
    )
    args = parser.parse_args(argv)

    folder = shared_faces_dir()
    if not (folder / "labels.csv").is_file():
        print(f"shared evaluation photos not found at {folder}: nothing to measure")
        return 0
    if not faces_available():
        print("face scoring is not installed (pip install 'castbook[faces]'): nothing to measure")
        return 0

    labels = read_labels(folder)
    pictures = bench_pictures(folder, sorted(labels), args.n, args.side)
    n = len(pictures)
    started = time.perf_counter()
    FaceEmbedder()
    cold_load = time.perf_counter() - started
    print(
        f"{n} pictures {args.side}×{args.side} from {len(labels)} photos; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.1f}; median of {args.repeat} runs; "
        f"target >= {TARGET_PER_SECOND:g} images/s"
    )
    print(f"model load, cold, excluded from the rates: {cold_load:.2f} s")
    wp = f"{args.workers}p"
    header = (
        f"{'runtime':>7} {'detect_side':>11} {'ms/img':>6} {'CPU ms':>6} {'img/s 1p':>8} "
        f"{'img/s ' + wp:>8} {'ratio':>5} {'CPU ms ' + wp:>9} {wp + ' load s':>9} "
        f"{'found':>7} {'photos found':>12} {'AUC':>6}"
    )
    print(header)
    print("-" * len(header))
    for runtime, detect_side in itertools.product(args.runtime, args.detect_side):
        settings = {
            "detect_side": detect_side,
            "fast_side": args.fast_side or None,
            "max_upsample": args.max_upsample,
            "runtime": runtime,
        }
        embedder = FaceEmbedder(**settings)
        single = [run_single(embedder, pictures) for _ in range(args.repeat)]
        single_s = statistics.median(run[0] for run in single)
        single_cpu = statistics.median(run[1] for run in single)
        found = single[0][2]
        parallel = [run_parallel(settings, pictures, args.workers) for _ in range(args.repeat)]
        parallel_s = statistics.median(run[0] for run in parallel)
        parallel_cpu = statistics.median(run[1] for run in parallel)
        worker_load = max(run[3] for run in parallel)
        if args.no_accuracy:
            photos_found, auc = "-", "-"
        else:
            count, value = accuracy(embedder, folder, labels)
            photos_found, auc = f"{count}/{len(labels)}", f"{value:.4f}"
        rate_1 = n / single_s
        rate_n = n / parallel_s
        print(
            f"{embedder.runtime:>7} {detect_side:>11} {1000 * single_s / n:>6.0f} "
            f"{1000 * single_cpu / n:>6.0f} "
            f"{rate_1:>8.1f} {rate_n:>8.1f} {rate_n / rate_1:>5.2f} "
            f"{1000 * parallel_cpu / n:>9.0f} {worker_load:>9.2f} "
            f"{f'{found}/{n}':>7} {photos_found:>12} {auc:>6}"
        )
    print(
        f"ms/img: wall time per picture (JPEG decode + embedding), one process; CPU ms: CPU "
        f"time per picture (on a busy "
        f"machine the wall times grow, CPU times do not); {wp} load s: slowest worker's model "
        f"load; found: pictures with a face; photos found / AUC: on the original photos; "
        f"load average now {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
