"""Reproduce the appearance-descriptor numbers (castbook.evaluation.appearance).

Reports, on the identity-labelled images in ../shared/eval (see its README):

* ROC AUC over all pairs (same identity = positive) and mean same / different scores, for the
  appearance descriptor and for a plain HSV colour-histogram baseline, on anime and faces;
* leave-one-character-out: the descriptor's only fitted part (the mean "every drawing" palette
  ``_PRIOR``) refitted without each anime character, AUC over all pairs and over the pairs
  that involve the held-out character only;
* robustness: for each edit (mirror, 80 % centre crop, 10 % shift with edge fill, 10 %
  crop-shift, brightness x0.75 / x1.25, JPEG quality 75) the share of edited copies whose
  similarity to their original stays above the threshold that only 5 % of real
  different-identity pairs in that folder pass;
* descriptor time per image and comparison time.

Usage::

    python benchmarks/appearance_research.py            # report
    python benchmarks/appearance_research.py --fit-prior  # print _PRIOR fitted on all anime

Exits 0 (and says so) when ../shared/eval is absent.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from castbook.evaluation import appearance  # noqa: E402


def load(folder: str) -> tuple[list[Image.Image], np.ndarray]:
    with open(EVAL / folder / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images, ids = [], []
    for row in rows:
        im = Image.open(EVAL / folder / row["file"])
        # as the product does: JPEGs decoded in draft mode at about 1/8 scale
        im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
        images.append(im.convert("RGB"))
        ids.append(row["identity"])
    return images, np.array(ids)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks for ties
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pair_scores(sim: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
    iu = np.triu_indices(len(ids), 1)
    return sim[iu], (ids[:, None] == ids[None, :])[iu], iu


def report_auc(name: str, sim: np.ndarray, ids: np.ndarray) -> float:
    s, y, _ = pair_scores(sim, ids)
    a = auc(s, y)
    print(f"  {name:<34} AUC {a:.3f}   same {s[y].mean():.3f}   different {s[~y].mean():.3f}")
    return a


# ---- baseline: plain HSV colour histogram (8 x 4 x 4, whole image, intersection) ----------


def hsv_hist(im: Image.Image) -> np.ndarray:
    hsv = np.asarray(im.resize((64, 64), Image.Resampling.BILINEAR).convert("HSV")).reshape(-1, 3)
    idx = (hsv[:, 0].astype(int) * 8 // 256) * 16 + (hsv[:, 1] // 64) * 4 + hsv[:, 2] // 64
    h = np.bincount(idx, minlength=128).astype(float)
    return h / h.sum()


def intersection_matrix(hists: np.ndarray) -> np.ndarray:
    return np.minimum(hists[:, None, :], hists[None, :, :]).sum(-1)


# ---- the descriptor, with an explicit prior (for leave-one-out) ---------------------------


def centred(hists: np.ndarray, prior: np.ndarray) -> np.ndarray:
    x = hists**appearance._POWER - prior
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sim_matrix(x: np.ndarray) -> np.ndarray:
    return np.clip(0.5 * (1.0 + x @ x.T), 0.0, 1.0)


# ---- edits -------------------------------------------------------------------------------


def shift(im: Image.Image, frac: float) -> Image.Image:
    a = np.asarray(im)
    dx, dy = round(im.width * frac), round(im.height * frac)
    a = np.pad(a, ((dy, 0), (dx, 0), (0, 0)), mode="edge")[: im.height, : im.width]
    return Image.fromarray(a)


def crop_shift(im: Image.Image, frac: float) -> Image.Image:
    w, h = im.size
    cw, ch = round(w * (1 - frac)), round(h * (1 - frac))
    return im.crop((w - cw, h - ch, w, h))


def centre_crop(im: Image.Image, keep: float) -> Image.Image:
    w, h = im.size
    cw, ch = round(w * keep), round(h * keep)
    left, top = (w - cw) // 2, (h - ch) // 2
    return im.crop((left, top, left + cw, top + ch))


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


EDITS = {
    "mirror": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "centre crop 80%": lambda im: centre_crop(im, 0.8),
    "shift 10% (edge fill)": lambda im: shift(im, 0.1),
    "crop-shift 10%": lambda im: crop_shift(im, 0.1),
    "brightness x0.75": lambda im: ImageEnhance.Brightness(im).enhance(0.75),
    "brightness x1.25": lambda im: ImageEnhance.Brightness(im).enhance(1.25),
    "JPEG q75": lambda im: jpeg(im, 75),
}


def robustness(folder: str, images: list[Image.Image], ids: np.ndarray) -> bool:
    descs = [appearance.describe_appearance(im) for im in images]
    x = np.array([d.values for d in descs])
    s, y, _ = pair_scores(sim_matrix(x), ids)
    threshold = float(np.quantile(s[~y], 0.95))
    print(f"  {folder}: threshold (95th percentile of different pairs) {threshold:.3f}")
    ok = True
    for name, edit in EDITS.items():
        sims = np.array(
            [
                d.similarity(appearance.describe_appearance(edit(im)))
                for d, im in zip(descs, images, strict=True)
            ]
        )
        share = float((sims > threshold).mean())
        ok &= share >= 0.95
        print(
            f"    {name:<24} {100 * share:5.1f} % above   (min similarity {sims.min():.3f},"
            f" median {np.median(sims):.3f})"
        )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-prior", action="store_true", help="print _PRIOR fitted on anime")
    args = parser.parse_args()
    if not (EVAL / "anime" / "labels.csv").exists():
        print(f"{EVAL} is absent: nothing to measure (ok).")
        return 0

    anime, anime_ids = load("anime")
    faces, face_ids = load("faces")
    anime_h = np.array([appearance._histogram(im) for im in anime])
    if args.fit_prior:
        prior = (anime_h**appearance._POWER).mean(0)
        print('_PRIOR: tuple[float, ...] = tuple(\n    float(v)\n    for v in """')
        for i in range(0, len(prior), 8):
            print(" ".join(f"{v:.4f}" for v in prior[i : i + 8]))
        print('""".split()  # noqa: SIM905 (compact table)\n)')
        return 0

    print(
        f"appearance descriptor {appearance.APPEARANCE_VERSION}, side {appearance.DESCRIPTOR_SIDE}"
    )
    print("\nAUC over all pairs")
    for folder, images, ids in (("anime", anime, anime_ids), ("faces", faces, face_ids)):
        print(f" {folder} ({len(images)} images, {len(set(ids))} identities)")
        base = np.array([hsv_hist(im) for im in images])
        report_auc("baseline HSV histogram", intersection_matrix(base), ids)
        x = np.array([appearance.describe_appearance(im).values for im in images])
        report_auc("appearance descriptor", sim_matrix(x), ids)
        if folder == "anime":
            report_auc("  same, without the prior", sim_matrix(centred(anime_h, 0.0)), ids)

    print("\nLeave-one-character-out (prior refitted without the character)")
    aucs = []
    for c in np.unique(anime_ids):
        keep = anime_ids != c
        prior = (anime_h[keep] ** appearance._POWER).mean(0)
        sim = sim_matrix(centred(anime_h, prior))
        s, y, iu = pair_scores(sim, anime_ids)
        involved = (anime_ids[iu[0]] == c) | (anime_ids[iu[1]] == c)
        a_all, a_c = auc(s, y), auc(s[involved], y[involved])
        aucs.append(a_all)
        print(f"  without {c:<22} all pairs {a_all:.3f}   pairs with {c}: {a_c:.3f}")
    print(f"  mean over held-out characters {np.mean(aucs):.3f}, min {np.min(aucs):.3f}")

    print("\nRobustness of edited copies")
    ok = robustness("anime", anime, anime_ids)
    ok &= robustness("faces", faces, face_ids)
    print(f"  every edit >= 95 % in both folders: {'yes' if ok else 'NO'}")

    print("\nTiming")
    small = [
        im.resize((appearance.DESCRIPTOR_SIDE,) * 2, Image.Resampling.BILINEAR) for im in anime
    ]
    for label, imgs in (("from ~160 px crop", anime), ("from a 48 px image", small)):
        t0 = time.perf_counter()
        for _ in range(5):
            for im in imgs:
                appearance.describe_appearance(im)
        dt = (time.perf_counter() - t0) / (5 * len(imgs))
        print(f"  describe_appearance {label}: {1000 * dt:.3f} ms / image")
    d = [appearance.describe_appearance(im) for im in small]
    t0 = time.perf_counter()
    n = 0
    for a in d:
        for b in d:
            a.similarity(b)
            n += 1
    print(f"  AppearanceDescriptor.similarity: {1e3 * (time.perf_counter() - t0) / n:.4f} ms")
    x = np.array([a.values for a in d])
    t0 = time.perf_counter()
    for _ in range(1000):
        x @ x[0]
    print(
        f"  vectorised (matrix @ vector, {len(d)} refs): "
        f"{1e3 * (time.perf_counter() - t0) / 1000 / len(d):.5f} ms per comparison"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
