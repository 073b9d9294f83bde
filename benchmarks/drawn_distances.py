"""Issue 17's last drawn-character goal: other distances, colour spaces, palettes, query views.

    .venv/bin/python benchmarks/drawn_distances.py                 # every scheme, seeds 0-4
    .venv/bin/python benchmarks/drawn_distances.py --only kernel   # schemes by name prefix
    .venv/bin/python benchmarks/drawn_distances.py --seeds 0 1     # other reference draws
    .venv/bin/python benchmarks/drawn_distances.py --choose-by top1  # grids chosen by top-1

The protocol is ``drawn_research.py``'s (docs/evaluation.md, "Drawn characters castbook has
never seen"): on the 83 anime crops of ../shared/eval/anime each character is left out in
turn; everything a scheme fits (its shared-palette prior, any parameter chosen among a grid
by an inner leave-one-character-out AUC over the four training characters, the logistic
calibration) is fitted on the other four; then the pairs with the held-out character give
the ROC AUC (pooled over the folds) and its images are the queries against a library of all
five characters with one or three random references (50 draws per fold, the same draws
as ``drawn_research.py`` for seed 0). With three references a character's references count
as a set under castbook's rule (the best reference and the set's "centroid", averaged; for
a scheme that is not a cosine the centroid is the scheme's own mean of the references, see
each scheme) and, for comparison, by its best reference alone.

Every scheme is measured over several seeds of the reference draws (the draws move top-1 by
about a point) and reported as the seeds' mean and range, beside castbook's own descriptor
("production") on the same draws. The schemes (issue 17, after what docs/evaluation.md
lists as tried):

* distances between the weighted histograms instead of the cosine of centred square roots:
  chi-square, histogram intersection, Hellinger (uncentred), each on the plain histogram, on
  the histogram reweighted by how rare each bin is in the training drawings ("idf"), and on
  the colours above the shared palette ("excess");
* a soft (Gaussian kernel) assignment of pixels to hue bins: the histogram smoothed along
  hue (on top of the linear interpolation), the width chosen inside each fold;
* perceptual colour spaces: OKLab and CIELAB hue angle x chroma x lightness bins, and a
  Cartesian a*b* grid in lightness bands, in place of HSV or beside it (each block centred
  on its own prior, concatenated, the weight fixed or chosen inside each fold);
* dominant palettes: a weighted k-means palette (k = 8) of each crop in OKLab, compared by
  an earth mover's distance (Sinkhorn, small entropy; the ground distance plain or capped);
  a set's palette is the union of its references' palettes; also fused with castbook's
  cosine at the score level;
* query-side views: the query described also at centre crops (85 %, 70 %), taking the mean
  of its view vectors or the best view.
* local patches, order-free: each cell of a 2x2, 3x3 or 4x4 grid of the query matched to
  its most alike cell of the other picture (a set: of any of its references), alone and
  fused with castbook's cosine at the score level.

Exits 0 when ../shared/eval is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import drawn_research
from drawn_research import held_out_pairs, training_pairs
from eval_data import EVAL_DIR

from castbook.evaluation import appearance
from castbook.evaluation.calibrate import fit_logistic, roc_auc
from castbook.evaluation.reference_set import centroid, set_cosine

# --------------------------------------------------------------------------- the protocol


@dataclass
class Fold:
    """What a scheme fitted on one fold's training characters gives: the raw similarity of
    every pair (higher: more alike) and of queries against a set of references."""

    pair: np.ndarray
    set_similarity: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (queries, refs) -> values
    # Query (row) against reference (column) for top-1, where it differs from ``pair``.
    query_pair: np.ndarray | None = None


class Scheme:
    """A way to compare drawings. ``fold(train)`` fits it on the images where ``train`` is
    true; ``grid`` (several variants) is chosen among inside each fold."""

    name = "?"

    def fold(self, train: np.ndarray) -> Fold:
        raise NotImplementedError


def cosine_fold(x: np.ndarray) -> Fold:
    """Unit rows: cosine pairs, castbook's set rule (best + centroid) for sets."""

    def set_similarity(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
        cosines = x[queries] @ x[refs].T
        return set_cosine(cosines.max(1), x[queries] @ centroid(x[refs]))

    return Fold(x @ x.T, set_similarity)


def calibration(sim: np.ndarray, ids: np.ndarray, train: np.ndarray):
    values, labels = training_pairs(sim, ids, train)
    fitted = fit_logistic(values.tolist(), labels.tolist())
    return lambda v: 100.0 / (1.0 + np.exp(-np.clip(fitted.intercept + fitted.slope * v, -60, 60)))


CHOOSE_BY = "auc"


def choose(grid: list[Scheme], ids: np.ndarray, train: np.ndarray) -> Scheme:
    """The variant with the best inner leave-one-character-out figure on ``train``: the mean
    AUC (``CHOOSE_BY = "auc"``) or top-1 with three references as a set ("top1", 20 draws
    per inner fold, the library the four training characters)."""
    if len(grid) == 1:
        return grid[0]
    totals = np.zeros(len(grid))
    for inner in np.unique(ids[train]):
        fit = train & (ids != inner)
        for n, scheme in enumerate(grid):
            fold = scheme.fold(fit)
            if CHOOSE_BY == "auc":
                s, d = held_out_pairs(fold.pair, ids, train, inner)
                totals[n] += roc_auc(s, d)
            else:
                totals[n] += inner_top1(fold, ids, train, inner, np.random.default_rng(1))
    return grid[int(np.argmax(totals))]


def inner_top1(
    fold: Fold, ids: np.ndarray, library: np.ndarray, held: str, rng: np.random.Generator
) -> int:
    """Right answers with three references as a set, the library ``library``'s characters."""
    chars = list(np.unique(ids[library]))
    members = {c: np.flatnonzero((ids == c) & library) for c in chars}
    right = 0
    for _ in range(20):
        refs = {c: rng.choice(members[c], 3, replace=False) for c in chars}
        queries = np.setdiff1d(members[held], refs[held])
        values = np.stack([fold.set_similarity(queries, refs[c]) for c in chars])
        right += int((np.argmax(values, 0) == chars.index(held)).sum())
    return right


def evaluate(grid: list[Scheme], ids: np.ndarray, seeds: list[int], draws: int = 50) -> dict:
    """Outer leave-one-character-out over ``seeds`` of the reference draws (the draws per
    seed as ``drawn_research.evaluate`` makes them). Top-1 in %, per seed."""
    rngs = {seed: np.random.default_rng(seed) for seed in seeds}
    hits = {(seed, key): [0, 0] for seed in seeds for key in ("1", "3 max", "3 set")}
    same_all, diff_all, chosen = [], [], []
    everyone = np.ones(len(ids), dtype=bool)
    chars = list(np.unique(ids))
    members = {c: np.flatnonzero(ids == c) for c in chars}
    for held in chars:
        train = ids != held
        scheme = choose(grid, ids, train)
        chosen.append(scheme.name)
        fold = scheme.fold(train)
        curve = calibration(fold.pair, ids, train)
        s, d = held_out_pairs(curve(fold.pair), ids, everyone, held)
        same_all.append(s)
        diff_all.append(d)
        queries_all = members[held]
        asked = fold.pair if fold.query_pair is None else fold.query_pair
        for seed in seeds:
            rng = rngs[seed]
            for k in (1, 3):
                for _ in range(draws):
                    refs = {c: rng.choice(members[c], k, replace=False) for c in chars}
                    queries = np.setdiff1d(queries_all, refs[held])
                    best = np.stack([asked[np.ix_(queries, refs[c])].max(1) for c in chars])
                    right = np.argmax(best, 0) == chars.index(held)
                    key = "1" if k == 1 else "3 max"
                    hits[seed, key][0] += int(right.sum())
                    hits[seed, key][1] += len(queries)
                    if k == 3:
                        values = np.stack([fold.set_similarity(queries, refs[c]) for c in chars])
                        right = np.argmax(values, 0) == chars.index(held)
                        hits[seed, "3 set"][0] += int(right.sum())
                        hits[seed, "3 set"][1] += len(queries)
    return {
        "auc": roc_auc(np.concatenate(same_all), np.concatenate(diff_all)),
        "top1": {key: 100.0 * r / a for key, (r, a) in hits.items()},
        "chosen": chosen,
    }


def summary(name: str, result: dict, seeds: list[int], seconds: float) -> str:
    t = result["top1"]
    parts = [f"{name:<40} AUC {result['auc']:.4f}"]
    for key in ("1", "3 max", "3 set"):
        values = np.array([t[seed, key] for seed in seeds])
        label = {"1": "1 ref", "3 max": "3 best", "3 set": "3 set"}[key]
        parts.append(f"{label} {values.mean():5.1f} ({values.min():.1f}-{values.max():.1f})")
    chosen = sorted(set(result["chosen"]))
    extra = f"  chose {result['chosen']}" if len(chosen) > 1 or chosen[0] != name else ""
    return "  ".join(parts) + f"  [{seconds:.0f} s]" + extra


def per_seed(result: dict, seeds: list[int]) -> str:
    t = result["top1"]
    return "    3 set per seed: " + " ".join(f"{t[seed, '3 set']:.1f}" for seed in seeds)


# --------------------------------------------------------------------------- histograms


def square_rooted_centred(rows: np.ndarray, power: float = 0.5) -> Callable[[np.ndarray], Fold]:
    """castbook's geometry: rows ** power, minus the training rows' mean, unit length."""
    roots = rows**power

    def fold(train: np.ndarray) -> Fold:
        return cosine_fold(drawn_research.centred(roots, roots[train].mean(0)))

    return fold


class Cosine(Scheme):
    """Centred square-rooted histograms compared by cosine: castbook's rule on some rows."""

    def __init__(self, name: str, rows: np.ndarray, power: float = 0.5) -> None:
        self.name = name
        self.rows = rows
        self._fold = square_rooted_centred(rows, power)

    def fold(self, train: np.ndarray) -> Fold:
        return self._fold(train)


class Blocks(Scheme):
    """Several histograms, each centred on its own training prior, concatenated with
    weights (castbook's geometry on the joint vector)."""

    def __init__(self, blocks: dict[str, np.ndarray], weights: dict[str, float]) -> None:
        self.name = " + ".join(f"{w:g} {n}" for n, w in weights.items())
        self.roots = {n: rows**0.5 for n, rows in blocks.items()}
        self.weights = weights

    def fold(self, train: np.ndarray) -> Fold:
        total = np.sqrt(sum(w * w for w in self.weights.values()))
        x = np.concatenate(
            [
                (w / total) * drawn_research.centred(self.roots[n], self.roots[n][train].mean(0))
                for n, w in self.weights.items()
                if w
            ],
            axis=1,
        )
        return cosine_fold(x)


class Fused(Scheme):
    """Score-level fusion: the first scheme's similarity plus ``weight`` times the second's,
    the second rescaled so its training pairs spread as much as the first's."""

    def __init__(self, first: Scheme, second: Scheme, weight: float) -> None:
        self.name = f"{first.name} + {weight:g} {second.name}"
        self.first, self.second, self.weight = first, second, weight

    def fold(self, train: np.ndarray) -> Fold:
        a, b = self.first.fold(train), self.second.fold(train)
        if not self.weight:
            return a
        scale = (
            self.weight * a.pair[np.ix_(train, train)].std() / b.pair[np.ix_(train, train)].std()
        )

        def set_similarity(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
            return a.set_similarity(queries, refs) + scale * b.set_similarity(queries, refs)

        # Top-1 asks query against reference: a directed scheme (patches, query views) keeps
        # its direction in the fusion, as it has alone.
        if a.query_pair is None and b.query_pair is None:
            return Fold(a.pair + scale * b.pair, set_similarity)
        asked_a = a.pair if a.query_pair is None else a.query_pair
        asked_b = b.pair if b.query_pair is None else b.query_pair
        return Fold(a.pair + scale * b.pair, set_similarity, asked_a + scale * asked_b)


def chi_square_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - ½ Σ (p - q)² / (p + q) for every row of ``a`` against every row of ``b``."""
    p, q = a[:, None, :], b[None, :, :]
    total = p + q
    return 1.0 - 0.5 * np.where(total > 0, (p - q) ** 2 / np.where(total > 0, total, 1), 0).sum(-1)


def intersection_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.minimum(a[:, None, :], b[None, :, :]).sum(-1)


def bhattacharyya_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ √(p q): 1 - Hellinger distance², the cosine of the uncentred square roots."""
    return np.sqrt(a) @ np.sqrt(b).T


DISTANCES = {
    "chi2": chi_square_similarity,
    "intersection": intersection_similarity,
    "hellinger": bhattacharyya_similarity,
}


def normalised(rows: np.ndarray) -> np.ndarray:
    total = rows.sum(1, keepdims=True)
    return rows / np.where(total > 0, total, 1.0)


class HistogramDistance(Scheme):
    """A histogram distance on the plain histograms ("plain"), on histograms reweighted by
    how rare each bin is among the training drawings ("idf": p / prior^a, renormalised), or
    on the colours above the shared palette ("excess": (√p - mean √p)₊², renormalised).
    A set's "centroid" is the mean of its references' (transformed) histograms."""

    def __init__(self, rows: np.ndarray, distance: str, transform: str) -> None:
        self.name = f"{distance} {transform}"
        self.rows = rows
        self.measure = DISTANCES[distance]
        self.transform = transform

    def transformed(self, train: np.ndarray) -> np.ndarray:
        h = self.rows
        if self.transform == "plain":
            return h
        if self.transform.startswith("idf"):
            power = float(self.transform[3:] or 0.5)
            prior = h[train].mean(0)
            return normalised(h / (prior + 1e-4) ** power)
        if self.transform == "excess":
            roots = np.sqrt(h)
            return normalised(np.maximum(roots - roots[train].mean(0), 0.0) ** 2)
        raise ValueError(self.transform)

    def fold(self, train: np.ndarray) -> Fold:
        h = self.transformed(train)
        measure = self.measure

        def set_similarity(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
            best = measure(h[queries], h[refs]).max(1)
            centre = measure(h[queries], h[refs].mean(0, keepdims=True))[:, 0]
            return 0.5 * (best + centre)

        return Fold(measure(h, h), set_similarity)


def hue_smoothed(rows: np.ndarray, sigma: float, hues: int = 24) -> np.ndarray:
    """Histograms whose chromatic part is convolved along hue (circularly) with a Gaussian
    of ``sigma`` bins: a soft kernel assignment of each pixel to the hue bins."""
    if sigma <= 0:
        return rows
    chromatic = hues * 9
    cube = rows[:, :chromatic].reshape(len(rows), hues, 9)
    offsets = np.arange(-hues // 2, hues // 2)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    out = np.zeros_like(cube)
    for offset, weight in zip(offsets, kernel, strict=True):
        out += weight * np.roll(cube, offset, axis=1)
    return np.concatenate([out.reshape(len(rows), chromatic), rows[:, chromatic:]], axis=1)


# --------------------------------------------------------------------------- colour spaces


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def oklab(rgb: np.ndarray) -> np.ndarray:
    lin = srgb_to_linear(rgb.astype(np.float64))
    m1 = np.array(
        [
            [0.4122214708, 0.5363325363, 0.0514459929],
            [0.2119034982, 0.6806995451, 0.1073969566],
            [0.0883024619, 0.2817188376, 0.6299787005],
        ]
    )
    m2 = np.array(
        [
            [0.2104542553, 0.7936177850, -0.0040720468],
            [1.9779984951, -2.4285922050, 0.4505937099],
            [0.0259040371, 0.7827717662, -0.8086757660],
        ]
    )
    return np.cbrt(lin @ m1.T) @ m2.T


def cielab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65), L in [0, 1], a and b divided by 100."""
    lin = srgb_to_linear(rgb.astype(np.float64))
    m = np.array(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ]
    )
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.stack(
        [1.16 * f[:, 1] - 0.16, 5.0 * (f[:, 0] - f[:, 1]), 2.0 * (f[:, 1] - f[:, 2])], axis=1
    )
    return lab


def weights_and_gate(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """castbook's pixel weights (centred mask x (chroma + floor) x skin) and chromatic gate,
    so that only the colour coordinates differ from the production histogram."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    value = rgb.max(1)
    chroma = value - rgb.min(1)
    sat = np.where(value > 0, chroma / np.where(value > 0, value, 1.0), 0.0)
    lo, hi = appearance._GATE_LOW, appearance._GATE_HIGH
    chromatic = np.clip((chroma - lo) / (hi - lo), 0.0, 1.0)
    skin = (
        (r >= g)
        & (g >= b)
        & (sat > appearance._SKIN_SATURATION[0])
        & (sat < appearance._SKIN_SATURATION[1])
        & (value > appearance._SKIN_MIN_VALUE)
    )
    weight = (
        appearance._mask_for(appearance.DESCRIPTOR_SIDE)
        * (chroma + appearance._CHROMA_FLOOR)
        * np.where(skin, appearance._SKIN_WEIGHT, 1.0)
    )
    return weight, chromatic


def soft_histogram(coords: list[tuple[np.ndarray, int, bool]], weight: np.ndarray) -> np.ndarray:
    """A soft (linearly interpolated) histogram over the product of 1-D bin axes (values in
    [0, 1], bin count, circular)."""
    shape = [n for _, n, _ in coords]
    indices = [np.zeros(len(weight), dtype=np.intp)]
    weights = [weight]
    for values, n, circular in coords:
        low, wl, high, wh = appearance._soft_bins(values, n, circular=circular)
        indices = [i * n + part for i in indices for part in (low, high)]
        weights = [w * part for w in weights for part in (wl, wh)]
    return np.bincount(
        np.concatenate(indices), weights=np.concatenate(weights), minlength=int(np.prod(shape))
    )


def perceptual_histogram(image, space: str, layout: str = "polar") -> np.ndarray:
    """castbook's histogram with the colour coordinates of a perceptual space: hue angle in
    the a*b* plane x chroma x lightness ("polar", 24 x 3 x 3) or an a*b* grid x lightness
    ("grid", 8 x 8 x 3), plus 4 grey levels; same weights, same chromatic gate."""
    rgb = appearance._to_pixels(image)
    lab = oklab(rgb) if space == "oklab" else cielab(rgb)
    # OKLab chroma reaches ~0.32, CIELAB (/100) ~1.3: scale so 1 is a saturated anime colour.
    reach = 0.25 if space == "oklab" else 0.9
    lightness = np.clip(lab[:, 0], 0, 1)
    a, b = lab[:, 1] / reach, lab[:, 2] / reach
    weight, chromatic = weights_and_gate(rgb)
    if layout == "polar":
        hue = np.mod(np.arctan2(b, a) / (2 * np.pi), 1.0)
        chroma = np.clip(np.hypot(a, b), 0, 1)
        axes = [(hue, 24, True), (chroma, 3, False), (lightness, 3, False)]
    else:
        axes = [
            (np.clip(0.5 + 0.5 * a, 0, 1), 8, False),
            (np.clip(0.5 + 0.5 * b, 0, 1), 8, False),
            (lightness, 3, False),
        ]
    colour = soft_histogram(axes, weight * chromatic)
    grey = soft_histogram([(lightness, appearance._GREY_BINS, False)], weight * (1 - chromatic))
    hist = np.concatenate([colour, grey])
    return hist / hist.sum()


# --------------------------------------------------------------------------- palettes


def palette(image, k: int = 8, iterations: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A weighted k-means palette of the crop in OKLab (castbook's pixel weights): k colours
    and their shares. Deterministic (farthest-point initialisation from the heaviest)."""
    rgb = appearance._to_pixels(image)
    weight, _ = weights_and_gate(rgb)
    points = oklab(rgb)
    centres = [points[int(np.argmax(weight))]]
    for _ in range(k - 1):
        d = ((points[:, None, :] - np.array(centres)[None]) ** 2).sum(-1).min(1)
        centres.append(points[int(np.argmax(d * weight))])
    centres = np.array(centres)
    for _ in range(iterations):
        label = ((points[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        mass = np.bincount(label, weight, k)
        for j in range(3):
            sums = np.bincount(label, weight * points[:, j], k)
            centres[:, j] = np.where(mass > 0, sums / np.where(mass > 0, mass, 1), centres[:, j])
    label = ((points[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    mass = np.bincount(label, weight, k)
    return centres, mass / mass.sum()


def emd(
    a: np.ndarray,
    wa: np.ndarray,
    b: np.ndarray,
    wb: np.ndarray,
    eps: float = 0.002,
    cap: float | None = None,
) -> np.ndarray:
    """Earth mover's distances between batches of weighted colour sets (a: B x m x 3 with
    shares wa: B x m; b, wb likewise; Euclidean OKLab ground distance), by Sinkhorn
    iterations with a small entropy in the log domain. ``cap``: the ground distance saturates
    there (a blue for a red costs what a blue for a green does)."""
    cost = np.sqrt(((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(-1))
    if cap is not None:
        cost = np.minimum(cost, cap)
    log_a, log_b = np.log(wa + 1e-300), np.log(wb + 1e-300)
    f, g = np.zeros(wa.shape), np.zeros(wb.shape)
    for _ in range(200):
        f = -eps * logsumexp((g[:, None, :] - cost) / eps + log_b[:, None, :], 2)
        g = -eps * logsumexp((f[:, :, None] - cost) / eps + log_a[:, :, None], 1)
    plan = np.exp(
        (f[:, :, None] + g[:, None, :] - cost) / eps + log_a[:, :, None] + log_b[:, None, :]
    )
    return (plan * cost).sum((1, 2))


def logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis, keepdims=True))).squeeze(axis)


class Palette(Scheme):
    """Dominant palettes compared by the earth mover's distance (similarity = -EMD); a set
    is the union of its references' palettes, each reference's colours a third of it."""

    def __init__(
        self, palettes: list[tuple[np.ndarray, np.ndarray]], cap: float | None = None
    ) -> None:
        self.name = "palette k8 emd" + ("" if cap is None else f" cap {cap:g}")
        self.cap = cap
        self.colours = np.stack([c for c, _ in palettes])
        self.shares = np.stack([w for _, w in palettes])
        n = len(palettes)
        i, j = np.triu_indices(n, 1)
        d = emd(self.colours[i], self.shares[i], self.colours[j], self.shares[j], cap=cap)
        self.pair = np.zeros((n, n))
        self.pair[i, j] = self.pair[j, i] = -d

    def fold(self, train: np.ndarray) -> Fold:
        colours, shares = self.colours, self.shares

        def set_similarity(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
            union = np.broadcast_to(
                colours[refs].reshape(1, -1, 3), (len(queries), len(refs) * colours.shape[1], 3)
            )
            weight = np.broadcast_to(shares[refs].reshape(1, -1) / len(refs), union.shape[:2])
            centre = -emd(colours[queries], shares[queries], union, weight, cap=self.cap)
            return 0.5 * (self.pair[np.ix_(queries, refs)].max(1) + centre)

        return Fold(self.pair, set_similarity)


# --------------------------------------------------------------------------- query views


def centre_crop(image, share: float):
    w, h = image.size
    cw, ch = round(w * share), round(h * share)
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


class QueryViews(Scheme):
    """castbook's descriptor for references; the query also described at centre crops,
    compared through the mean of its views' unit vectors ("mean") or its best view ("best")."""

    def __init__(self, views: list[np.ndarray], how: str, label: str) -> None:
        self.name = f"query views {label} {how}"
        self.views = views  # views[0]: the whole crop (histogram rows), then the crops
        self.how = how

    def fold(self, train: np.ndarray) -> Fold:
        roots = [v**0.5 for v in self.views]
        prior = roots[0][train].mean(0)
        xs = [drawn_research.centred(r, prior) for r in roots]
        x = xs[0]
        if self.how == "mean":
            q = drawn_research.centred(sum(xs), np.zeros(x.shape[1]))
            pair = 0.5 * (q @ x.T + x @ q.T)  # symmetric for the AUC and calibration

            def set_similarity(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
                cosines = q[queries] @ x[refs].T
                return set_cosine(cosines.max(1), q[queries] @ centroid(x[refs]))

            return Fold(pair, set_similarity, q @ x.T)

        stack = np.stack(xs)  # views x images x dims

        def set_similarity(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
            cosines = np.einsum("vqd,rd->vqr", stack[:, queries], x[refs]).max(0)
            centre = (stack[:, queries] @ centroid(x[refs])).max(0)
            return set_cosine(cosines.max(1), centre)

        rows = np.einsum("vqd,rd->vqr", stack, x).max(0)
        return Fold(0.5 * (rows + rows.T), set_similarity, rows)


# --------------------------------------------------------------------------- patches


def cell_histograms(image, cells: int) -> np.ndarray:
    """castbook's histogram of each cell of a cells x cells grid (uniform weight inside the
    cell instead of the centred mask), and each cell's share of the centred mask."""
    side = appearance.DESCRIPTOR_SIDE
    k = side // cells
    rows = (np.arange(side) // k).clip(0, cells - 1)
    cell_of = (rows[:, None] * cells + rows[None, :]).ravel()
    centred_mask = appearance._mask(side)
    out, share = [], []
    for c in range(cells * cells):
        inside = (cell_of == c).astype(np.float64)
        out.append(drawn_research.masked_histogram_with(appearance._histogram, image, inside))
        share.append(float((centred_mask * inside).sum()))
    share = np.array(share)
    return np.array(out), share / share.sum()


class Patches(Scheme):
    """Order-free local matching: each cell of the query finds its most alike cell of the
    other picture (centred cosine), weighted by how central the query's cell is; a set's
    cells are all its references' cells (the "centroid" of a patch bag is the bag)."""

    def __init__(self, cells: np.ndarray, shares: np.ndarray, label: str) -> None:
        self.name = f"patches {label}"
        self.roots = cells**0.5  # images x cells x bins
        self.shares = shares  # images x cells

    def fold(self, train: np.ndarray) -> Fold:
        n, c, d = self.roots.shape
        prior = self.roots[train].reshape(-1, d).mean(0)
        x = drawn_research.centred(self.roots.reshape(-1, d), prior).reshape(n, c, d)
        cos = np.einsum("icd,jed->ijce", x, x)  # i's cell c against j's cell e
        directed = (cos.max(3) * self.shares[:, None, :]).sum(2)  # query i, reference j
        pair = 0.5 * (directed + directed.T)

        def set_similarity(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
            best = directed[np.ix_(queries, refs)].max(1)
            pooled = cos[np.ix_(queries, refs)].max(axis=(1, 3))  # best cell of any reference
            return 0.5 * (best + (pooled * self.shares[queries]).sum(1))

        return Fold(pair, set_similarity, directed)


# --------------------------------------------------------------------------- main


def schemes(images: list, wanted: Callable[[str], bool]) -> dict[str, list[Scheme]]:
    """Name -> grid (one variant: measured as it is; several: chosen inside each fold).
    Only the families ``wanted`` (by name) are built."""
    rows = np.array([appearance._histogram(im) for im in images])
    production = Cosine("production", rows)
    out: dict[str, list[Scheme]] = {"production": [production]}
    transforms = ("plain", "idf0.5", "idf1", "excess")
    if wanted("distance"):
        for distance in DISTANCES:
            for transform in transforms:
                scheme = HistogramDistance(rows, distance, transform)
                out[f"distance {scheme.name}"] = [scheme]
        out["distance chosen"] = [
            HistogramDistance(rows, d, t) for d in DISTANCES for t in transforms
        ] + [production]
    if wanted("kernel"):
        smoothed = [Cosine(f"kernel {s:g}", hue_smoothed(rows, s)) for s in (0.5, 0.75, 1, 1.5)]
        for scheme in smoothed:
            out[scheme.name] = [scheme]
        out["kernel chosen"] = [production, *smoothed]
    if wanted("colour"):
        spaces = [(s, lay) for s in ("oklab", "cielab") for lay in ("polar", "grid")]
        for space, layout in spaces:
            h = np.array([perceptual_histogram(im, space, layout) for im in images])
            out[f"colour {space} {layout}"] = [Cosine(f"colour {space} {layout}", h)]
        out["colour chosen"] = [production] + [out[f"colour {s} {lay}"][0] for s, lay in spaces]
        for space, layout in spaces:
            h = {"hsv": rows, space: out[f"colour {space} {layout}"][0].rows}
            grid = [Blocks(h, {"hsv": 1.0, space: w}) for w in (0.0, 0.5, 1.0)]
            grid += [Blocks(h, {"hsv": 0.5, space: 1.0})]
            out[f"colour hsv + {space} {layout} chosen"] = grid
            for scheme in grid[1:]:
                out[f"colour {layout} {scheme.name}"] = [scheme]
    if wanted("query"):
        views = [rows] + [
            np.array([appearance._histogram(centre_crop(im, share)) for im in images])
            for share in (0.85, 0.7)
        ]
        for label, chosen_views in (("85", views[:2]), ("85+70", views)):
            for how in ("mean", "best"):
                out[f"query views {label} {how}"] = [QueryViews(chosen_views, how, label)]
    if wanted("patches"):
        for cells in (2, 3, 4):
            made = [cell_histograms(im, cells) for im in images]
            scheme = Patches(
                np.stack([h for h, _ in made]), np.stack([w for _, w in made]), f"{cells}x{cells}"
            )
            out[scheme.name] = [scheme]
            out[f"patches {cells}x{cells} fused with production chosen"] = [
                Fused(production, scheme, w) for w in (0.0, 0.25, 0.5, 1.0)
            ]
    if wanted("palette"):
        palettes = [palette(im) for im in images]
        out["palette k8 emd"] = [Palette(palettes)]
        capped = [Palette(palettes, cap) for cap in (0.05, 0.1, 0.2)]
        out["palette k8 emd capped chosen"] = capped
        out["palette fused with production chosen"] = [
            Fused(production, Palette(palettes, 0.1), w) for w in (0.0, 0.25, 0.5, 1.0)
        ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--only", nargs="*", help="scheme name prefixes")
    parser.add_argument(
        "--choose-by",
        choices=("auc", "top1"),
        default="auc",
        help="what the inner leave-one-out maximises when a grid is chosen among",
    )
    args = parser.parse_args()
    global CHOOSE_BY
    CHOOSE_BY = args.choose_by
    if not (EVAL_DIR / "anime" / "labels.csv").is_file():
        print(f"{EVAL_DIR} is absent: nothing to measure (ok).")
        return 0
    print(
        f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, seeds {args.seeds}, "
        f"grids chosen by inner {CHOOSE_BY}"
    )
    images, ids = drawn_research.load()

    def wanted(name: str) -> bool:
        return not args.only or any(name.startswith(p) or p.startswith(name) for p in args.only)

    t0 = time.process_time()
    grids = schemes(images, wanted)
    print(f"(features: {time.process_time() - t0:.0f} s of CPU)")
    report({n: g for n, g in grids.items() if n == "production" or wanted(n)}, ids, args.seeds)
    return 0


def report(grids: dict[str, list[Scheme]], ids: np.ndarray, seeds: list[int]) -> None:
    """Each grid's held-out figures (its summary line, then one line per seed), then the load
    average: what this script and drawn_embeddings.py print."""
    for name, grid in grids.items():
        start = time.process_time()
        result = evaluate(grid, ids, seeds)
        print(summary(name, result, seeds, time.process_time() - start), flush=True)
        print(per_seed(result, seeds), flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
