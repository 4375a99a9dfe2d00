"""Paired significance tests for two models scored on the same images.

- AUC: DeLong, DeLong & Clarke-Pearson (1988) test for two correlated ROC AUCs, computed with
  the O(n log n) mid-rank algorithm of Sun & Xu (2014, IEEE Signal Process. Lett. 21:1389). It
  reproduces pROC's ``roc.test`` on its published aSAH example (tests/evaluation/test_compare.py).
- Accuracy: McNemar's test on the discordant pairs b (A right, B wrong) and c (A wrong, B right).
  With b + c < 25 the exact two-sided binomial test (b ~ Bin(b + c, 1/2)) is used, because the
  chi-square approximation is poor for few discordant pairs; otherwise the chi-square statistic
  with Edwards' continuity correction, (|b − c| − 1)² / (b + c), on 1 degree of freedom.

Both tests treat images as independent. With several images per patient the p-values are
somewhat optimistic; the patient-level bootstrap intervals in ``intervals`` are the honest
companion.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest, chi2, norm, rankdata

from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation.metrics import check_binary_inputs

logger = logging.getLogger(__name__)

MCNEMAR_EXACT_BELOW = 25  # discordant pairs below which McNemar uses the exact binomial test


@dataclass(frozen=True)
class DeLongResult:
    """Two correlated AUCs, their difference (A − B), its DeLong standard error and test."""

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float  # two-sided
    ci_low: float  # confidence interval of the difference
    ci_high: float
    var_a: float  # DeLong variance of each AUC
    var_b: float
    covariance: float
    note: str = ""  # why values are NaN, if they are

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test for paired accuracies."""

    b: int  # A correct, B wrong
    c: int  # A wrong, B correct
    statistic: float  # chi-square statistic, or b for the exact test
    p_value: float  # two-sided
    method: str  # "exact" or "chi2_cc"
    accuracy_a: float
    accuracy_b: float

    def to_dict(self) -> dict:
        return asdict(self)


