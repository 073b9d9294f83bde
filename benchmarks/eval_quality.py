"""How well the consistency score tells the same character from a different one.

    .venv/bin/python benchmarks/eval_quality.py

On the labelled images in ../shared/eval (all pairs; same identity = positive) it prints
the ROC AUC of the headline score and of each component — aHash, the original product's
score, among them — and the mean score of same and different pairs. Then robustness:
edited copies of every image (horizontal flip, 80 % crop, 10 % shift, ±25 % brightness,
JPEG re-encode) are scored against their original, and the share of copies above the
threshold that only 5 % of real different-identity pairs pass is printed per edit.

Drawn characters castbook has not seen (``drawn_research.held_out_figures``): each anime
character left out in turn, the appearance prior and calibration refitted on the other
four, its images scored: pair AUC and top-1 with one and three references.

Identity search (``castbook identify``): top-1 accuracy when the library holds one
reference per identity (photos and drawings) or three (drawings), every other image a
query, averaged over 50 random draws of the references; the open-set thresholds
(the scores 1 % of different-identity pairs reach, per basis) recomputed from these pairs;
and, leaving each identity out of the library in turn, the share of its images answered
"no known character" (the open-set rate a user sees for people not in the library), with
the share of in-library queries wrongly answered unknown beside it.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_data import (
    FOLDERS,
    SET_REFERENCES,
    labelled,
    require_eval_dir,
    scores_against_other_sets,
    split_scores,
)
from PIL import Image, ImageChops, ImageEnhance, ImageOps

from castbook.evaluation import Scorer, compare
from castbook.evaluation.calibrate import roc_auc, threshold_at_false_positive_rate
from castbook.evaluation.identity import (
    OPEN_SET_FALSE_MATCH_RATE,
    OPEN_SET_THRESHOLDS,
    IdentityIndex,
    IdentityVectors,
    is_known,
)

COMPONENTS = ("ahash", "phash", "dhash", "appearance", "face")


def edits(image: Image.Image) -> dict[str, Image.Image]:
    w, h = image.size
    dx, dy = round(w * 0.1), round(h * 0.1)
    cw, ch = round(w * 0.8), round(h * 0.8)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=75)
    return {
        "flip": ImageOps.mirror(image),
        "crop 80%": image.crop(((w - cw) // 2, (h - ch) // 2, (w + cw) // 2, (h + ch) // 2)),
        "shift 10%": ImageChops.offset(image, dx, dy),
        "brightness +25%": ImageEnhance.Brightness(image).enhance(1.25),
        "brightness -25%": ImageEnhance.Brightness(image).enhance(0.75),
        "jpeg q75": Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"),
    }


def main() -> None:
    require_eval_dir()
    scorer = Scorer()
    # Quality figures do not depend on the machine; the features' ms/image (wall) does.
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"cores: {os.cpu_count()}, load average: {load}")
    print(f"faces component: {'on' if scorer.face_embedder is not None else 'OFF (no dlib)'}\n")
    for folder in FOLDERS:
        report(scorer, folder)


def report(scorer: Scorer, folder: str) -> None:
    items = labelled(folder)
    started = time.perf_counter()
    features = [scorer.features(item.path, item.path.name) for item in items]
    elapsed = time.perf_counter() - started
    comparisons: dict[tuple[int, int], object] = {}

    def headline(i: int, j: int) -> float:
        comparisons[i, j] = compare(features[i], features[j], scorer.calibration)
        return comparisons[i, j].score

    same, different = split_scores(items, headline)
    print(
        f"== {folder}: {len(items)} images, {len(same)} same / {len(different)} different "
        f"pairs (features {1000 * elapsed / len(items):.0f} ms/image)"
    )
    print(f"{'measure':<12} {'ROC AUC':>8} {'mean same':>10} {'mean diff':>10} {'pairs':>6}")
    print(
        f"{'score':<12} {roc_auc(same, different):8.3f} {sum(same) / len(same):10.1f} "
        f"{sum(different) / len(different):10.1f} {len(same) + len(different):6d}"
    )
    for name in COMPONENTS:
        s, d = split_scores(items, lambda i, j, n=name: comparisons[i, j].components.get(n))
        if s and d:
            print(
                f"{name:<12} {roc_auc(s, d):8.3f} {sum(s) / len(s):10.1f} "
                f"{sum(d) / len(d):10.1f} {len(s) + len(d):6d}"
            )
    bases = [c.basis for c in comparisons.values()]
    print(f"basis: face {bases.count('face')}, appearance {bases.count('appearance')}")

    threshold = threshold_at_false_positive_rate(different, 0.05)
    print(f"\nrobustness: threshold where 5 % of different pairs pass = {threshold:.1f}")
    kept: dict[str, list[bool]] = {}
    for item, original in zip(items, features, strict=True):
        with Image.open(item.path) as opened:
            image = opened.convert("RGB")
        for edit, copy in edits(image).items():
            result = compare(original, scorer.features(copy), scorer.calibration)
            kept.setdefault(edit, []).append(result.score >= threshold)
    total = [flag for flags in kept.values() for flag in flags]
    for edit, flags in kept.items():
        print(f"  {edit:<16} {100 * sum(flags) / len(flags):6.1f} % above threshold")
    print(f"  {'all edits':<16} {100 * sum(total) / len(total):6.1f} % (target ≥ 95 %)\n")
    identity_report(items, features, comparisons)
    if folder == "anime":
        held_out_report()


def held_out_report() -> None:
    """Drawn characters castbook has not seen: leave-one-character-out (drawn_research.py)."""
    import drawn_research

    images, ids = drawn_research.load()
    result = drawn_research.held_out_figures(images, ids)
    t, q = result["top1"], result["queries"]
    rule = drawn_research.SET_RULE
    print(
        "held out (each character in turn: the descriptor's prior and the calibration refitted "
        "without it; library = all 5 characters, queries = the held-out one's images):\n"
        f"  ROC AUC of pairs with the held-out character {result['auc']:.3f} (target ≥ 0.90)\n"
        f"  top-1 with 1 reference {t[1, rule]:.1f} % of {q[1, rule]} queries; with 3 "
        f"references {t[3, rule]:.1f} % of {q[3, rule]} (target ≥ 90 %; a character's "
        f"references as a set, {rule}; its best reference alone, the rule before: "
        f"{t[3, 'max']:.1f} %)\n"
    )


def open_set_for_sets(items: list, vectors: list) -> dict[int, dict[str, list[float]]]:
    """The open-set threshold for a character's references as a set (identify's rule):
    every query against every *other* identity with 1, 2 or 3 random references (50 draws),
    the score 1 % of those reach, and the share reaching castbook's threshold."""
    import numpy as np

    found = {}
    for per_identity in (1, 2, 3):
        impostor = scores_against_other_sets(items, vectors, per_identity)
        found[per_identity] = impostor
        for basis, scores in impostor.items():
            if len(scores) < 100:
                continue
            fitted = threshold_at_false_positive_rate(scores, OPEN_SET_FALSE_MATCH_RATE)
            passing = np.mean(np.asarray(scores) >= OPEN_SET_THRESHOLDS[basis])
            print(
                f"  open-set ({basis}), a character with {per_identity} reference(s) as a set: "
                f"threshold {fitted:.1f} at {100 * OPEN_SET_FALSE_MATCH_RATE:g} % of "
                f"{len(scores)} query-to-other-character scores; castbook's "
                f"{OPEN_SET_THRESHOLDS[basis]} passes {100 * passing:.2f} %"
            )
    return found


