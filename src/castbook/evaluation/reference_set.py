"""How a character's several reference images count together: as a set, not one by one.

By appearance (drawn characters), a character's references are compared with a candidate
as a set: the cosine of its best-matching reference and the cosine of the references'
centroid (the normalised mean of their unit appearance vectors: what the character's
pictures have in common) are averaged, and that one measure goes through the appearance
calibration curve::

    set cosine = ½ · (max_i cos(q, r_i) + cos(q, mean_i r_i / |mean_i r_i|))

With one reference both terms are that reference's cosine, so the score is the pair score
of before. The best match keeps a candidate that is a copy of one reference high; the
centroid lets a drawing that is like all of a character's references beat one that is like
only one of them, and a single odd reference moves it only part of the way.

Measured on drawn characters castbook never saw (``benchmarks/drawn_research.py
--set-rules``, leave-one-character-out), against the best match alone, the mean of the
best two, the centroid alone and soft maxima; docs/evaluation.md has the figures. Faces are
still compared one reference at a time (the best face counts): one photo per person is
what the labelled photos allow to measure, and the face score is right on every one.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SET_RULE", "centroid", "set_cosine"]

SET_RULE = "best+centroid"


def centroid(vectors: np.ndarray) -> np.ndarray:
    """The unit mean of ``vectors`` (rows); zeros when they cancel out or there are none."""
    rows = np.asarray(vectors, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"expected a matrix of reference vectors, got shape {rows.shape}")
    if not len(rows):
        return np.zeros(rows.shape[1])
    total = rows.sum(axis=0)
    norm = float(np.linalg.norm(total))
    return total / norm if norm > 1e-12 else np.zeros(rows.shape[1])


def set_cosine(best: np.ndarray | float, centroid_cosine: np.ndarray | float) -> np.ndarray:
    """The set's cosine from its best reference's cosine and its centroid's (arrays work
    element-wise, one character per element)."""
    return 0.5 * (
        np.asarray(best, dtype=np.float64) + np.asarray(centroid_cosine, dtype=np.float64)
    )
