"""The Gemini backend's batch concurrency and its own cost per request, on a fake server.

    .venv/bin/python benchmarks/gemini_batch.py [--latency 0.5] [--batch 8] [--repeats 3]

Against the fake Gemini server of the tests (127.0.0.1; each answer held ``--latency``
seconds, as a hosted model takes seconds per picture):

1. a batch of ``--batch`` images with ``max_concurrent`` 1, 2, 4 and 8: wall time, and the
   most requests the server saw at once;
2. castbook's own cost per image with no latency: one 1024x1024 image with three 512 px
   reference pictures (encoding the request, decoding and fitting the answer), median.

Medians of ``--repeats`` runs, all in this one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402
from tests.support.fake_gemini_server import FakeGeminiServer, Reply  # noqa: E402

from castbook.errors import CastbookError  # noqa: E402
from castbook.generation import PreparedRequest, parse_request  # noqa: E402
from castbook.generation.gemini_backend import GeminiImagesBackend  # noqa: E402
from castbook.generation.presets import BUILTIN_PRESETS  # noqa: E402

KEY = "AIzaSyBENCH-0123456789abcdefghij"
PRESET = next(p for p in BUILTIN_PRESETS if p.id == "gemini-image")


def prepared(batch: int, size: int, references: int) -> PreparedRequest:
    request = parse_request({"prompt": "Mara at a cafe", "batch": batch, "width": size,
                             "height": size})  # fmt: skip
    refs = tuple(Image.new("RGB", (512, 512), (40 * i, 90, 160)) for i in range(references))
    return PreparedRequest(request, "Mara at a cafe", "", 1, references=refs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with FakeGeminiServer(api_keys=[KEY], shrink=1) as server:
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()}")
        print(f"batch of {args.batch}, {args.latency:g} s per answer:")
        for limit in (1, 2, 4, 8):
            preset = dataclasses.replace(PRESET, options={"max_concurrent": limit})
            backend = GeminiImagesBackend(preset, base_url=server.base_url, api_key=KEY, environ={})
            times = []
            errors = 0  # a batch that failed is counted, not timed
            for _ in range(args.repeats):
                server.max_in_flight = 0
                server.script(*[Reply(delay=args.latency)] * args.batch)
                started = time.perf_counter()
                try:
                    backend.generate(prepared(args.batch, 512, 1), lambda _: None)
                except CastbookError:
                    errors += 1
                    continue
                times.append(time.perf_counter() - started)
            median = f"{statistics.median(times):6.2f} s" if times else "   n/a"
            print(
                f"  max_concurrent {limit}: {median} "
                f"(at most {server.max_in_flight} at once; errors {errors})"
            )

        backend = GeminiImagesBackend(PRESET, base_url=server.base_url, api_key=KEY, environ={})
        request = prepared(1, 1024, 3)
        backend.generate(request, lambda _: None)  # warm up
        times = []
        for _ in range(max(args.repeats, 5)):
            started = time.perf_counter()
            backend.generate(request, lambda _: None)
            times.append(time.perf_counter() - started)
        print(
            f"one 1024x1024 image, 3 references, no latency: "
            f"{statistics.median(times) * 1000:.0f} ms per request (castbook and the fake "
            "server together, on one machine)"
        )


if __name__ == "__main__":
    main()
