"""The one place logits become probabilities (numpy, float64; no scipy so the core stays cheap).

Binary checkpoint (one logit z per image, the positive class's): P(positive) = sigmoid(z / T).
k-class checkpoint (k logits): softmax(z / T). ``class_probabilities`` returns both as (N, k)
rows that sum to 1 ([1 - p, p] for a binary one), so callers can treat them alike. T is the
checkpoint's temperature (1.0 = uncalibrated). ``Predictor``, explanations, cross-validation and
ensemble creation all call this module.
"""

from __future__ import annotations

import numpy as np

__all__ = ["class_probabilities", "logit", "sigmoid", "softmax"]


def sigmoid(z) -> np.ndarray:
    """Elementwise 1 / (1 + exp(-z)) in float64, without overflow for large |z|."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))  # in (0, 1]: never overflows
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax(z, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` in float64 (shifted by the row maximum, so no overflow)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def logit(p) -> np.ndarray:
    """log(p / (1 - p)) in float64; ±inf at exactly 1 / 0 (``sigmoid`` maps them back)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


def class_probabilities(logits, temperature: float = 1.0) -> np.ndarray:
    """(N, k) probabilities from logits: (N,) or (N, 1) binary logits, or (N, k) class logits.

    Accepts numpy arrays or anything ``np.asarray`` takes (a CPU torch tensor included).
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 2 and z.shape[1] > 1:
        return softmax(z / temperature, axis=1)
    p = sigmoid(z.reshape(-1) / temperature)
    return np.stack([1.0 - p, p], axis=1)
