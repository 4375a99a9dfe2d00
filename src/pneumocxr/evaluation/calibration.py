"""Calibration: temperature scaling, reliability-diagram data and expected calibration error.

A probability of 0.9 that is right only 70 % of the time misleads a clinician more than a wrong
label does, so calibration is measured (ECE, reliability diagram) and corrected with temperature
scaling (Guo et al. 2017): one scalar T > 0 divides the logits, fitted on the *validation* split by
minimising the negative log-likelihood. Dividing by T never reorders the scores, so AUC and the
ranking are unchanged; only the probabilities move.

Binary models have one logit per image (``p = sigmoid(z / T)``); multi-class models have a
``(n, k)`` logit matrix (``p = softmax(z / T)``). Both are supported.

Calibration is measured on the positive-class probability: images are put into ``n_bins``
equal-width bins of predicted P(PNEUMONIA) (``[0, 1/B), [1/B, 2/B), …, [(B-1)/B, 1]``: the last
bin is closed) and each bin's mean prediction is compared with its observed positive rate.
ECE = Σ_b (n_b / N) · |mean predicted_b − observed rate_b|. ``DEFAULT_N_BINS`` = 15 as in
Guo et al.; empty bins contribute nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from pneumocxr.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

DEFAULT_N_BINS = 15
# Search range for T: wide enough for any sane network (x20 sharper or softer), bounded so a
# degenerate validation set (perfectly separated) cannot drive T to 0 or infinity.
TEMPERATURE_BOUNDS = (0.05, 20.0)


@dataclass(frozen=True)
class ReliabilityData:
    """What a reliability diagram draws. Empty bins have count 0 and NaN means."""

    edges: np.ndarray  # (n_bins + 1,) bin edges on predicted probability, 0 … 1
    mean_predicted: np.ndarray  # (n_bins,) mean predicted probability per bin
    observed: np.ndarray  # (n_bins,) observed positive rate per bin
    counts: np.ndarray  # (n_bins,) number of images per bin
    ece: float  # expected calibration error over these bins

    def rows(self) -> list[dict[str, float]]:
        """One row per bin, ready for CSV."""
        return [
            {
                "bin_low": float(self.edges[i]),
                "bin_high": float(self.edges[i + 1]),
                "mean_predicted": float(self.mean_predicted[i]),
                "observed_rate": float(self.observed[i]),
                "count": int(self.counts[i]),
            }
            for i in range(len(self.counts))
        ]


def _check_n_bins(n_bins: int) -> None:
    if int(n_bins) != n_bins or n_bins < 1:
        raise ConfigError(f"n_bins={n_bins!r}: use a positive whole number of calibration bins (e.g. 15)")


def bin_indices(prob: np.ndarray, n_bins: int = DEFAULT_N_BINS) -> np.ndarray:
    """Equal-width bin of each probability; 1.0 falls in the last bin (closed on the right)."""
    _check_n_bins(n_bins)
    return np.minimum((np.asarray(prob, dtype=float) * n_bins).astype(np.int64), n_bins - 1)


def reliability_curve(y_true: np.ndarray, prob: np.ndarray, n_bins: int = DEFAULT_N_BINS) -> ReliabilityData:
    """Per-bin mean prediction, observed positive rate and count (inputs already validated)."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(prob, dtype=float)
    idx = bin_indices(p, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(counts > 0, sum_p / counts, np.nan)
        observed = np.where(counts > 0, sum_y / counts, np.nan)
    # ECE from sums: Σ_b |Σp_b − Σy_b| / N  ==  Σ_b (n_b/N)|mean_p_b − obs_b|, empty bins give 0.
    ece = float(np.abs(sum_p - sum_y).sum() / max(len(p), 1))
    return ReliabilityData(np.linspace(0.0, 1.0, n_bins + 1), mean_p, observed, counts, ece)


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = DEFAULT_N_BINS) -> float:
    """ECE of the positive-class probability over equal-width bins (see module docstring)."""
    return reliability_curve(y_true, prob, n_bins).ece


def probability_to_logit(prob: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Logit of stored probabilities (clipped to [eps, 1-eps] so 0 and 1 stay finite)."""
    p = np.clip(np.asarray(prob, dtype=float), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def _as_logits_and_labels(logits: np.ndarray, y_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=float)
    y = np.asarray(y_true)
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]  # (n, 1) one-logit head -> (n,)
    if z.ndim not in (1, 2) or len(z) != len(y) or len(y) == 0:
        raise DatasetError(
            f"temperature scaling needs logits of shape (n,) or (n, k) and n labels; got logits "
            f"{z.shape} and {len(y)} labels"
        )
    if not np.all(np.isfinite(z)):
        raise DatasetError("temperature scaling: logits contain NaN or infinity; check the model outputs")
    k = 2 if z.ndim == 1 else z.shape[1]
    if not np.all(np.isin(y, np.arange(k))):
        raise DatasetError(f"temperature scaling: labels must be integers 0…{k - 1}; got {np.unique(y)[:10]}")
    return z, y.astype(np.int64)


def _nll(log_t: float, z: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood at temperature exp(log_t), computed stably from logits."""
    s = z / np.exp(log_t)
    if s.ndim == 1:
        # -log sigmoid(s) for y=1, -log(1 - sigmoid(s)) for y=0  ==  softplus(s) - y*s
        return float(np.mean(np.logaddexp(0.0, s) - y * s))
    return float(np.mean(special.logsumexp(s, axis=1) - s[np.arange(len(y)), y]))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Temperature T minimising validation NLL of ``logits / T`` (binary (n,) or multi-class (n, k)).

    The search runs over log T (bounded, ``TEMPERATURE_BOUNDS``) so T stays positive and the
    problem is well scaled: T = 2 and T = 0.5 are equally far from 1.
    """
    z, y = _as_logits_and_labels(logits, y_true)
    lo, hi = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    res = optimize.minimize_scalar(
        _nll, bounds=(lo, hi), args=(z, y), method="bounded", options={"xatol": 1e-6}
    )
    temperature = float(np.exp(res.x))
    if np.isclose(res.x, lo, atol=1e-3) or np.isclose(res.x, hi, atol=1e-3):
        logger.warning(
            "temperature %.3g is at the search bound %s: the validation set may be too small or "
            "perfectly separated for a reliable fit",
            temperature,
            TEMPERATURE_BOUNDS,
        )
    logger.info("temperature scaling: T=%.4f (NLL %.4f -> %.4f)", temperature, _nll(0.0, z, y), res.fun)
    return temperature


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities: sigmoid(z/T) for (n,) logits, softmax(z/T) rows for (n, k)."""
    if not np.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"temperature={temperature!r}: must be a positive number (1.0 = unchanged)")
    z = np.asarray(logits, dtype=float)
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]
    s = z / temperature
    return special.expit(s) if s.ndim == 1 else special.softmax(s, axis=1)
