"""Choose the operating threshold on the VALIDATION split (never on test) and say what it buys there.

Candidates are the distinct validation probabilities: an image is positive when ``prob >= t``, so
sensitivity and specificity only change at observed scores and the validation numbers reported
here are exactly what ``binary_metrics(y_val, p_val, t)`` gives back.

Methods:

- ``"youden"`` (default): maximise Youden's J = sensitivity + specificity − 1. Ties go to the
  highest threshold (the most specific of the equally good points).
- ``"target_sensitivity"``: the HIGHEST threshold whose validation sensitivity is ≥ the target
  (e.g. 0.95 for a screening tool): the most specific threshold that still meets the target.
  Sensitivity is non-increasing in t, so this is the last observed positive score that keeps
  ``count(positives with prob >= t) / count(positives) >= target``.
- ``"fixed"``: a given threshold (0.5 by default), reported with its validation sens/spec.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation.metrics import check_binary_inputs, check_threshold

logger = logging.getLogger(__name__)

METHODS = ("youden", "target_sensitivity", "fixed")


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold and what it achieved on the validation split."""

    threshold: float  # predict PNEUMONIA when probability >= threshold
    method: str  # one of METHODS
    sensitivity: float  # validation sensitivity at the threshold
    specificity: float  # validation specificity at the threshold
    target_sensitivity: float | None = None  # the target, for method "target_sensitivity"

    @property
    def youden_j(self) -> float:
        return self.sensitivity + self.specificity - 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "youden_j": self.youden_j}


def operating_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, sensitivity, specificity) at every distinct score, ``prob >= t`` positive."""
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # last index of each tie group
    tp = np.cumsum(ys)[last]
    fp = last + 1 - tp
    n_pos, n_neg = int(ys.sum()), len(ys) - int(ys.sum())
    return ps[last], tp / n_pos, 1.0 - fp / n_neg


def choose_threshold(
    y_val: Sequence | np.ndarray,
    prob_val: Sequence | np.ndarray,
    method: str = "youden",
    *,
    target_sensitivity: float = 0.95,
    fixed: float = 0.5,
) -> ThresholdChoice:
    """Pick the operating threshold on validation labels/probabilities (see module docstring)."""
    if method not in METHODS:
        raise ConfigError(f"threshold method {method!r} is not one of {METHODS}")
    y, p = check_binary_inputs(y_val, prob_val)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise DatasetError(
            f"cannot choose a threshold: the validation split has only one class ({n_pos} of {len(y)} "
            "positive); it needs both NORMAL and PNEUMONIA images"
        )
    if method == "fixed":
        t = check_threshold(fixed)
        pred = p >= t
        sens = float(np.mean(pred[y == 1]))
        spec = float(np.mean(~pred[y == 0]))
        return ThresholdChoice(t, method, sens, spec)
    thresholds, sens, spec = operating_points(y, p)
    if method == "youden":
        j = sens + spec - 1.0
        i = int(np.flatnonzero(j >= j.max() - 1e-12)[0])  # thresholds descend: first = highest
    else:
        target = float(target_sensitivity)
        if not 0.0 < target <= 1.0:
            raise ConfigError(f"target_sensitivity={target_sensitivity!r}: use a value in (0, 1], e.g. 0.95")
        i = int(np.flatnonzero(sens >= target - 1e-12)[0])  # sens non-decreasing as t falls
    choice = ThresholdChoice(
        float(thresholds[i]),
        method,
        float(sens[i]),
        float(spec[i]),
        float(target_sensitivity) if method == "target_sensitivity" else None,
    )
    logger.info(
        "threshold %.4f by %s: validation sensitivity %.3f, specificity %.3f",
        choice.threshold,
        method,
        choice.sensitivity,
        choice.specificity,
    )
    return choice
