"""Binary classification metrics on arrays of labels and probabilities, NaN-with-a-reason when undefined.

Conventions (they matter when numbers are quoted to clinicians):

- label 1 = PNEUMONIA is the positive class (``pneumocxr.labels``); an image is predicted positive
  when ``prob >= threshold``.
- Metric keys use the clinical names; ``METRIC_LABELS`` gives the ML synonyms
  (sensitivity = recall, PPV = precision).
- A metric that is mathematically undefined on the given data (AUC with one class present, PPV
  with no positive predictions, MCC with an empty row/column of the confusion matrix …) is NaN,
  and ``result["undefined"][key]`` says why. It is never silently 0, unlike sklearn's
  ``zero_division`` default, because a printed 0.00 reads as "the model is useless".
- ROC AUC is the Mann–Whitney statistic (ties count 1/2); PR AUC is average precision
  (step-wise, no interpolation), the same definitions as ``sklearn.metrics``. Both are computed
  here from one sort because the bootstrap calls them thousands of times; tests pin them to sklearn.
- ECE: equal-width bins of P(PNEUMONIA), ``calibration.DEFAULT_N_BINS`` = 15.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm

from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation.calibration import DEFAULT_N_BINS, expected_calibration_error
from pneumocxr.labels import CLASS_NAMES

METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "balanced_accuracy",
    "mcc",
    "roc_auc",
    "pr_auc",
    "brier",
    "ece",
)
METRIC_LABELS: dict[str, str] = {
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity (recall)",
    "specificity": "Specificity",
    "ppv": "PPV (precision)",
    "npv": "NPV",
    "f1": "F1",
    "balanced_accuracy": "Balanced accuracy",
    "mcc": "MCC",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC (average precision)",
    "brier": "Brier score",
    "ece": "Expected calibration error",
}
COUNT_NAMES: tuple[str, ...] = ("tp", "fp", "tn", "fn")

ONE_CLASS = "only one class present"


def check_binary_inputs(
    y_true: Sequence | np.ndarray, prob: Sequence | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Validated copies: labels as int64 in {0, 1}, probabilities as float64 in [0, 1], same length."""
    y = np.asarray(y_true)
    p = np.asarray(prob, dtype=float)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise DatasetError(
            f"labels and probabilities must be 1-D and equally long; got shapes {y.shape} and {p.shape}"
        )
    if len(y) == 0:
        raise DatasetError("no images to evaluate: the label and probability arrays are empty")
    if not np.all(np.isin(y, (0, 1))):
        raise DatasetError(
            f"labels must be 0 ({CLASS_NAMES[0]}) or 1 ({CLASS_NAMES[1]}); found {np.unique(y)[:10].tolist()}"
        )
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        raise DatasetError(
            f"{int(bad.sum())} probabilities are NaN or outside [0, 1] (first: {p[bad][0]!r}); "
            "pass P(PNEUMONIA), not logits"
        )
    return y.astype(np.int64), p


def check_threshold(threshold: float) -> float:
    """A decision threshold must be a number in [0, 1]."""
    t = float(threshold)
    if not np.isfinite(t) or not 0.0 <= t <= 1.0:
        raise ConfigError(f"threshold={threshold!r}: use a probability in [0, 1] (e.g. 0.5)")
    return t


def check_prevalence(prevalence: float) -> float:
    """A disease prevalence must be a number strictly between 0 and 1."""
    try:
        value = float(prevalence)
    except (TypeError, ValueError):
        value = float("nan")
    if not (np.isfinite(value) and 0.0 < value < 1.0):
        raise ConfigError(
            f"prevalence={prevalence!r}: use the share of PNEUMONIA among the films the model will read, "
            "strictly between 0 and 1 (e.g. 0.1)"
        )
    return value