def _placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sun & Xu's structural components for k score rows (k, n): AUCs (k,), V10 (k, m), V01 (k, n0).

    V10[r, i]: share of negatives that positive i outranks under score r (ties 1/2);
    V01[r, j]: share of positives that outrank negative j. mean(V10) = mean(V01) = AUC.
    """
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = rankdata(pos, axis=1)  # mid-ranks within positives
    ty = rankdata(neg, axis=1)  # mid-ranks within negatives
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)  # mid-ranks within all
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return aucs, v10, v01


def delong_covariance(
    y_true: Sequence | np.ndarray, *scores: Sequence | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their DeLong covariance matrix (k, k) for k score vectors on the same cases."""
    y = np.asarray(y_true)
    s = np.vstack([np.asarray(x, dtype=float) for x in scores])  # (k, n)
    if y.ndim != 1 or s.shape[1] != len(y) or not np.all(np.isin(y, (0, 1))):
        raise DatasetError(
            f"DeLong needs 0/1 labels and score vectors of the same length; got {y.shape}, {s.shape}"
        )
    if not np.all(np.isfinite(s)):
        raise DatasetError("DeLong: scores contain NaN or infinity; check the model outputs")
    m, n = int((y == 1).sum()), int((y == 0).sum())
    if m < 2 or n < 2:
        nan = np.full(len(scores), np.nan)
        return nan, np.full((len(scores), len(scores)), np.nan)
    aucs, v10, v01 = _placements(y.astype(np.int64), s)
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_auc_ci(
    y_true: Sequence | np.ndarray, score: Sequence | np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(AUC, low, high): DeLong normal-approximation interval of one AUC, clipped to [0, 1]."""
    aucs, cov = delong_covariance(y_true, score)
    z = float(norm.ppf(0.5 + confidence / 2.0))
    half = z * np.sqrt(cov[0, 0])
    return float(aucs[0]), float(max(0.0, aucs[0] - half)), float(min(1.0, aucs[0] + half))


def delong_test(
    y_true: Sequence | np.ndarray,
    score_a: Sequence | np.ndarray,
    score_b: Sequence | np.ndarray,
    confidence: float = 0.95,
) -> DeLongResult:
    """Two-sided DeLong test of AUC(A) = AUC(B) on the same images (paired).

    Scores may be probabilities, logits or any ranking score (the test uses ranks only).
    Undefined cases (one class, fewer than 2 images per class) return NaNs with a note.
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence={confidence!r}: use a level strictly between 0 and 1")
    y = np.asarray(y_true)
    a, b = np.asarray(score_a, dtype=float), np.asarray(score_b, dtype=float)
    if not (y.shape == a.shape == b.shape and y.ndim == 1):
        raise DatasetError(
            f"DeLong needs paired 1-D arrays of equal length; got {y.shape}, {a.shape}, {b.shape}"
        )
    aucs, cov = delong_covariance(y, a, b)
    nan = float("nan")
    if np.isnan(aucs).any():
        note = "needs at least 2 positive and 2 negative images"
        return DeLongResult(nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, note)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    zq = float(norm.ppf(0.5 + confidence / 2.0))
    note = ""
    if se > 0:
        z = diff / se
        p = float(2 * norm.sf(abs(z)))
    elif diff == 0:
        z, p, note = (
            0.0,
            1.0,
            "identical rankings or both AUCs 1: zero variance (p = 1 is not evidence of equality)",
        )
    else:
        z, p, note = nan, nan, "zero variance with unequal AUCs: the test is undefined"
    return DeLongResult(
        float(aucs[0]),
        float(aucs[1]),
        diff,
        se,
        float(z),
        p,
        diff - zq * se,
        diff + zq * se,
        float(cov[0, 0]),
        float(cov[1, 1]),
        float(cov[0, 1]),
        note,
    )


def mcnemar_test(
    y_true: Sequence | np.ndarray, pred_a: Sequence | np.ndarray, pred_b: Sequence | np.ndarray
) -> McNemarResult:
    """McNemar's test of equal accuracy for two classifiers' predictions on the same images."""
    y, a, b = (np.asarray(v) for v in (y_true, pred_a, pred_b))
    if not (y.shape == a.shape == b.shape and y.ndim == 1 and len(y) > 0):
        raise DatasetError(f"McNemar needs paired non-empty 1-D arrays; got {y.shape}, {a.shape}, {b.shape}")
    right_a, right_b = a == y, b == y
    n_b = int(np.count_nonzero(right_a & ~right_b))
    n_c = int(np.count_nonzero(~right_a & right_b))
    acc_a, acc_b = float(right_a.mean()), float(right_b.mean())
    discordant = n_b + n_c
    if discordant == 0:
        return McNemarResult(n_b, n_c, 0.0, 1.0, "exact", acc_a, acc_b)
    if discordant < MCNEMAR_EXACT_BELOW:
        p = binomtest(n_b, discordant, 0.5, alternative="two-sided").pvalue
        return McNemarResult(n_b, n_c, float(n_b), float(min(1.0, p)), "exact", acc_a, acc_b)
    stat = (abs(n_b - n_c) - 1.0) ** 2 / discordant
    return McNemarResult(n_b, n_c, float(stat), float(chi2.sf(stat, 1)), "chi2_cc", acc_a, acc_b)


def pairwise_comparisons(
    y_true: Sequence | np.ndarray,
    probs: Mapping[str, Sequence | np.ndarray],
    thresholds: Mapping[str, float] | float = 0.5,
) -> list[dict]:
    """DeLong (AUC) and McNemar (accuracy at each model's threshold) for every pair of models.

    One tidy row per pair, in the mapping's order: model_a, model_b, auc_a, auc_b, auc_difference,
    auc_diff_ci_low/high, delong_z, delong_p, mcnemar_b, mcnemar_c, mcnemar_method, mcnemar_p.
    """
    names = list(probs)
    y = np.asarray(y_true)
    rows = []
    for i, name_a in enumerate(names):
        for name_b in names[i + 1 :]:
            pa, pb = (check_binary_inputs(y, probs[k])[1] for k in (name_a, name_b))
            ta, tb = (
                thresholds[k] if isinstance(thresholds, Mapping) else thresholds for k in (name_a, name_b)
            )
            d = delong_test(y, pa, pb)
            mc = mcnemar_test(y, (pa >= ta).astype(int), (pb >= tb).astype(int))
            rows.append(
                {
                    "model_a": name_a,
                    "model_b": name_b,
                    "auc_a": d.auc_a,
                    "auc_b": d.auc_b,
                    "auc_difference": d.difference,
                    "auc_diff_ci_low": d.ci_low,
                    "auc_diff_ci_high": d.ci_high,
                    "delong_z": d.z,
                    "delong_p": d.p_value,
                    "accuracy_a": mc.accuracy_a,
                    "accuracy_b": mc.accuracy_b,
                    "mcnemar_b": mc.b,
                    "mcnemar_c": mc.c,
                    "mcnemar_method": mc.method,
                    "mcnemar_p": mc.p_value,
                }
            )
    return rows
