"""Fitting the score curves on labelled pairs, and the numbers used to judge them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from castbook.evaluation.scoring import Logistic

__all__ = ["fit_logistic", "roc_auc", "threshold_at_false_positive_rate"]


def roc_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos = np.asarray(positives, dtype=np.float64)
    neg = np.asarray(negatives, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("ROC AUC needs at least one positive and one negative")
    values = np.concatenate([pos, neg])
    order = values.argsort(kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(1, values.size + 1)
    # Average the ranks of tied values.
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    for start, end in zip(starts, ends, strict=True):
        if end - start > 1:
            ranks[order[start:end]] = (start + 1 + end) / 2
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def threshold_at_false_positive_rate(negatives: Sequence[float], rate: float) -> float:
    """The score above which only ``rate`` of the negatives lie."""
    return float(np.quantile(np.asarray(negatives, dtype=np.float64), 1.0 - rate))


def fit_logistic(
    values: Sequence[float], same: Sequence[bool], *, l2: float = 1e-3, iterations: int = 100
) -> Logistic:
    """Fit P(same | x) = σ(a + b·x) with both classes weighted equally (Newton's method).

    Equal class weights make 50 the point where a pair is as likely the same character as
    not when both are equally common, whatever the imbalance of the labelled data.
    """
    x = np.asarray(values, dtype=np.float64)
    y = np.asarray(same, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("values and labels must be 1-D and of the same length")
    n_pos, n_neg = y.sum(), (1 - y).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("fitting needs both same and different pairs")
    weights = np.where(y == 1, 0.5 / n_pos, 0.5 / n_neg)
    # Standardise for a well-conditioned fit, then map the parameters back.
    mean, scale = x.mean(), x.std() or 1.0
    z = (x - mean) / scale
    design = np.stack([np.ones_like(z), z], axis=1)
    theta = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (weights * (p - y)) + l2 * theta
        hessian = (design * (weights * p * (1 - p))[:, None]).T @ design + l2 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    slope = theta[1] / scale
    return Logistic(intercept=float(theta[0] - slope * mean), slope=float(slope))
