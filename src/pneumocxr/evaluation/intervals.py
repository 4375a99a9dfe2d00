"""95 % confidence intervals: Wilson for proportions, a patient-level (cluster) bootstrap for the rest.

Why patient-level: the Kermany images are clustered, several X-rays per child. Resampling images
as if independent pretends to have more information than there is and gives intervals that are
too narrow. The bootstrap here resamples *patients* with replacement and takes all of each drawn
patient's images (Field & Welsh 2007, the "cluster bootstrap"); the percentile interval of the
resampled metric is reported.

Reproducibility: randomness comes only from the ``np.random.Generator`` passed in (or built from
an integer seed); each resample draws exactly ``n_patients`` integers from it, in order.

Degenerate resamples: a resample with only one class cannot define AUC, balanced accuracy or
MCC. Every metric is computed on every resample and NaN where undefined; each metric's interval
uses only the resamples that define it (``n_valid``), and the number of one-class resamples is
reported as ``n_degenerate``. When fewer than ``MIN_VALID`` resamples define a metric its
interval is NaN with a note.

Wilson intervals (accuracy, sensitivity, specificity, PPV, NPV) are the default for proportions,
as in diagnostic-accuracy reporting; they treat images as independent, so with several images
per patient they are somewhat narrow — pass ``proportion_method="bootstrap"`` to get
patient-level intervals for those too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import norm

from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation._csv import write_rows
from pneumocxr.evaluation.calibration import DEFAULT_N_BINS, expected_calibration_error
from pneumocxr.evaluation.metrics import (
    METRIC_LABELS,
    METRIC_NAMES,
    average_precision,
    binary_metrics,
    check_binary_inputs,
    confusion_counts,
    metrics_from_counts,
    roc_auc,
)

logger = logging.getLogger(__name__)

DEFAULT_N_BOOT = 2000
MIN_VALID = 10  # fewer defined resamples than this: no interval, only a note
# Proportion metrics: (numerator counts, denominator counts) for the Wilson interval.
PROPORTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "accuracy": (("tp", "tn"), ("tp", "tn", "fp", "fn")),
    "sensitivity": (("tp",), ("tp", "fn")),
    "specificity": (("tn",), ("tn", "fp")),
    "ppv": (("tp",), ("tp", "fp")),
    "npv": (("tn",), ("tn", "fn")),
}

Seed = int | np.random.Generator


def as_generator(seed: Seed) -> np.random.Generator:
    """The caller's Generator as is, or a fresh one from an integer seed (never global state)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise ConfigError(f"seed={seed!r}: pass an integer or a numpy.random.Generator")


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when total is 0.

    Better than the Wald interval near 0 and 1, where sensitivities live (Brown, Cai & DasGupta 2001).
    """
    _check_confidence(confidence)
    if total == 0:
        return float("nan"), float("nan")
    if not 0 <= successes <= total:
        raise DatasetError(f"wilson_interval: successes={successes} must be between 0 and total={total}")
    z = float(norm.ppf(0.5 + confidence / 2.0))
    p = successes / total
    denom = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence={confidence!r}: use a level strictly between 0 and 1 (e.g. 0.95)")


class PatientResampler:
    """Draws bootstrap samples of image indices, whole patients at a time."""

    def __init__(self, patient_ids: Sequence | np.ndarray | None, n_images: int):
        if patient_ids is None:
            codes = np.arange(n_images)  # no ids: every image is its own cluster
        else:
            ids = np.asarray(patient_ids, dtype=object).astype(str)
            if ids.shape != (n_images,):
                raise DatasetError(f"patient_ids has shape {ids.shape}; need one id per image ({n_images})")
            codes = np.unique(ids, return_inverse=True)[1].ravel()
        self.order = np.argsort(codes, kind="stable")  # images grouped by patient
        self.counts = np.bincount(codes)
        self.starts = np.cumsum(self.counts) - self.counts
        self.n_patients = len(self.counts)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Indices of all images of ``n_patients`` patients drawn with replacement."""
        drawn = rng.integers(0, self.n_patients, self.n_patients)
        c = self.counts[drawn]
        within = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)  # 0..count-1 inside each patient
        return self.order[np.repeat(self.starts[drawn], c) + within]


