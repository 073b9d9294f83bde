"""From two images' features to components and one calibrated 0–100 score.

The headline score is identity-driven when both images show a face (the face embedding
distance), appearance-driven otherwise (the palette-by-region descriptor). Each raw
measure is mapped to 0–100 by a logistic curve fitted on labelled same/different pairs
(``scripts/calibrate_eval.py`` writes ``calibration.json``), so a score reads as "how
likely is this the same character, in percent": 50 is the point where same and different
are equally likely given equal priors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from castbook.errors import InvalidInputError
from castbook.evaluation.features import ImageFeatures
from castbook.evaluation.reference_set import centroid, set_cosine

__all__ = [
    "CALIBRATION_FILE",
    "Calibration",
    "Comparison",
    "Logistic",
    "compare",
    "compare_to_set",
]

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")


@dataclass(frozen=True)
class Logistic:
    """score = 100 / (1 + exp(-(intercept + slope · x)))."""

    intercept: float
    slope: float

    def __call__(self, x: float) -> float:
        z = self.intercept + self.slope * x
        if z < -60:
            return 0.0
        return 100.0 / (1.0 + math.exp(-z))

    def inverse(self, score: float) -> float:
        """The raw measure at which the curve gives ``score``."""
        p = min(max(score / 100.0, 1e-9), 1 - 1e-9)
        return (math.log(p / (1 - p)) - self.intercept) / self.slope


@dataclass(frozen=True)
class Calibration:
    face: Logistic  # x = face embedding distance (smaller is more alike)
    appearance: Logistic  # x = appearance similarity in [0, 1]
    details: dict[str, Any]
    # Identity search's "no known character" thresholds, fitted with the curves on the same
    # pairs: {"false_match_rate": 0.01, "face": score, "appearance": score, ...}.
    open_set: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            face=Logistic(**data["face"]),
            appearance=Logistic(**data["appearance"]),
            details=data.get("details", {}),
            open_set=data.get("open_set", {}),
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "face": {"intercept": self.face.intercept, "slope": self.face.slope},
            "appearance": {
                "intercept": self.appearance.intercept,
                "slope": self.appearance.slope,
            },
            "details": self.details,
        }
        if self.open_set:
            data["open_set"] = self.open_set
        return data


@cache
def default_calibration() -> Calibration:
    return Calibration.from_json(json.loads(CALIBRATION_FILE.read_text()))


@dataclass(frozen=True)
class Comparison:
    score: float
    basis: str  # "face" or "appearance"
    components: dict[str, float]


def compare(
    reference: ImageFeatures, candidate: ImageFeatures, calibration: Calibration | None = None
) -> Comparison:
    calibration = calibration or default_calibration()
    components = {
        "ahash": reference.ahash.similarity(candidate.ahash),
        "phash": reference.phash.similarity(candidate.phash),
        "dhash": reference.dhash.similarity(candidate.dhash),
        "appearance": calibration.appearance(reference.appearance.similarity(candidate.appearance)),
    }
    if reference.learned is not None and candidate.learned is not None:
        components["learned"] = max(0.0, 100.0 * reference.learned.similarity(candidate.learned))
    distance = _face_distance(reference, candidate)
    if distance is not None:
        components["face"] = calibration.face(distance)
    components = _rounded(components)
    if "face" in components:
        return Comparison(components["face"], "face", components)
    return Comparison(components["appearance"], "appearance", components)


def compare_to_set(
    references: Sequence[ImageFeatures],
    candidate: ImageFeatures,
    calibration: Calibration | None = None,
) -> tuple[int, Comparison]:
    """A candidate against a character's references as a set: which reference matches best
    (its position) and the character's comparison.

    Each reference is compared as :func:`compare` does. The references compared by face
    count with the best of them; those compared by appearance count as a set
    (:mod:`castbook.evaluation.reference_set`: the best one's cosine and the centroid's,
    averaged, then calibrated). The character's score is the higher of the two; its
    components are the winning reference's, with ``appearance`` the set's score. With one
    reference this is :func:`compare`.
    """
    if not references:
        raise InvalidInputError("a character needs at least one reference to compare with")
    calibration = calibration or default_calibration()
    results = [compare(reference, candidate, calibration) for reference in references]
    by_appearance = [i for i, result in enumerate(results) if result.basis == "appearance"]
    if len(by_appearance) <= 1:  # no set: the best reference, the first of ties
        index = max(range(len(results)), key=lambda i: results[i].score)
        return index, results[index]
    by_face = [i for i, result in enumerate(results) if result.basis == "face"]
    best_face = max(by_face, key=lambda i: results[i].score) if by_face else None
    query = np.asarray(candidate.appearance.values, dtype=np.float64)
    rows = np.asarray([references[i].appearance.values for i in by_appearance], dtype=np.float64)
    cosines = rows @ query
    best = by_appearance[int(np.argmax(cosines))]
    cosine = float(set_cosine(cosines.max(), centroid(rows) @ query))
    score = round(calibration.appearance(min(1.0, max(0.0, 0.5 * (1.0 + cosine)))), 2)
    if best_face is not None and results[best_face].score >= score:
        return best_face, results[best_face]
    components = {**results[best].components, "appearance": score}
    return best, Comparison(score, "appearance", components)


def _face_distance(reference: ImageFeatures, candidate: ImageFeatures) -> float | None:
    if not reference.faces or not candidate.faces:
        return None
    from castbook.evaluation.faces import best_match_distance

    return best_match_distance(reference.faces, candidate.faces)


def _rounded(components: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 2) for name, value in components.items()}
