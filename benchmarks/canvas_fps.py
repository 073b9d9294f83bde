"""The canvas with a 100-node workflow in Debian's Chromium: how long it takes to open, and
the frame rate while it is panned and zoomed with the mouse (issue 18's goal: ≥ 50 frames/s
on this machine's software renderer).

    .venv/bin/python benchmarks/canvas_fps.py [--nodes 100] [--seconds 3] [--repeats 3]

A real ``castbook serve`` (tests/support/web.py) and Debian's ``chromium`` headless with
``--disable-gpu`` (software rendering), driven by Playwright. The workflow — text-to-image
nodes each wired to an output node, laid out in a grid — is put in the page's draft
(``localStorage``) before it loads, as a reload of a big canvas does. Measured in the page:

- **open**: from navigation start to the last node on the canvas (``performance.now()``);
- **pan** and **zoom**: ``requestAnimationFrame`` timestamps recorded while Playwright drags
  with the middle button (mouse down, moves, up) or turns the wheel for ``--seconds``; frames/s is
  frames over elapsed time, with the median and 95th-percentile frame interval, and the share
  of frames that showed a new view (the gesture really went on). ``requestAnimationFrame``
  times the page's main thread (events, style, layout, paint records); the compositor's
  software rasterisation runs beside it and is not in these figures.

Every figure is the median of ``--repeats``; page errors are counted (any is a failure).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

# Frame timestamps, and how many frames showed a view (pan/zoom transform) the frame before
# did not: proof the gesture was going on while the frames were counted.
RECORD = """(seconds) => new Promise((done) => {
  const stamps = [];
  const world = document.querySelector("#canvas-world");
  let last = world.style.transform;
  let moved = 0;
  const end = performance.now() + seconds * 1000;
  const frame = (now) => {
    stamps.push(now);
    if (world.style.transform !== last) moved += 1;
    last = world.style.transform;
    if (now < end) requestAnimationFrame(frame);
    else done({ stamps, moved });
  };
  requestAnimationFrame(frame);
})"""


def graph(count: int) -> dict[str, Any]:
    """``count`` nodes: text-to-image → output pairs in a grid, each pair wired."""
    nodes: dict[str, Any] = {}
    layout: dict[str, Any] = {}
    for pair in range(count // 2):
        render, output = f"text_to_image_{pair + 1}", f"output_{pair + 1}"
        nodes[render] = {"type": "text_to_image", "inputs": {"prompt": f"a lighthouse {pair}"}}
        nodes[output] = {"type": "output", "inputs": {"value": [render, "images"]}}
        row, column = divmod(pair, 5)
        layout[render] = {"x": column * 640, "y": row * 420}
        layout[output] = {"x": column * 640 + 300, "y": row * 420 + 60}
    return {"nodes": nodes, "layout": layout}


def frame_stats(recorded: dict[str, Any]) -> dict[str, float]:
    stamps = recorded["stamps"]
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    elapsed = (stamps[-1] - stamps[0]) / 1000
    ordered = sorted(intervals)
    return {
        "fps": (len(stamps) - 1) / elapsed if elapsed else 0.0,
        "median_ms": statistics.median(intervals),
        "p95_ms": ordered[int(0.95 * (len(ordered) - 1))],
        "moving": recorded["moved"] / max(1, len(stamps) - 1),
    }


EMPTY_POINT = """() => {
  const box = document.querySelector("#canvas").getBoundingClientRect();
  for (let y = box.top + 40; y < box.bottom - 120; y += 10) {
    for (let x = box.left + 40; x < box.right - 160; x += 10) {
      const hit = document.elementFromPoint(x, y);
      if (hit && (hit.id === "canvas" || hit.id === "canvas-world")) return [x, y];
    }
  }
  return null;
}"""


def measure(page: Any, seconds: float, kind: str) -> dict[str, float]:
    """Frame timing while the mouse pans (drags with the middle button) or zooms (the wheel)."""
    point = page.evaluate(EMPTY_POINT)
    if point is None:
        raise SystemExit("no empty spot on the canvas to drag: fewer nodes, or a bigger window")
    x, y = point
    # Started, not awaited: the gestures below happen while it records.
    page.evaluate(f"(seconds) => {{ window.__frames = ({RECORD})(seconds); }}", seconds)
    deadline = time.monotonic() + seconds
    step = 0
    if kind == "pan":
        while time.monotonic() < deadline:
            page.mouse.move(x, y)
            # The middle button pans (a left drag on the empty canvas draws a selection box).
            page.mouse.down(button="middle")
            page.mouse.move(x + 120, y + 80, steps=12)
            page.mouse.move(x, y, steps=12)
            page.mouse.up(button="middle")
            step += 1
    else:
        while time.monotonic() < deadline:
            page.mouse.move(x, y)
            page.mouse.wheel(0, -120 if step % 8 < 4 else 120)
            step += 1
    return frame_stats(page.evaluate("() => window.__frames"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()

    from playwright.sync_api import expect
    from tests.support.web import castbook_server, chromium, server_page

    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}")
    draft = json.dumps({"graph": graph(options.nodes), "names": {}})
    results: dict[str, list[float]] = {"open_ms": [], "pan": [], "zoom": []}
    details: dict[str, list[dict[str, float]]] = {"pan": [], "zoom": []}
    errors = 0
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        with castbook_server(home) as (server, key), chromium() as browser:
            for _ in range(options.repeats):
                try:
                    with server_page(browser, server, viewport=(1440, 900), key=key) as page:
                        page.context.add_init_script(
                            f"localStorage.setItem('castbook.canvas', {json.dumps(draft)})"
                        )
                        page.goto("/")
                        shown = page.wait_for_function(
                            "n => document.querySelectorAll('#canvas .node').length >= n"
                            " && performance.now()",
                            arg=options.nodes,
                            polling="raf",
                            timeout=60_000,
                        )
                        results["open_ms"].append(float(shown.json_value()))
                        expect(page.locator("#canvas .node")).to_have_count(options.nodes)
                        for kind in ("pan", "zoom"):
                            stats = measure(page, options.seconds, kind)
                            details[kind].append(stats)
                            results[kind].append(stats["fps"])
                except AssertionError as exc:  # server_page: a script error on the page
                    errors += 1
                    print(f"page error: {exc}")
    print(f"nodes: {options.nodes}, {options.seconds:g} s of each gesture, {options.repeats} runs")
    if results["open_ms"]:
        print(
            f"open (navigation to every node shown): {statistics.median(results['open_ms']):.0f} ms"
        )
    for kind in ("pan", "zoom"):
        if not details[kind]:
            continue
        median_ms = statistics.median(d["median_ms"] for d in details[kind])
        p95_ms = statistics.median(d["p95_ms"] for d in details[kind])
        moving = statistics.median(d["moving"] for d in details[kind])
        print(
            f"{kind}: {statistics.median(results[kind]):.1f} frames/s "
            f"(frame interval median {median_ms:.1f} ms, p95 {p95_ms:.1f} ms; "
            f"{moving:.0%} of frames showed a new view)"
        )
    print(f"page errors: {errors}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