def metric_vector(y: np.ndarray, p: np.ndarray, threshold: float, n_bins: int = DEFAULT_N_BINS) -> np.ndarray:
    """All ``METRIC_NAMES`` in order, NaN where undefined (fast path for the bootstrap)."""
    values, _ = metrics_from_counts(**confusion_counts(y, p, threshold))
    values["roc_auc"] = roc_auc(y, p)
    values["pr_auc"] = average_precision(y, p)
    values["brier"] = float(np.mean((p - y) ** 2))
    values["ece"] = expected_calibration_error(y, p, n_bins)
    return np.array([values[k] for k in METRIC_NAMES], dtype=float)


def bootstrap_samples(
    y: np.ndarray,
    p: np.ndarray,
    patient_ids: Sequence | np.ndarray | None,
    threshold: float,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: Seed = 0,
    n_bins: int = DEFAULT_N_BINS,
) -> tuple[np.ndarray, int]:
    """(n_boot, len(METRIC_NAMES)) resampled metrics (NaN where undefined) and the one-class count."""
    if int(n_boot) != n_boot or n_boot < 1:
        raise ConfigError(f"n_boot={n_boot!r}: use a positive number of bootstrap resamples (default 2000)")
    rng = as_generator(seed)
    resampler = PatientResampler(patient_ids, len(y))
    out = np.empty((int(n_boot), len(METRIC_NAMES)))
    n_degenerate = 0
    for b in range(int(n_boot)):
        idx = resampler.sample(rng)
        yb = y[idx]
        n_degenerate += int(yb.min() == yb.max())
        out[b] = metric_vector(yb, p[idx], threshold, n_bins)
    return out, n_degenerate


@dataclass(frozen=True)
class MetricEstimate:
    """A point estimate with its interval and how it was obtained."""

    value: float
    low: float
    high: float
    method: str  # "wilson", "patient_bootstrap" or "image_bootstrap"
    n_valid: int  # resamples that defined the metric (bootstrap) or the denominator (Wilson)
    note: str = ""  # why the value or interval is NaN, or a caveat


class MetricsCI(Mapping):
    """``name -> (value, low, high)`` for every metric, plus how each was computed (``estimates``)."""

    def __init__(self, estimates: dict[str, MetricEstimate], info: dict):
        self.estimates = estimates
        self.info = info  # counts, n, threshold, undefined, confidence, n_boot, n_degenerate, n_patients

    def __getitem__(self, name: str) -> tuple[float, float, float]:
        e = self.estimates[name]
        return e.value, e.low, e.high

    def __iter__(self) -> Iterator[str]:
        return iter(self.estimates)

    def __len__(self) -> int:
        return len(self.estimates)

    def rows(self, **extra: object) -> list[dict]:
        """Tidy table: one row per metric (``extra`` columns such as model/split go first)."""
        return [
            {**extra, "metric": k, "label": METRIC_LABELS[k], **asdict(e)} for k, e in self.estimates.items()
        ]

    def to_csv(self, path: str | Path, **extra: object) -> Path:
        return write_rows(path, self.rows(**extra))


