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


# The open-set threshold by appearance is fitted against characters of this many references,
# counted as a set (identify's rule), over this many random draws of them.
SET_REFERENCES = 3
SET_DRAWS = 50


def scores_against_other_sets(
    items: list[Labelled],
    vectors: list,
    per_identity: int = SET_REFERENCES,
    *,
    seed: int = 1,
    calibration: object | None = None,
) -> dict[str, list[float]]:
    """Every image's scores, by basis, against every *other* identity of a library where each
    identity has ``per_identity`` random references counted as a set (``castbook identify``'s
    rule), over SET_DRAWS draws; empty when an identity has too few images to leave a query.
    ``vectors`` are the items' :class:`IdentityVectors`."""
    import numpy as np

    from castbook.evaluation.identity import IdentityIndex

    by_identity: dict[str, list[int]] = {}
    for n, item in enumerate(items):
        by_identity.setdefault(item.identity, []).append(n)
    scores: dict[str, list[float]] = {"face": [], "appearance": []}
    if any(len(v) <= per_identity for v in by_identity.values()):
        return scores
    rng = np.random.default_rng(seed)
    for _ in range(SET_DRAWS):
        chosen = {
            k: list(rng.choice(v, per_identity, replace=False)) for k, v in by_identity.items()
        }
        index = IdentityIndex(
            [(k, vectors[n]) for k, refs in chosen.items() for n in refs],
            calibration=calibration,  # type: ignore[arg-type]
        )
        for k, members in by_identity.items():
            for n in members:
                if n in chosen[k]:
                    continue
                for match in index.search(vectors[n], len(by_identity), exclude=[k]):
                    scores[match.basis].append(match.score)
    return scores
