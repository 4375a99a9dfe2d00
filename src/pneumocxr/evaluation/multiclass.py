"""Multi-class metrics (e.g. NORMAL / BACTERIAL / VIRAL) with 95 % intervals, NaN-with-a-reason.

Conventions, the same as the binary layer (``metrics``, ``intervals``) wherever they carry over:

- The prediction is the argmax of each probability row (ties go to the lower class index).
- Per class, metrics are one-vs-rest: precision (PPV), recall (sensitivity), specificity, F1 and
  ROC AUC of ``probs[:, c]`` for "class c vs the rest" (Mann–Whitney, ``metrics.roc_auc``).
- F1 is ``2tp / (2tp + fp + fn)``: a class that is present but never predicted has F1 = 0 (it was
  never found) while its precision is NaN (no predictions to be precise about), as in sklearn ≥ 1.3.
- Macro averages are NaN, with a reason naming the class, when any class's value is undefined.
  sklearn (``zero_division=np.nan``) instead averages the classes it can, which quietly turns a
  3-class average into a 2-class one; a NaN with its reason cannot be misread. Weighted F1 weights
  by support, so classes without cases drop out, as in sklearn.
- Cohen's kappa is undefined only when every label and every prediction is the same class.
- Intervals: Wilson for accuracy (and, by default, for the per-class proportions precision /
  recall / specificity, as the binary report does); the patient-level bootstrap of
  ``intervals.PatientResampler`` for everything else. ``proportion_method="bootstrap"`` puts the
  proportions on the bootstrap too, which respects several images per patient.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation._csv import write_rows
from pneumocxr.evaluation.intervals import (
    DEFAULT_N_BOOT,
    MetricEstimate,
    PatientResampler,
    Seed,
    _check_confidence,
    _percentile_estimate,
    as_generator,
    wilson_interval,
)
from pneumocxr.evaluation.metrics import roc_auc

logger = logging.getLogger(__name__)

OVERALL_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_f1",
    "macro_auc",
    "cohen_kappa",
)
PER_CLASS_METRICS: tuple[str, ...] = ("precision", "recall", "specificity", "f1", "auc_ovr")
MULTICLASS_LABELS: dict[str, str] = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy (mean recall)",
    "macro_precision": "Macro precision",
    "macro_recall": "Macro recall",
    "macro_f1": "Macro F1",
    "weighted_f1": "Support-weighted F1",
    "macro_auc": "Macro ROC AUC (one-vs-rest)",
    "cohen_kappa": "Cohen's kappa",
    "precision": "Precision (PPV)",
    "recall": "Recall (sensitivity)",
    "specificity": "Specificity",
    "f1": "F1",
    "auc_ovr": "ROC AUC (one-vs-rest)",
}
ROW_SUM_TOLERANCE = 1e-3  # a CSV round trip with 4-6 decimals stays well inside this
_MACRO_OF = {"balanced_accuracy": "recall", "macro_precision": "precision", "macro_recall": "recall"}
_MACRO_OF |= {"macro_f1": "f1", "macro_auc": "auc_ovr"}


def check_multiclass_inputs(
    y_true: Sequence | np.ndarray, probs: Sequence | np.ndarray, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Validated copies: labels int64 in 0..k-1, probabilities float64 (n, k) rows summing to 1, names."""
    names = tuple(str(c) for c in class_names)
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(
            f"class_names={list(names)}: give at least two distinct class names, one per column"
        )
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=float)
    if y.ndim != 1 or p.ndim != 2 or len(y) != len(p):
        raise DatasetError(
            f"need labels of shape (n,) and probabilities of shape (n, k); got {y.shape} and {p.shape}"
        )
    if len(y) == 0:
        raise DatasetError("no images to evaluate: the label and probability arrays are empty")
    if p.shape[1] != len(names):
        raise DatasetError(
            f"probabilities have {p.shape[1]} columns but {len(names)} class names were given {list(names)}"
        )
    if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise DatasetError(f"labels must be integer class indices 0…{len(names) - 1}; got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= len(names):
        bad = np.unique(y[(y < 0) | (y >= len(names))])[:10].tolist()
        raise DatasetError(f"labels must be 0…{len(names) - 1} ({', '.join(names)}); found {bad}")
    bad_p = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad_p.any():
        raise DatasetError(
            f"{int(bad_p.sum())} probabilities are NaN or outside [0, 1] (first: {p[bad_p][0]!r}); "
            "pass softmax probabilities, not logits"
        )
    off = np.abs(p.sum(axis=1) - 1.0) > ROW_SUM_TOLERANCE
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise DatasetError(
            f"{int(off.sum())} probability rows do not sum to 1 (row {i} sums to {p[i].sum():.6g}); "
            "pass softmax probabilities over all classes, not logits or per-class sigmoids"
        )
    return y, p, names


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=np.asarray(den) != 0)
    return out


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def _per_class_values(cm: np.ndarray, y: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest counts -> one array of k values per name in PER_CLASS_METRICS (NaN where undefined)."""
    tp = np.diag(cm).astype(float)
    row, col = cm.sum(axis=1), cm.sum(axis=0)  # true and predicted counts per class
    n = cm.sum()
    return {
        "precision": _div(tp, col),
        "recall": _div(tp, row),
        "specificity": _div(n - row - col + tp, n - row),
        "f1": _div(2 * tp, row + col),
        "auc_ovr": np.array([roc_auc((y == c).astype(np.int64), probs[:, c]) for c in range(cm.shape[0])]),
    }


def _overall_values(cm: np.ndarray, per: dict[str, np.ndarray]) -> dict[str, float]:
    row, col = cm.sum(axis=1), cm.sum(axis=0)
    n = int(cm.sum())
    out = {"accuracy": float(np.trace(cm) / n)}
    out |= {name: float(np.mean(per[of])) for name, of in _MACRO_OF.items()}  # NaN propagates on purpose
    out["weighted_f1"] = float(np.sum(np.where(row > 0, per["f1"], 0.0) * row) / n)
    chance = int(np.dot(row.astype(np.int64), col.astype(np.int64)))  # n² · expected agreement
    den = n * n - chance  # integers: exact, so "one class everywhere" is caught without a tolerance
    out["cohen_kappa"] = (n * int(np.trace(cm)) - chance) / den if den else float("nan")
    return out


def _metric_vector(y: np.ndarray, probs: np.ndarray, k: int) -> np.ndarray:
    """Overall metrics then per-class metrics (metric-major), NaN where undefined: the bootstrap's unit."""
    cm = _confusion(y, probs.argmax(axis=1), k)
    per = _per_class_values(cm, y, probs)
    overall = _overall_values(cm, per)
    return np.concatenate([[overall[m] for m in OVERALL_METRICS], *(per[m] for m in PER_CLASS_METRICS)])


def _class_reasons(cm: np.ndarray, names: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """{metric: {class: why it is undefined}} for the per-class metrics."""
    row, col, n = cm.sum(axis=1), cm.sum(axis=0), int(cm.sum())
    why: dict[str, dict[str, str]] = {m: {} for m in PER_CLASS_METRICS}
    for c, name in enumerate(names):
        if col[c] == 0:
            why["precision"][name] = f"{name} never predicted (no image has it as its argmax)"
        if row[c] == 0:
            why["recall"][name] = why["auc_ovr"][name] = f"no true {name} cases"
        if row[c] == n:
            why["specificity"][name] = why["auc_ovr"][name] = f"every case is {name}: no other class"
        if row[c] + col[c] == 0:
            why["f1"][name] = f"no true {name} cases and {name} never predicted"
    return why


def _overall_reasons(cm: np.ndarray, class_why: dict[str, dict[str, str]]) -> dict[str, str]:
    why = {}
    for name, of in _MACRO_OF.items():
        if class_why[of]:
            why[name] = f"{of} undefined for " + "; ".join(f"{c} ({r})" for c, r in class_why[of].items())
    if int(cm.sum()) ** 2 == int(np.dot(cm.sum(axis=1), cm.sum(axis=0))):
        why["cohen_kappa"] = "every label and every prediction is the same class (chance agreement is 1)"
    return why


def _bootstrap(
    y: np.ndarray, probs: np.ndarray, resampler: PatientResampler, n_boot: int, seed: Seed
) -> tuple[np.ndarray, int]:
    """(n_boot, len(metric vector)) resampled metrics and the count of resamples missing a class."""
    if int(n_boot) != n_boot or n_boot < 1:
        raise ConfigError(f"n_boot={n_boot!r}: use a positive number of bootstrap resamples (default 2000)")
    rng = as_generator(seed)
    k = probs.shape[1]
    out = np.empty((int(n_boot), len(OVERALL_METRICS) + k * len(PER_CLASS_METRICS)))
    n_missing = 0
    for b in range(int(n_boot)):
        idx = resampler.sample(rng)
        n_missing += int(len(np.unique(y[idx])) < k)
        out[b] = _metric_vector(y[idx], probs[idx], k)
    return out, n_missing


def _json_ready(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


@dataclass(frozen=True, eq=False)  # eq=False: an ndarray field makes generated == ambiguous
class MulticlassMetrics:
    """Everything ``multiclass_metrics`` measured; values are ``MetricEstimate`` (value, low, high …)."""

    class_names: tuple[str, ...]
    n: int
    confusion: np.ndarray  # (k, k) int64, rows = true class, columns = predicted; read-only
    overall: dict[str, MetricEstimate]  # OVERALL_METRICS
    per_class: dict[str, dict[str, MetricEstimate]]  # class -> PER_CLASS_METRICS
    support: dict[str, int]  # true cases per class
    predicted: dict[str, int]  # predictions per class
    info: dict = field(default_factory=dict)  # confidence, n_boot, n_patients, methods, n_missing_class

    def classification_report(self, digits: int = 4) -> str:
        """sklearn-style table (plus specificity and one-vs-rest AUC), then every overall metric's CI."""
        cols = ("precision", "recall", "specificity", "f1-score", "auc", "support")
        width = max(len("weighted avg"), *(len(c) for c in self.class_names))
        head = f"{'':>{width}} " + " ".join(f"{c:>11}" for c in cols)

        def line(label: str, values: Sequence[float | None], support: int) -> str:
            cells = [" " * 11 if v is None else f"{v:>11.{digits}f}" for v in values]
            return f"{label:>{width}} " + " ".join(cells) + f" {support:>11}"

        body = [head, ""]
        table = np.array([[self.per_class[c][m].value for m in PER_CLASS_METRICS] for c in self.class_names])
        for c, vals in zip(self.class_names, table):
            body.append(line(c, list(vals), self.support[c]))
        sup = np.array([self.support[c] for c in self.class_names])
        ov = self.overall
        body += ["", line("accuracy", [None, None, None, ov["accuracy"].value, None], self.n)]
        macro = [ov["macro_precision"].value, ov["macro_recall"].value, float(np.mean(table[:, 2]))]
        body.append(line("macro avg", [*macro, ov["macro_f1"].value, ov["macro_auc"].value], self.n))
        weighted = np.sum(np.where(sup[:, None] > 0, table, 0.0) * sup[:, None], axis=0) / self.n
        body.append(line("weighted avg", list(weighted), self.n))
        level = round(100 * self.info.get("confidence", 0.95))
        body += ["", f"{level}% intervals:"]
        for name, e in self.overall.items():
            ci = f"[{e.low:.{digits}f}, {e.high:.{digits}f}]"
            note = f"  ({e.note})" if e.note else ""
            body.append(f"  {MULTICLASS_LABELS[name]:<32} {e.value:.{digits}f}  {ci}  {e.method}{note}")
        notes = [
            f"  {c} {m}: {e.note}" for c in self.class_names for m, e in self.per_class[c].items() if e.note
        ]
        return "\n".join(body + (["", "per-class notes:", *notes] if notes else [])) + "\n"

    def to_dict(self) -> dict:
        """Plain Python (NaN -> None, so ``json.dumps(..., allow_nan=False)`` works); notes say why."""

        def est(e: MetricEstimate) -> dict:
            d = asdict(e)
            return {
                **d,
                "value": _json_ready(e.value),
                "low": _json_ready(e.low),
                "high": _json_ready(e.high),
            }

        return {
            "class_names": list(self.class_names),
            "n": int(self.n),
            "confusion": self.confusion.tolist(),
            "support": dict(self.support),
            "predicted": dict(self.predicted),
            "overall": {k: est(e) for k, e in self.overall.items()},
            "per_class": {c: {k: est(e) for k, e in d.items()} for c, d in self.per_class.items()},
            "info": dict(self.info),
        }

    def rows(self, **extra: object) -> list[dict]:
        """Flat rows for a CSV: one per class, then ``class="overall"`` (``extra`` columns go first)."""

        def flat(estimates: dict[str, MetricEstimate]) -> dict:
            cells: dict = {}
            for k, e in estimates.items():
                cells |= {k: e.value, f"{k}_low": e.low, f"{k}_high": e.high, f"{k}_note": e.note}
            return cells

        out = [
            {**extra, "class": c, "support": self.support[c], "predicted": self.predicted[c], **flat(d)}
            for c, d in self.per_class.items()
        ]
        out.append(
            {**extra, "class": "overall", "support": self.n, "predicted": self.n, **flat(self.overall)}
        )
        return out

    def to_csv(self, path: str | Path, **extra: object) -> Path:
        return write_rows(path, self.rows(**extra))


def multiclass_metrics(
    y_true: Sequence | np.ndarray,
    probs: Sequence | np.ndarray,
    class_names: Sequence[str],
    *,
    groups: Sequence | np.ndarray | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: Seed = 0,
    confidence: float = 0.95,
    proportion_method: str = "wilson",
) -> MulticlassMetrics:
    """Confusion matrix, overall and per-class metrics with ``confidence`` intervals (module docstring).

    ``groups`` are patient ids, one per image: the bootstrap resamples whole patients. ``None`` treats
    every image as its own patient (an image-level bootstrap).
    """
    if proportion_method not in ("wilson", "bootstrap"):
        raise ConfigError(f"proportion_method={proportion_method!r}: use 'wilson' or 'bootstrap'")
    _check_confidence(confidence)
    y, p, names = check_multiclass_inputs(y_true, probs, class_names)
    k = len(names)
    resampler = PatientResampler(groups, len(y))
    cm = _confusion(y, p.argmax(axis=1), k)
    cm.setflags(write=False)
    point = _metric_vector(y, p, k)
    samples, n_missing = _bootstrap(y, p, resampler, n_boot, seed)
    boot = "image_bootstrap" if groups is None else "patient_bootstrap"
    class_why = _class_reasons(cm, names)
    overall_why = _overall_reasons(cm, class_why)
    tp, row, col, n = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0), len(y)
    wilson = {  # per-class (successes, total) for the Wilson interval
        "precision": (tp, col),
        "recall": (tp, row),
        "specificity": (n - row - col + tp, n - row),
    }

    def estimate(j: int, reason: str, counts: tuple[int, int] | None) -> MetricEstimate:
        if counts is not None:
            low, high = wilson_interval(int(counts[0]), int(counts[1]), confidence)
            return MetricEstimate(float(point[j]), low, high, "wilson", int(counts[1]), reason)
        return _percentile_estimate(float(point[j]), samples[:, j], confidence, boot, reason)

    use_wilson = proportion_method == "wilson"
    overall = {
        m: estimate(j, overall_why.get(m, ""), (int(np.trace(cm)), n) if use_wilson and j == 0 else None)
        for j, m in enumerate(OVERALL_METRICS)  # j == 0: accuracy, the one overall proportion
    }
    per_class: dict[str, dict[str, MetricEstimate]] = {name: {} for name in names}
    for i, m in enumerate(PER_CLASS_METRICS):
        for c, name in enumerate(names):
            counts = (wilson[m][0][c], wilson[m][1][c]) if use_wilson and m in wilson else None
            per_class[name][m] = estimate(
                len(OVERALL_METRICS) + i * k + c, class_why[m].get(name, ""), counts
            )
    if n_missing:
        logger.warning("%d of %d bootstrap resamples lacked at least one class", n_missing, n_boot)
    info = {
        "confidence": confidence,
        "n_boot": int(n_boot),
        "n_patients": resampler.n_patients,
        "bootstrap": boot,
        "proportion_method": proportion_method,
        "n_missing_class": n_missing,
    }
    support = {name: int(row[c]) for c, name in enumerate(names)}
    predicted = {name: int(col[c]) for c, name in enumerate(names)}
    return MulticlassMetrics(names, n, cm, overall, per_class, support, predicted, info)
