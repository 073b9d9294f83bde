"""The labelled evaluation images in ../shared/eval (see its README), for benchmarks.

Not part of the package: the images stay outside the repository, and scripts that need
them say so and exit 0 where the folder is absent.
"""

from __future__ import annotations

import csv
import itertools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

EVAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "eval"
FOLDERS = ("faces", "anime")


@dataclass(frozen=True)
class Labelled:
    path: Path
    identity: str


def require_eval_dir() -> Path:
    if not (EVAL_DIR / "faces" / "labels.csv").is_file():
        print(f"{EVAL_DIR} is absent: the labelled evaluation images are not here; nothing to do.")
        sys.exit(0)
    return EVAL_DIR


def labelled(folder: str) -> list[Labelled]:
    base = EVAL_DIR / folder
    with (base / "labels.csv").open(newline="") as handle:
        return [Labelled(base / row["file"], row["identity"]) for row in csv.DictReader(handle)]


def pairs(items: list[Labelled]) -> Iterator[tuple[int, int, bool]]:
    for i, j in itertools.combinations(range(len(items)), 2):
        yield i, j, items[i].identity == items[j].identity


def split_scores(
    items: list[Labelled], similarity: Callable[[int, int], float | None]
) -> tuple[list[float], list[float]]:
    """Scores of same-identity and different-identity pairs (None = pair not scorable)."""
    same: list[float] = []
    different: list[float] = []
    for i, j, is_same in pairs(items):
        value = similarity(i, j)
        if value is not None:
            (same if is_same else different).append(value)
    return same, different
