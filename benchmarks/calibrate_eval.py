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
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_data import labelled, require_eval_dir, split_scores

from castbook.evaluation import Scorer
from castbook.evaluation.calibrate import fit_logistic, roc_auc
from castbook.evaluation.faces import best_match_distance
from castbook.evaluation.scoring import CALIBRATION_FILE, Calibration, Logistic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appearance-only", action="store_true")
    args = parser.parse_args()
    require_eval_dir()
    if args.appearance_only:
        current = Calibration.from_json(json.loads(CALIBRATION_FILE.read_text()))
        appearance_curve, appearance_details = fit_appearance(Scorer(faces=False))
        write(
            Calibration(current.face, appearance_curve, {**current.details, **appearance_details})
        )
        return
    scorer = Scorer(faces=True)
    faces = labelled("faces")
    face_features = [scorer.features(item.path, item.path.name) for item in faces]

    def face_distance(i: int, j: int) -> float | None:
        a, b = face_features[i].faces, face_features[j].faces
        return best_match_distance(a, b) if a and b else None

    same_d, diff_d = split_scores(faces, face_distance)
    face_curve = fit_logistic(same_d + diff_d, [True] * len(same_d) + [False] * len(diff_d))

    appearance_curve, appearance_details = fit_appearance(scorer)
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
    write(calibration)


def fit_appearance(scorer: Scorer) -> tuple[Logistic, dict]:
    """The appearance curve, fitted on every pair of the anime crops, and its details."""
    anime = labelled("anime")
    anime_features = [scorer.features(item.path, item.path.name) for item in anime]
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
