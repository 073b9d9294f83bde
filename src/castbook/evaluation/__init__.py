"""Consistency Eval: score images 0–100 against a character's reference images.

``score(reference, candidates)`` is the entry point; ``rank`` and ``most_consistent`` order
the results. Components (aHash, pHash, dHash, appearance, face, learned) are reported beside
the calibrated headline score. Importing this package loads numpy and Pillow only; dlib,
torch and ffmpeg are loaded when a face, learned-embedding or video score needs them.
"""

from castbook.evaluation.features import ImageFeatures, extract_features, load_for_scoring
from castbook.evaluation.hashes import (
    ImageHash,
    average_hash,
    difference_hash,
    perceptual_hash,
)
from castbook.evaluation.scorer import Score, Scorer, most_consistent, rank, score
from castbook.evaluation.scoring import Calibration, Comparison, compare, default_calibration

__all__ = [
    "Calibration",
    "Comparison",
    "ImageFeatures",
    "ImageHash",
    "Score",
    "Scorer",
    "average_hash",
    "compare",
    "default_calibration",
    "difference_hash",
    "extract_features",
    "load_for_scoring",
    "most_consistent",
    "perceptual_hash",
    "rank",
    "score",
]
