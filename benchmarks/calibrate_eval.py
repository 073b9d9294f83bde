"""Fit the 0–100 score curves on the labelled images and write calibration.json.

    .venv/bin/python benchmarks/calibrate_eval.py

Face curve: face-embedding distance of every pair of photos in ../shared/eval/faces where
both show a face. Appearance curve: appearance similarity of every pair of anime crops in
../shared/eval/anime (illustrations are what the appearance score is for). Both fits weigh
same and different pairs equally, so 50 means "as likely the same character as not".
The result is deterministic: the same images give the same file.

    .venv/bin/python benchmarks/calibrate_eval.py --appearance-only

refits the appearance curve only and keeps the face curve of the current file (for a
change of the appearance descriptor; no face model is run).

Identity search's open-set thresholds ("no known character") are fitted with the curves:
per basis, the headline score that only ``OPEN_SET_FALSE_MATCH_RATE`` (1 %) of the wrong
answers reach — face-basis pairs of the photos (one reference per person), and the anime
crops' scores against another character of three random references counted as a set
(identify's rule; 50 draws, a fixed seed), scored with the new curves.
``--appearance-only`` refits the appearance threshold and keeps the face one.

    .venv/bin/python benchmarks/calibrate_eval.py --open-set-only

keeps both curves (no score changes) and refits the thresholds alone: for a change of the
face pipeline that moves embeddings a little, or to check that the file is current.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_data import labelled, require_eval_dir, scores_against_other_sets, split_scores

from castbook.evaluation import Scorer, compare
from castbook.evaluation.calibrate import (
    fit_logistic,
    roc_auc,
    threshold_at_false_positive_rate,
)
from castbook.evaluation.faces import best_match_distance
from castbook.evaluation.features import ImageFeatures
from castbook.evaluation.identity import IdentityVectors
from castbook.evaluation.scoring import (
    CALIBRATION_FILE,
    Calibration,
    Logistic,
    default_calibration,
)

OPEN_SET_FALSE_MATCH_RATE = 0.01
# Which labelled folder each basis's threshold is fitted on: the one its curve is fitted on.
OPEN_SET_FOLDERS = {"face": "faces", "appearance": "anime"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--appearance-only", action="store_true")
    choice.add_argument("--open-set-only", action="store_true")
    args = parser.parse_args()
    require_eval_dir()
    current = default_calibration()
    if args.appearance_only:
        anime = folder_features(Scorer(faces=False), "anime")
        appearance_curve, appearance_details = fit_appearance(*anime)
        calibration = Calibration(
            current.face, appearance_curve, {**current.details, **appearance_details}
        )
        write(with_open_set(calibration, {"appearance": anime}, current.open_set))
        return
    scorer = Scorer(faces=True)
    if scorer.face_embedder is None:
        sys.exit("needs castbook[faces]: the face curve and threshold come from face embeddings")
    features = {
        basis: folder_features(scorer, folder) for basis, folder in OPEN_SET_FOLDERS.items()
    }
    if args.open_set_only:
        write(with_open_set(current, features, current.open_set))
        return
    faces, face_features = features["face"]

    def face_distance(i: int, j: int) -> float | None:
        a, b = face_features[i].faces, face_features[j].faces
        return best_match_distance(a, b) if a and b else None

    same_d, diff_d = split_scores(faces, face_distance)
    face_curve = fit_logistic(same_d + diff_d, [True] * len(same_d) + [False] * len(diff_d))

    appearance_curve, appearance_details = fit_appearance(*features["appearance"])
    calibration = Calibration(
        face=face_curve,
        appearance=appearance_curve,
        details={
            "made_by": "benchmarks/calibrate_eval.py",
            "face_pairs": {"same": len(same_d), "different": len(diff_d)},
            "face_auc": round(roc_auc([-d for d in same_d], [-d for d in diff_d]), 4),
            "face_distance_at_50": round(face_curve.inverse(50), 4),
            **appearance_details,
        },
    )
    write(with_open_set(calibration, features, current.open_set))


def folder_features(scorer: Scorer, folder: str) -> tuple[list, list[ImageFeatures]]:
    items = labelled(folder)
    return items, [scorer.features(item.path, item.path.name) for item in items]


def with_open_set(
    calibration: Calibration,
    features: dict[str, tuple[list, list[ImageFeatures]]],
    current: dict,
) -> Calibration:
    """The calibration with the open-set thresholds of the bases in ``features`` refitted
    (the others kept from ``current``): per basis, the score only
    OPEN_SET_FALSE_MATCH_RATE of that folder's different-identity pairs reach."""
    open_set = {
        "false_match_rate": OPEN_SET_FALSE_MATCH_RATE,
        "made_by": "benchmarks/calibrate_eval.py",
        **{key: current[key] for key in ("face", "appearance", "scores") if key in current},
    }
    # How many wrong answers each threshold was fitted on (face: pairs; appearance: scores
    # against sets).
    counts = dict(open_set.get("scores", {}))
    for basis, (items, found) in features.items():

        def headline(i: int, j: int, basis: str = basis, found: list = found) -> float | None:
            result = compare(found[i], found[j], calibration)
            return result.score if result.basis == basis else None

        if basis == "appearance":
            # Against characters of SET_REFERENCES references counted as a set: identify's
            # rule, under which a set of references passes more strangers than one does.
            vectors = [IdentityVectors.of(f) for f in found]
            different = scores_against_other_sets(items, vectors, calibration=calibration)[basis]
        else:  # by face, one reference per person: the pairs
            _, different = split_scores(items, headline)
        if not different:
            sys.exit(f"no different-identity {basis} scores in {OPEN_SET_FOLDERS[basis]}/")
        open_set[basis] = round(
            threshold_at_false_positive_rate(different, OPEN_SET_FALSE_MATCH_RATE), 1
        )
        counts[basis] = len(different)
    open_set["scores"] = counts
    return Calibration(calibration.face, calibration.appearance, calibration.details, open_set)


def fit_appearance(anime: list, anime_features: list[ImageFeatures]) -> tuple[Logistic, dict]:
    """The appearance curve, fitted on every pair of the anime crops, and its details."""
    same_a, diff_a = split_scores(
        anime, lambda i, j: anime_features[i].appearance.similarity(anime_features[j].appearance)
    )
    curve = fit_logistic(same_a + diff_a, [True] * len(same_a) + [False] * len(diff_a))
    return curve, {
        "appearance_pairs": {"same": len(same_a), "different": len(diff_a)},
        "appearance_auc": round(roc_auc(same_a, diff_a), 4),
        "appearance_similarity_at_50": round(curve.inverse(50), 4),
    }


def write(calibration: Calibration) -> None:
    CALIBRATION_FILE.write_text(json.dumps(calibration.to_json(), indent=2) + "\n")
    print(json.dumps(calibration.to_json(), indent=2))
    print(f"wrote {CALIBRATION_FILE}")


if __name__ == "__main__":
    main()
