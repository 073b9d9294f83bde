"""Which appearance features tell *unseen* drawn characters apart: leave-one-character-out.

    .venv/bin/python benchmarks/drawn_research.py --singles --combos   # every candidate alone
    .venv/bin/python benchmarks/drawn_research.py --combos 3 4         # blocks combined
    .venv/bin/python benchmarks/drawn_research.py --choose-among cfg --combos  # nested choice
    .venv/bin/python benchmarks/drawn_research.py --set-rules          # how references count

On the 83 anime face crops of ../shared/eval/anime (5 characters) every candidate
descriptor is measured as a user with characters castbook never saw would meet it: for
each character in turn, everything fitted — each block's shared-palette prior, the block
weights (chosen by an inner leave-one-out over the 4 training characters) and the
logistic calibration — is fitted on the other four, and only then is the held-out
character scored:

* ROC AUC of the calibrated score over the pairs involving the held-out character (pooled
  over the 5 folds; each fold's own calibration);
* top-1: the library holds 1 or 3 random references of each of the 5 characters, the
  held-out character's other images are the queries (50 draws per fold), and a character's
  references count as a set under each rule on the same draws: its best reference ("max",
  castbook's rule before), the mean of its two best ("top2") or of all ("mean"), their
  centroid ("centroid"), or castbook's rule, the best one and the centroid averaged
  (``reference_set.SET_RULE``); ``--set-rules`` also chooses the rule inside each fold.

The candidates (``appearance_candidates``) are the record of what was tried for issue 17
(docs/evaluation.md, "Drawn characters castbook has never seen"): castbook's own descriptor
("production"), appearance-v1, other histogram settings, regions of the crop (eye band,
top, sides, bottom, centre), colour layout, gradient histograms, a foreground mask, skin
weights; ``--wccn`` adds within-class covariance normalisation and ``--snorm`` cohort score
normalisation. ``eval_quality.py`` prints the production descriptor's held-out figures
through :func:`held_out_figures`.

Other distances, hue kernels, perceptual colour spaces, palettes with an earth mover's
distance, query-side views and local patches are measured the same way, over several seeds
of the reference draws, by ``drawn_distances.py``.

Exits 0 when ../shared/eval is absent.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_data import EVAL_DIR, labelled

from castbook.evaluation import appearance
from castbook.evaluation.calibrate import fit_logistic, roc_auc
from castbook.evaluation.features import load_for_scoring
from castbook.evaluation.reference_set import SET_RULE, centroid, set_cosine


def load() -> tuple[list, np.ndarray]:
    items = labelled("anime")
    images = [load_for_scoring(i.path, name=i.path.name, full=False).reduced for i in items]
    return images, np.array([i.identity for i in items])


def block_rows(images: list, blocks: dict) -> dict[str, np.ndarray]:
    """Every image's rows per block: square-rooted histograms, or a block's own features."""
    out = {}
    for name, fn in blocks.items():
        rows = np.array([fn(im) for im in images], dtype=np.float64)
        power = getattr(fn, "power", 0.5)
        out[name] = rows**power if getattr(fn, "histogram", True) else rows
    return out


def centred(rows: np.ndarray, prior: np.ndarray) -> np.ndarray:
    x = rows - prior
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 1e-12, n, 1.0)


_PRIORS: dict = {}


def prior_vectors(h: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Centred on the prior (mean row) fitted on ``fit``, unit length."""
    key = (id(h), fit.tobytes())
    if key not in _PRIORS:
        _PRIORS[key] = centred(h, h[fit].mean(0))
    return _PRIORS[key]