def predictive_values(
    sensitivity: float | np.ndarray, specificity: float | np.ndarray, prevalence: float
) -> tuple[np.ndarray, np.ndarray]:
    """(PPV, NPV) at ``prevalence`` from sensitivity and specificity (Bayes' theorem):

    PPV = sens·P / (sens·P + (1 − spec)·(1 − P)),  NPV = spec·(1 − P) / (spec·(1 − P) + (1 − sens)·P).

    The PPV/NPV of a test set carry the test set's own prevalence (Kermany test: 62 % PNEUMONIA);
    these are what a site with prevalence P would see. NaN where undefined (PPV when sens = 0 and
    spec = 1: nothing is called positive). Works elementwise on arrays (bootstrap resamples).
    """
    prev = check_prevalence(prevalence)
    sens = np.asarray(sensitivity, dtype=float)
    spec = np.asarray(specificity, dtype=float)
    true_pos, false_pos = sens * prev, (1.0 - spec) * (1.0 - prev)
    true_neg, false_neg = spec * (1.0 - prev), (1.0 - sens) * prev
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv = np.where(true_pos + false_pos > 0, true_pos / (true_pos + false_pos), np.nan)
        npv = np.where(true_neg + false_neg > 0, true_neg / (true_neg + false_neg), np.nan)
    return ppv, npv


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann–Whitney AUC: P(score of a random positive > a random negative), ties 1/2; NaN if one class."""
    n_pos = int(np.count_nonzero(y))
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)  # average ranks: ties share the mid-rank
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """AP = Σ (R_k − R_{k−1}) · P_k over distinct thresholds (sklearn's definition); NaN if no positives."""
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # last index of each distinct score
    tps = np.cumsum(ys)[last_of_tie]
    precision = tps / (last_of_tie + 1)
    recall = tps / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def confusion_counts(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, int]:
    """tp, fp, tn, fn with ``prob >= threshold`` predicted positive."""
    pred = p >= threshold
    pos = y == 1
    tp = int(np.count_nonzero(pred & pos))
    fp = int(np.count_nonzero(pred & ~pos))
    fn = int(np.count_nonzero(~pred & pos))
    return {"tp": tp, "fp": fp, "tn": len(y) - tp - fp - fn, "fn": fn}


def _ratio(num: float, den: float, key: str, reason: str, undefined: dict[str, str]) -> float:
    if den == 0:
        undefined[key] = reason
        return float("nan")
    return num / den


def metrics_from_counts(tp: int, fp: int, tn: int, fn: int) -> tuple[dict[str, float], dict[str, str]]:
    """The threshold metrics from confusion counts, with reasons for those that are undefined."""
    und: dict[str, str] = {}
    m = {"accuracy": (tp + tn) / (tp + fp + tn + fn)}
    m["sensitivity"] = _ratio(tp, tp + fn, "sensitivity", "no positive cases (tp + fn = 0)", und)
    m["specificity"] = _ratio(tn, tn + fp, "specificity", "no negative cases (tn + fp = 0)", und)
    m["ppv"] = _ratio(tp, tp + fp, "ppv", "no positive predictions (tp + fp = 0)", und)
    m["npv"] = _ratio(tn, tn + fn, "npv", "no negative predictions (tn + fn = 0)", und)
    m["f1"] = _ratio(2 * tp, 2 * tp + fp + fn, "f1", "no positive cases and no positive predictions", und)
    if "sensitivity" in und or "specificity" in und:
        und["balanced_accuracy"] = ONE_CLASS
        m["balanced_accuracy"] = float("nan")
    else:
        m["balanced_accuracy"] = (m["sensitivity"] + m["specificity"]) / 2.0
    margins = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if margins == 0:
        why = ONE_CLASS if (tp + fn == 0 or tn + fp == 0) else "all predictions are in one class"
        und["mcc"] = why
        m["mcc"] = float("nan")
    else:
        m["mcc"] = (tp * tn - fp * fn) / float(np.sqrt(float(margins)))
    return m, und


def binary_metrics(
    y_true: Sequence | np.ndarray,
    prob: Sequence | np.ndarray,
    threshold: float = 0.5,
    *,
    n_bins: int = DEFAULT_N_BINS,
) -> dict:
    """Every metric in ``METRIC_NAMES`` plus the counts tp/fp/tn/fn, n, n_positive, threshold, and
    ``undefined``: {metric: reason} for each metric that is NaN because the data cannot define it."""
    y, p = check_binary_inputs(y_true, prob)
    t = check_threshold(threshold)
    counts = confusion_counts(y, p, t)
    values, undefined = metrics_from_counts(**counts)
    values["roc_auc"] = roc_auc(y, p)
    if np.isnan(values["roc_auc"]):
        undefined["roc_auc"] = ONE_CLASS
    values["pr_auc"] = average_precision(y, p)
    if np.isnan(values["pr_auc"]):
        undefined["pr_auc"] = "no positive cases"
    values["brier"] = float(np.mean((p - y) ** 2))
    values["ece"] = expected_calibration_error(y, p, n_bins)
    result: dict = {k: float(values[k]) for k in METRIC_NAMES}
    result.update(counts)
    result.update(n=len(y), n_positive=int(y.sum()), threshold=t, undefined=undefined)
    return result


def confusion_matrix(
    y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray, n_classes: int = 2
) -> np.ndarray:
    """(n_classes, n_classes) counts, rows = true class, columns = predicted (sklearn's layout).

    For the binary task that is ``[[tn, fp], [fn, tp]]``.
    """
    y = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    if y.shape != pred.shape or y.ndim != 1:
        raise DatasetError(
            f"true and predicted labels must be 1-D and equally long; got {y.shape} and {pred.shape}"
        )
    if y.size and (min(y.min(), pred.min()) < 0 or max(y.max(), pred.max()) >= n_classes):
        raise DatasetError(
            f"labels must be integers 0…{n_classes - 1}; found {np.union1d(y, pred)[:10].tolist()}"
        )
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_report(
    y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray, class_names: Sequence[str] = CLASS_NAMES
) -> tuple[str, dict]:
    """sklearn's per-class precision/recall/F1/support report as (text, dict); undefined cells are NaN."""
    names = list(class_names)
    confusion_matrix(y_true, y_pred, len(names))  # validates the labels before sklearn sees them
    kwargs = dict(labels=list(range(len(names))), target_names=names, zero_division=np.nan, digits=4)
    text = skm.classification_report(y_true, y_pred, **kwargs)
    table = skm.classification_report(y_true, y_pred, output_dict=True, **kwargs)
    return text, table