def _percentile_estimate(
    value: float, column: np.ndarray, confidence: float, method: str, reason: str = ""
) -> MetricEstimate:
    """Percentile interval over the resamples that define the metric; ``reason`` if the value is NaN."""
    valid = column[~np.isnan(column)]
    nan = float("nan")
    if np.isnan(value):
        return MetricEstimate(value, nan, nan, method, len(valid), reason or "undefined on these data")
    if len(valid) < MIN_VALID:
        note = f"only {len(valid)} of {len(column)} resamples define it: no interval"
        return MetricEstimate(value, nan, nan, method, len(valid), note)
    alpha = 1.0 - confidence
    low, high = np.percentile(valid, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    skipped = len(column) - len(valid)
    note = f"{skipped} resamples skipped: metric undefined there (e.g. one class)" if skipped else ""
    return MetricEstimate(value, float(low), float(high), method, len(valid), note)


def metrics_with_ci(
    y_true: Sequence | np.ndarray,
    prob: Sequence | np.ndarray,
    patient_ids: Sequence | np.ndarray | None,
    threshold: float,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: Seed = 0,
    confidence: float = 0.95,
    n_bins: int = DEFAULT_N_BINS,
    proportion_method: str = "wilson",
) -> MetricsCI:
    """Every metric at ``threshold`` with a ``confidence`` interval (see module docstring).

    ``patient_ids=None`` treats every image as its own patient (an image-level bootstrap).
    """
    if proportion_method not in ("wilson", "bootstrap"):
        raise ConfigError(f"proportion_method={proportion_method!r}: use 'wilson' or 'bootstrap'")
    _check_confidence(confidence)
    y, p = check_binary_inputs(y_true, prob)
    point = binary_metrics(y, p, threshold, n_bins=n_bins)
    samples, n_degenerate = bootstrap_samples(
        y, p, patient_ids, point["threshold"], n_boot=n_boot, seed=seed, n_bins=n_bins
    )
    boot_method = "image_bootstrap" if patient_ids is None else "patient_bootstrap"
    estimates: dict[str, MetricEstimate] = {}
    for j, name in enumerate(METRIC_NAMES):
        if name in PROPORTIONS and proportion_method == "wilson":
            num, den = (sum(point[c] for c in cols) for cols in PROPORTIONS[name])
            low, high = wilson_interval(num, den, confidence)
            note = point["undefined"].get(name, "")
            estimates[name] = MetricEstimate(point[name], low, high, "wilson", den, note)
        else:
            reason = point["undefined"].get(name, "")
            estimates[name] = _percentile_estimate(
                point[name], samples[:, j], confidence, boot_method, reason
            )
    if n_degenerate:
        logger.warning("%d of %d bootstrap resamples had only one class", n_degenerate, n_boot)
    info = {
        **{k: point[k] for k in ("tp", "fp", "tn", "fn", "n", "n_positive", "threshold", "undefined")},
        "confidence": confidence,
        "n_boot": int(n_boot),
        "n_degenerate": n_degenerate,
        "n_patients": PatientResampler(patient_ids, len(y)).n_patients,
    }
    return MetricsCI(estimates, info)


def bootstrap_roc_band(
    y_true: Sequence | np.ndarray,
    prob: Sequence | np.ndarray,
    patient_ids: Sequence | np.ndarray | None = None,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: Seed = 0,
    confidence: float = 0.95,
    grid_size: int = 101,
) -> dict[str, np.ndarray]:
    """Pointwise percentile band of the ROC curve (TPR at fixed FPR, "vertical averaging").

    Returns ``fpr`` (the grid), ``tpr_low``, ``tpr_median``, ``tpr_high`` and the AUC's percentile
    interval ``auc_ci`` from the same resamples; one-class resamples are skipped.
    """
    _check_confidence(confidence)
    y, p = check_binary_inputs(y_true, prob)
    rng = as_generator(seed)
    resampler = PatientResampler(patient_ids, len(y))
    grid = np.linspace(0.0, 1.0, grid_size)
    curves, aucs = [], []
    for _ in range(int(n_boot)):
        idx = resampler.sample(rng)
        yb, pb = y[idx], p[idx]
        if yb.min() == yb.max():
            continue
        fpr, tpr = roc_points(yb, pb)
        curves.append(np.interp(grid, fpr, tpr))  # fpr non-decreasing: follows the drawn curve
        aucs.append(float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)))  # trapezoids = Mann-Whitney
    nan = np.full(grid_size, np.nan)
    if len(curves) < MIN_VALID:
        return {"fpr": grid, "tpr_low": nan, "tpr_median": nan, "tpr_high": nan, "auc_ci": (np.nan, np.nan)}
    q = [100 * (1 - confidence) / 2, 50, 100 * (1 + confidence) / 2]
    low, med, high = np.percentile(np.array(curves), q, axis=0)
    auc_ci = tuple(float(v) for v in np.percentile(aucs, [q[0], q[2]]))
    return {"fpr": grid, "tpr_low": low, "tpr_median": med, "tpr_high": high, "auc_ci": auc_ci}


def roc_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical ROC vertices (fpr, tpr), (0, 0) to (1, 1), one per distinct score; needs both classes."""
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]
    tps = np.cumsum(ys)[last]
    fps = last + 1 - tps
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]