def wccn(x: np.ndarray, ids: np.ndarray, fit: np.ndarray, shrink: float) -> np.ndarray:
    """Within-class covariance normalisation fitted on ``fit``: directions in which drawings
    of one character vary (background, lighting) count less. Unit rows out."""
    rows = x[fit]
    labels = ids[fit]
    centred_rows = np.concatenate(
        [rows[labels == c] - rows[labels == c].mean(0) for c in np.unique(labels)]
    )
    cov = centred_rows.T @ centred_rows / len(centred_rows)
    scale = np.trace(cov) / len(cov)
    cov = (1 - shrink) * cov + shrink * scale * np.eye(len(cov))
    values, vectors = np.linalg.eigh(cov)
    transform = vectors @ np.diag(1.0 / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T
    y = x @ transform
    n = np.linalg.norm(y, axis=1, keepdims=True)
    return y / np.where(n > 1e-12, n, 1.0)


class Method:
    """A descriptor recipe: blocks (weights), then optionally WCCN with a shrinkage."""

    def __init__(self, weights: dict[str, float], shrink: float | None = None) -> None:
        self.weights = weights
        self.shrink = shrink

    def vectors(self, hists: dict, ids: np.ndarray, fit: np.ndarray) -> np.ndarray:
        total = np.sqrt(sum(w * w for w in self.weights.values()))
        x = np.concatenate(
            [(w / total) * prior_vectors(hists[n], fit) for n, w in self.weights.items() if w],
            axis=1,
        )
        if self.shrink is not None:
            x = wccn(x, ids, fit, self.shrink)
        return x

    def similarity(self, hists: dict, ids: np.ndarray, fit: np.ndarray) -> np.ndarray:
        x = self.vectors(hists, ids, fit)
        return np.clip(0.5 * (1.0 + x @ x.T), 0.0, 1.0)

    def __repr__(self) -> str:
        w = ",".join(f"{v:g}" for v in self.weights.values())
        if len(self.weights) == 1:
            w = next(iter(self.weights))
        return f"w({w})" + ("" if self.shrink is None else f" wccn {self.shrink:g}")


WEIGHT_LEVELS = (0.0, 0.5, 1.0)


def weight_grid(names: list[str]) -> list[dict[str, float]]:
    """The first block at weight 1, every other at each of WEIGHT_LEVELS."""
    return [
        {names[0]: 1.0, **dict(zip(names[1:], levels, strict=True))}
        for levels in itertools.product(WEIGHT_LEVELS, repeat=len(names) - 1)
    ]


def choose(hists: dict, ids: np.ndarray, train: np.ndarray, grid: list[Method]) -> Method:
    """The recipe with the best mean inner leave-one-character-out AUC on ``train``."""
    totals = np.zeros(len(grid))
    for inner in np.unique(ids[train]):
        fit = train & (ids != inner)
        for n, method in enumerate(grid):
            sim = method.similarity(hists, ids, fit)
            totals[n] += held_out_auc(sim, ids, train, inner)
    return grid[int(np.argmax(totals))]


def held_out_auc(sim: np.ndarray, ids: np.ndarray, pool: np.ndarray, held: str) -> float:
    same, diff = held_out_pairs(sim, ids, pool, held)
    return roc_auc(same, diff)


def held_out_pairs(
    sim: np.ndarray, ids: np.ndarray, pool: np.ndarray, held: str
) -> tuple[np.ndarray, np.ndarray]:
    """Similarities of the pairs of ``pool`` that involve the held-out character."""
    idx = np.flatnonzero(pool)
    iu = np.triu_indices(len(idx), 1)
    a, b = idx[iu[0]], idx[iu[1]]
    involved = (ids[a] == held) | (ids[b] == held)
    a, b = a[involved], b[involved]
    same = ids[a] == ids[b]
    s = sim[a, b]
    return s[same], s[~same]


def training_pairs(sim: np.ndarray, ids: np.ndarray, train: np.ndarray):
    idx = np.flatnonzero(train)
    iu = np.triu_indices(len(idx), 1)
    a, b = idx[iu[0]], idx[iu[1]]
    return sim[a, b], ids[a] == ids[b]


RULES = ("max", "top2", "mean", "centroid", SET_RULE)


def set_value(
    rule: str, scores: np.ndarray, x: np.ndarray, q: int, refs: np.ndarray, curve
) -> float:
    """A character's value for query ``q`` under a set rule: its references' calibrated
    ``scores`` ("max": the best, castbook's rule before; "top2": the mean of the best two;
    "mean": of all), or on cosines of the unit vectors ``x`` ("centroid": the references'
    centroid alone; SET_RULE: castbook's rule, castbook.evaluation.reference_set)."""
    s = np.sort(scores)[::-1]
    if rule == "max" or (len(s) == 1 and rule in ("top2", "mean")):
        return float(s[0])
    if rule == "top2":
        return float(s[:2].mean())
    if rule == "mean":
        return float(s.mean())
    cosines = x[refs] @ x[q]
    centre = float(centroid(x[refs]) @ x[q])
    cosine = centre if rule == "centroid" else float(set_cosine(cosines.max(), centre))
    return float(curve(np.clip(0.5 * (1.0 + cosine), 0.0, 1.0)))


def top1(
    score: np.ndarray,
    x: np.ndarray,
    curve,
    ids: np.ndarray,
    held: str,
    per_identity: int,
    rules: tuple[str, ...],
    rng: np.random.Generator,
    draws: int = 50,
    library: np.ndarray | None = None,
) -> dict[str, tuple[int, int]]:
    """Top-1 of the held-out character's images under each rule, all rules on the same
    draws of references (a paired comparison). ``library``: the characters' images that
    may be drawn as references and asked (all by default)."""
    pool = np.ones(len(ids), dtype=bool) if library is None else library
    chars = list(np.unique(ids[pool]))
    members = {c: np.flatnonzero((ids == c) & pool) for c in chars}
    tally = {rule: [0, 0] for rule in rules}
    for _ in range(draws):
        refs = {c: rng.choice(members[c], per_identity, replace=False) for c in chars}
        for q in members[held]:
            if q in refs[held]:
                continue
            for rule in rules:
                values = [set_value(rule, score[q, refs[c]], x, q, refs[c], curve) for c in chars]
                tally[rule][0] += chars[int(np.argmax(values))] == held
                tally[rule][1] += 1
    return {rule: (r, a) for rule, (r, a) in tally.items()}


def choose_rule(
    hists: dict, ids: np.ndarray, train: np.ndarray, method: Method, rules: tuple[str, ...]
) -> str:
    """The set rule with the best inner leave-one-character-out top-1 (3 references) on
    ``train``: the prior and calibration fitted on three characters, the fourth asked."""
    rng = np.random.default_rng(1)
    totals = dict.fromkeys(rules, 0)
    for inner in np.unique(ids[train]):
        fit = train & (ids != inner)
        x = method.vectors(hists, ids, fit)
        curve = calibration_curve(np.clip(0.5 * (1.0 + x @ x.T), 0.0, 1.0), ids, fit)
        score = curve(np.clip(0.5 * (1.0 + x @ x.T), 0.0, 1.0))
        found = top1(score, x, curve, ids, inner, 3, rules, rng, draws=20, library=train)
        for rule, (right, _) in found.items():
            totals[rule] += right
    return max(rules, key=lambda rule: totals[rule])


def calibration_curve(sim: np.ndarray, ids: np.ndarray, fit: np.ndarray):
    values, labels = training_pairs(sim, ids, fit)
    fitted = fit_logistic(values.tolist(), labels.tolist())

    def curve(x):
        return 100.0 / (1.0 + np.exp(-np.clip(fitted.intercept + fitted.slope * x, -60, 60)))

    return curve


SNORM = False


def s_norm(sim: np.ndarray, ids: np.ndarray, cohort: np.ndarray) -> np.ndarray:
    """Symmetric score normalisation against a cohort of other characters' images: each
    image's similarity to the cohort (its mean and spread) is taken out of its pairs."""
    mask = cohort[None, :] & (ids[:, None] != ids[None, :])
    count = mask.sum(1)
    mean = (sim * mask).sum(1) / count
    std = np.sqrt((((sim - mean[:, None]) ** 2) * mask).sum(1) / count) + 1e-6
    z = (sim - mean[:, None]) / std[:, None]
    return 0.5 * (z + z.T)


def evaluate(
    hists: dict,
    ids: np.ndarray,
    grid: list[Method],
    *,
    detail: bool,
    rules: tuple[str, ...] = RULES,
    choose_rules: tuple[str, ...] = (),
) -> dict:
    """Outer leave-one-character-out: choose and fit without c, measure on c. Every rule
    is measured on the same draws of references; ``choose_rules``: also "chosen", the rule
    among them picked inside each fold (``choose_rule``)."""
    rng = np.random.default_rng(0)
    same_all, diff_all = [], []
    measured = rules + (("chosen",) if choose_rules else ())
    hits = {(k, r): [0, 0] for k in (1, 3) for r in measured}
    chosen, chosen_rules = [], []
    everyone = np.ones(len(ids), dtype=bool)
    for held in np.unique(ids):
        train = ids != held
        method = grid[0] if len(grid) == 1 else choose(hists, ids, train, grid)
        chosen.append(method)
        x = method.vectors(hists, ids, train)
        sim = np.clip(0.5 * (1.0 + x @ x.T), 0.0, 1.0)
        if SNORM:
            sim = s_norm(sim, ids, train)
        curve = calibration_curve(sim, ids, train)
        score = curve(sim)
        s, d = held_out_pairs(score, ids, everyone, held)
        same_all.append(s)
        diff_all.append(d)
        pick = choose_rule(hists, ids, train, method, choose_rules) if choose_rules else None
        chosen_rules.append(pick)
        for k in (1, 3):
            wanted = rules + ((pick,) if pick and pick not in rules else ())
            found = top1(score, x, curve, ids, held, k, wanted, rng)
            for rule in measured:
                r, a = found[pick if rule == "chosen" else rule]
                hits[k, rule][0] += r
                hits[k, rule][1] += a
        if detail:
            print(f"    without {held:<22} {method}  AUC {roc_auc(s, d):.3f}  rule {pick}")
    same, diff = np.concatenate(same_all), np.concatenate(diff_all)
    return {
        "auc": roc_auc(same, diff),
        "top1": {key: 100.0 * r / a for key, (r, a) in hits.items()},
        "queries": {key: a for key, (r, a) in hits.items()},
        "chosen": chosen,
        "chosen_rules": chosen_rules,
    }


def report(name: str, result: dict) -> None:
    t = result["top1"]
    print(
        f"{name:<34} AUC {result['auc']:.3f}   top-1 1 ref {t[1, 'max']:5.1f} %   "
        f"3 refs max {t[3, 'max']:5.1f} %  top2 {t[3, 'top2']:5.1f} %  "
        f"{SET_RULE} {t[3, SET_RULE]:5.1f} %"
    )


def report_rules(result: dict) -> None:
    """Each set rule's top-1, measured on the same draws."""
    t, q = result["top1"], result["queries"]
    for rule in sorted({rule for _, rule in t}, key=lambda r: (r == "chosen", r)):
        print(
            f"  {rule:<14} top-1 1 ref {t[1, rule]:5.1f} % ({q[1, rule]})   "
            f"3 refs {t[3, rule]:5.1f} % ({q[3, rule]})"
        )
    if any(result["chosen_rules"]):
        print("  chosen inside each fold:", result["chosen_rules"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds-detail", action="store_true")
    parser.add_argument("--singles", action="store_true", help="each block alone too")
    parser.add_argument("--wccn", action="store_true", help="with WCCN too")
    parser.add_argument("--snorm", action="store_true", help="S-norm against a cohort")
    parser.add_argument("--choose-among", help="pick one block by name prefix, nested")
    parser.add_argument("--combos", nargs="*", help="indices into COMBOS")
    parser.add_argument(
        "--set-rules",
        action="store_true",
        help="the shipped descriptor under each set rule, and the rule chosen inside folds",
    )
    args = parser.parse_args()
    if not (EVAL_DIR / "anime" / "labels.csv").is_file():
        print(f"{EVAL_DIR} is absent: nothing to measure (ok).")
        return 0
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    global SNORM
    SNORM = args.snorm
    images, ids = load()
    candidates = appearance_candidates()
    if args.set_rules:
        rows = block_rows(images, {"appearance": production_histogram})
        result = evaluate(
            rows, ids, [Method({"appearance": 1.0})], detail=args.folds_detail, choose_rules=RULES
        )
        print(f"set rules (castbook's: {SET_RULE}), AUC of pairs {result['auc']:.3f}:")
        report_rules(result)
        return 0
    hists = block_rows(images, candidates)
    print("single blocks (no weights to choose):")
    for name in candidates if args.singles else ():
        report(name, evaluate(hists, ids, [Method({name: 1.0})], detail=False))
    print("combinations (weights chosen inside each fold by inner leave-one-out):")
    if args.choose_among:
        grid = [Method({name: 1.0}) for name in candidates if name.startswith(args.choose_among)]
        result = evaluate(hists, ids, grid, detail=args.folds_detail)
        report(f"one of {len(grid)} '{args.choose_among}*'", result)
        print("    chosen:", result["chosen"])
    for combo in [COMBOS[int(c)] for c in args.combos] if args.combos is not None else COMBOS:
        for shrinks in ([None], SHRINKS) if args.wccn else ([None],):
            grid = [Method(w, s) for w in weight_grid(list(combo)) for s in shrinks]
            result = evaluate(hists, ids, grid, detail=args.folds_detail)
            label = " + ".join(n.split(" ")[0] for n in combo)
            report(label + ("" if shrinks == [None] else " +wccn"), result)
            print("    chosen:", result["chosen"])
    return 0


SHRINKS = [0.1, 0.3, 0.6]
COMBOS = [
    ("cfg hue24 floor0.05 p0.7", "eye24"),
    ("cfg hue24 floor0.05 p0.7", "eye24", "centre24", "whole24"),
    ("global (appearance-v1)",),
    ("global (appearance-v1)", "layout 6x6"),
    ("global (appearance-v1)", "hog 4x4"),
    ("global (appearance-v1)", "eye band .45-.7 |x|<.35", "layout 6x6", "hog 4x4"),
    ("global (appearance-v1)", "eye band .45-.7 |x|<.35"),
    ("global (appearance-v1)", "centre |x|<.3 .2<y<.8"),
    ("global (appearance-v1)", "whole uniform"),
    ("global (appearance-v1)", "eye band .45-.7 |x|<.35", "upper y<0.5", "bottom y>.75"),
    ("global (appearance-v1)", "eye band .45-.7 |x|<.35", "whole uniform", "sides |x|>.3 y>.3"),
    ("production", "co-occurrence"),
    ("production", "silhouette 8x8"),
    ("production", "upper foreground"),
]


def region(y0: float, y1: float, x0: float, x1: float, soft: float = 0.05):
    """A left-right symmetric soft box mask: x measured as distance from the centre line."""
    side = appearance.DESCRIPTOR_SIDE
    c = (np.arange(side) + 0.5) / side
    dx = np.abs(c - 0.5)

    def ramp(v, lo, hi):
        return np.clip((v - lo) / soft + 0.5, 0, 1) * np.clip((hi - v) / soft + 0.5, 0, 1)

    return (ramp(c, y0, y1)[:, None] * ramp(dx, x0, x1)[None, :]).ravel()


def appearance_v1():
    """appearance-v1's histogram: 12 hues, chroma floor 0.15, skin counted in full."""
    return fine_histogram(12, floor=0.15, power=0.5, skin=1.0)


def masked(mask: np.ndarray):
    """appearance-v1's histogram with another spatial mask."""
    v1 = appearance_v1()

    def histogram(image) -> np.ndarray:
        return masked_histogram_with(v1, image, mask)

    return histogram


def not_histogram(fn):
    fn.histogram = False
    return fn


def small_rgb(image, side: int = appearance.DESCRIPTOR_SIDE) -> np.ndarray:
    """Levels-normalised RGB floats, (side, side, 3), as the appearance descriptor sees it."""
    saved = appearance.DESCRIPTOR_SIDE
    appearance.DESCRIPTOR_SIDE = side
    try:
        return appearance._to_pixels(image).reshape(side, side, 3)
    finally:
        appearance.DESCRIPTOR_SIDE = saved


@not_histogram
def layout(image, cells: int = 6) -> np.ndarray:
    """Mean opponent colour per cell of a cells x cells grid, mirrored halves averaged."""
    rgb = small_rgb(image)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    opp = np.stack([(r + g + b) / 3, r - g, (r + g) / 2 - b], axis=-1)
    side = rgb.shape[0]
    k = side // cells
    grid = opp[: k * cells, : k * cells].reshape(cells, k, cells, k, 3).mean(axis=(1, 3))
    grid = 0.5 * (grid + grid[:, ::-1])
    return grid[:, : (cells + 1) // 2].ravel()


def hog(image, cells: int = 4, bins: int = 9, side: int = 48) -> np.ndarray:
    """Unsigned gradient-orientation histograms on a grid, plus the mirror's (flip-safe)."""
    grey = small_rgb(image, side).mean(axis=2)
    out = 0
    for picture in (grey, grey[:, ::-1]):
        gy, gx = np.gradient(picture)
        mag = np.hypot(gx, gy)
        ang = np.mod(np.arctan2(gy, gx), np.pi) / np.pi * bins
        lo = np.floor(ang).astype(int) % bins
        frac = ang - np.floor(ang)
        k = side // cells
        cell = (np.arange(side) // k).clip(0, cells - 1)
        cid = cell[:, None] * cells + cell[None, :]
        h = np.bincount((cid * bins + lo).ravel(), (mag * (1 - frac)).ravel(), cells**2 * bins)
        h += np.bincount(
            (cid * bins + (lo + 1) % bins).ravel(), (mag * frac).ravel(), cells**2 * bins
        )
        out = out + h
    return out / max(out.sum(), 1e-12)


def fine_histogram(
    hues: int = 24,
    sats: int = 3,
    vals: int = 3,
    floor: float = 0.15,
    power: float = 0.5,
    skin: float = 1.0,
):
    """castbook's histogram with other settings (skin 1.0: skin counted in full, as in v1)."""
    names = (
        "_HUE_BINS",
        "_SAT_BINS",
        "_VAL_BINS",
        "_CHROMATIC",
        "DIMENSIONS",
        "_CHROMA_FLOOR",
        "_SKIN_WEIGHT",
    )

    def histogram(image) -> np.ndarray:
        saved = [getattr(appearance, n) for n in names]
        chromatic = hues * sats * vals
        values = (hues, sats, vals, chromatic, chromatic + appearance._GREY_BINS, floor, skin)
        for n, v in zip(names, values, strict=True):
            setattr(appearance, n, v)
        try:
            return appearance._histogram(image)
        finally:
            for n, v in zip(names, saved, strict=True):
                setattr(appearance, n, v)

    histogram.power = power
    return histogram


def border_distance(rgb: np.ndarray) -> np.ndarray:
    """Each pixel's RGB distance to the nearest colour on the picture's border."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])[::2]
    flat = rgb.reshape(-1, 3)
    d = np.sqrt(((flat[:, None, :] - border[None, :, :]) ** 2).sum(-1)).min(1)
    return d


def foreground(hues: int = 12, scale: float = 0.2):
    """The appearance histogram with pixels like the border (background) counting less."""
    inner = fine_histogram(hues)

    def histogram(image) -> np.ndarray:
        rgb = small_rgb(image)
        fg = np.clip(border_distance(rgb) / scale, 0.1, 1.0)
        mask = appearance._mask(appearance.DESCRIPTOR_SIDE) * fg
        return masked_histogram_with(inner, image, mask)

    return histogram


def masked_histogram_with(fn, image, mask) -> np.ndarray:
    original = appearance._mask_for
    try:
        appearance._mask_for = lambda side: mask
        return fn(image)
    finally:
        appearance._mask_for = original


def configurations() -> dict:
    """The histogram settings the nested selection chooses among (``--choose-among cfg``)."""
    return {
        f"cfg hue{h} floor{f:g} p{p:g}": fine_histogram(h, floor=f, power=p)
        for h in (12, 24)
        for f in (0.15, 0.05)
        for p in (0.5, 0.7)
    }


def region_config(mask: np.ndarray, hues: int, floor: float, power: float):
    inner = fine_histogram(hues, floor=floor, power=power)

    def histogram(image) -> np.ndarray:
        return masked_histogram_with(inner, image, mask)

    histogram.power = power
    return histogram


def skin_suppressed(hues: int, floor: float, power: float, keep: float = 0.25):
    """Skin-like pixels (orange hues, pale to mid saturation, bright) counting ``keep``:
    every drawn character has skin, few are identified by it (appearance-v2 takes 0.5)."""
    return fine_histogram(hues, floor=floor, power=power, skin=keep)


def colour_labels(image, hues: int = 12) -> tuple[np.ndarray, int]:
    """Each pixel's colour as one of ``hues`` × 2 saturations × 2 values, or 4 greys."""
    rgb = appearance._to_pixels(image)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    value = rgb.max(1)
    chroma = value - rgb.min(1)
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(
        value == r,
        np.mod((g - b) / safe, 6.0),
        np.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue_bin = np.floor(np.mod(hue / 6.0, 1.0) * hues).astype(int) % hues
    saturated = (chroma / np.where(value > 0, value, 1.0) > 0.5).astype(int)
    bright = (value > 0.6).astype(int)
    grey = hues * 4 + np.minimum((value * 4).astype(int), 3)
    label = np.where(chroma > 0.08, (hue_bin * 2 + saturated) * 2 + bright, grey)
    side = appearance.DESCRIPTOR_SIDE
    return label.reshape(side, side), hues * 4 + 4


def cooccurrence(image, distances: tuple[int, ...] = (1, 2, 4)) -> np.ndarray:
    """Which colours touch (hair next to a ribbon, eyes next to skin): counts of unlike
    neighbouring colour pairs at a few distances, weighted by the centred mask."""
    label, n = colour_labels(image)
    mask = appearance._mask_for(appearance.DESCRIPTOR_SIDE).reshape(label.shape)
    counts = np.zeros((n, n))
    for d in distances:
        for a, b, wa, wb in (
            (label[:, :-d], label[:, d:], mask[:, :-d], mask[:, d:]),
            (label[:-d], label[d:], mask[:-d], mask[d:]),
        ):
            unlike = a != b
            np.add.at(counts, (a[unlike], b[unlike]), (wa * wb)[unlike])
    counts = counts + counts.T
    pairs = counts[np.triu_indices(n)]
    return pairs / max(pairs.sum(), 1e-12)


@not_histogram
def silhouette(image, cells: int = 8, scale: float = 0.25) -> np.ndarray:
    """The character's outline: how unlike the border's colours each cell of a grid is
    (hair shape, twin tails, bows), mirrored halves averaged."""
    rgb = small_rgb(image)
    side = rgb.shape[0]
    unlike = np.clip(border_distance(rgb) / scale, 0, 1).reshape(side, side)
    k = side // cells
    grid = unlike[: k * cells, : k * cells].reshape(cells, k, cells, k).mean(axis=(1, 3))
    grid = 0.5 * (grid + grid[:, ::-1])
    return grid[:, : cells // 2].ravel()


def upper_foreground(image) -> np.ndarray:
    """castbook's histogram of the upper half's pixels unlike the border (the hair's colour
    where the hair is, without the background)."""
    rgb = small_rgb(image)
    side = rgb.shape[0]
    unlike = np.clip(border_distance(rgb) / 0.25, 0.05, 1.0)
    rows = (np.arange(side) + 0.5) / side
    upper = np.repeat(np.clip((0.55 - rows) / 0.1 + 0.5, 0, 1), side)
    return masked_histogram_with(production_histogram, image, unlike * upper)


def production_histogram(image) -> np.ndarray:
    """castbook's own appearance histogram (appearance.APPEARANCE_VERSION)."""
    return appearance._histogram(image)


production_histogram.power = appearance._POWER


def held_out_figures(images: list, ids: np.ndarray) -> dict:
    """The shipped descriptor with its prior and calibration refitted without each
    character in turn: what a user's unseen characters get (``evaluate``)."""
    rows = block_rows(images, {"appearance": production_histogram})
    return evaluate(rows, ids, [Method({"appearance": 1.0})], detail=False)


def appearance_candidates() -> dict:
    return {
        "production": production_histogram,
        "skin hue24 floor.05 p.5": skin_suppressed(24, 0.05, 0.5),
        "skin hue24 floor.05 p.7": skin_suppressed(24, 0.05, 0.7),
        "skin hue12 floor.15 p.5": skin_suppressed(12, 0.15, 0.5),
        "skin.5 hue24 floor.05 p.5": skin_suppressed(24, 0.05, 0.5, keep=0.5),
        "skin.5 hue24 floor.05 p.7": skin_suppressed(24, 0.05, 0.7, keep=0.5),
        "skin.1 hue24 floor.05 p.5": skin_suppressed(24, 0.05, 0.5, keep=0.1),
        **configurations(),
        "eye24": region_config(region(0.45, 0.7, 0.0, 0.35), 24, 0.05, 0.7),
        "centre24": region_config(region(0.2, 0.8, 0.0, 0.3), 24, 0.05, 0.7),
        "whole24": region_config(np.ones(appearance.DESCRIPTOR_SIDE**2), 24, 0.05, 0.7),
        "layout 6x6": layout,
        "co-occurrence": cooccurrence,
        "silhouette 8x8": silhouette,
        "upper foreground": upper_foreground,
        "hog 4x4": hog,
        "hue24": fine_histogram(24),
        "hue24 p.7": fine_histogram(24, power=0.7),
        "hue24 floor.05 p.7": fine_histogram(24, floor=0.05, power=0.7),
        "hue24 floor0": fine_histogram(24, floor=0.0),
        "hue24 s4v4 floor.05": fine_histogram(24, 4, 4, floor=0.05),
        "hue24 floor.05": fine_histogram(24, floor=0.05),
        "hue24 floor.3": fine_histogram(24, floor=0.3),
        "global (appearance-v1)": appearance_v1(),
        "top band y<0.35": masked(region(0.0, 0.35, 0.0, 0.5)),
        "upper y<0.5": masked(region(0.0, 0.5, 0.0, 0.5)),
        "eye band .45-.7 |x|<.35": masked(region(0.45, 0.7, 0.0, 0.35)),
        "eye band .4-.65 .08<|x|<.3": masked(region(0.4, 0.65, 0.08, 0.3)),
        "sides |x|>.3 y>.3": masked(region(0.3, 1.0, 0.3, 0.5)),
        "bottom y>.75": masked(region(0.75, 1.0, 0.0, 0.5)),
        "whole uniform": masked(np.ones(appearance.DESCRIPTOR_SIDE**2)),
        "centre |x|<.3 .2<y<.8": masked(region(0.2, 0.8, 0.0, 0.3)),
    }


if __name__ == "__main__":
    raise SystemExit(main())