def stale_note(basis: str, fitted: float, count: int, what: str) -> None:
    used = OPEN_SET_THRESHOLDS[basis]
    stale = (
        ""
        if round(fitted, 1) == used
        else " - STALE: refit with benchmarks/calibrate_eval.py --open-set-only"
    )
    print(
        f"  open-set threshold ({basis}): {fitted:.1f} from these {count} {what} at "
        f"{100 * OPEN_SET_FALSE_MATCH_RATE:g} % false matches (castbook uses {used}, from "
        f"calibration.json){stale}"
    )


def identity_report(items: list, features: list, comparisons: dict) -> None:
    """Top-1 with one (and three) references per identity, and the open-set rates."""
    import numpy as np

    vectors = [IdentityVectors.of(f) for f in features]
    by_identity: dict[str, list[int]] = {}
    for n, item in enumerate(items):
        by_identity.setdefault(item.identity, []).append(n)
    rng = np.random.default_rng(0)
    print("identity search (castbook identify):")
    # By face the threshold is fitted per pair (one reference per person); by appearance
    # against characters of SET_REFERENCES references as a set (calibrate_eval.py).
    negatives = [
        c.score
        for (i, j), c in comparisons.items()
        if c.basis == "face" and items[i].identity != items[j].identity
    ]
    if negatives:
        fitted = threshold_at_false_positive_rate(negatives, OPEN_SET_FALSE_MATCH_RATE)
        stale_note("face", fitted, len(negatives), "pairs")
    for per_identity in (1, 3):
        eligible = {k: v for k, v in by_identity.items() if len(v) > per_identity}
        if len(eligible) < len(by_identity):
            continue
        right = asked = unknown = 0
        for _ in range(50):
            chosen = {
                k: list(rng.choice(v, per_identity, replace=False)) for k, v in eligible.items()
            }
            index = IdentityIndex([(k, vectors[n]) for k, refs in chosen.items() for n in refs])
            for k, members in eligible.items():
                for n in members:
                    if n in chosen[k]:
                        continue
                    [best] = index.search(vectors[n], 1)
                    asked += 1
                    right += best.character_id == k
                    unknown += not is_known(best)
        print(
            f"  top-1 with {per_identity} reference(s) per identity ({len(eligible)} in the "
            f"library): {100 * right / asked:.1f} % of {asked} queries (50 draws); "
            f"answered unknown although in the library: {100 * unknown / asked:.1f} %"
        )
    rejected = asked = 0
    for left_out in by_identity:
        for _ in range(10):
            index = IdentityIndex(
                [(k, vectors[int(rng.choice(v))]) for k, v in by_identity.items() if k != left_out]
            )
            for n in by_identity[left_out]:
                [best] = index.search(vectors[n], 1)
                asked += 1
                rejected += not is_known(best)
    print(
        f"  not in the library (each identity left out in turn, 1 reference per other): "
        f"{100 * rejected / asked:.1f} % answered unknown ({asked} queries)"
    )
    sets = open_set_for_sets(items, vectors)[SET_REFERENCES]["appearance"]
    if len(sets) >= 100:
        fitted = threshold_at_false_positive_rate(sets, OPEN_SET_FALSE_MATCH_RATE)
        stale_note(
            "appearance", fitted, len(sets), f"scores against {SET_REFERENCES}-reference sets"
        )
    print()


if __name__ == "__main__":
    main()
