"""PPV and NPV at a user's prevalence, with 95 % intervals from a patient-level bootstrap.

A test split's PPV/NPV carry that split's prevalence (Kermany test: 62 % PNEUMONIA; a screening
clinic may see 5-15 %). Sensitivity and specificity do not depend on prevalence, so the PPV/NPV a
site with prevalence P would see follow from them by Bayes' theorem (``metrics.predictive_values``).

Intervals: BOOTSTRAPPED, not propagated from the Wilson limits of sensitivity and specificity.
Substituting both lower (upper) Wilson limits has no stated joint coverage, and Wilson treats
images as independent when children have several films. Here each resample draws whole patients
(``intervals.PatientResampler``), computes its sensitivity and specificity and turns them into
PPV/NPV at P; the percentile interval over resamples is reported. With the same seed and
``n_boot`` the resamples are exactly those ``metrics_with_ci`` draws for the AUC interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from pneumocxr.errors import ConfigError
from pneumocxr.evaluation.intervals import (
    DEFAULT_N_BOOT,
    MetricEstimate,
    PatientResampler,
    Seed,
    _check_confidence,
    _percentile_estimate,
    as_generator,
)
from pneumocxr.evaluation.metrics import (
    check_binary_inputs,
    check_prevalence,
    check_threshold,
    predictive_values,
)

METHOD = "Bayes from sensitivity/specificity; {unit} bootstrap percentile interval"


@dataclass(frozen=True)
class PrevalenceAdjusted:
    """PPV and NPV that a population with ``prevalence`` would see at ``threshold``."""

    prevalence: float
    threshold: float
    sensitivity: float  # on the evaluated images (what the PPV/NPV are computed from)
    specificity: float
    ppv: MetricEstimate
    npv: MetricEstimate
    method: str
    n_boot: int

    def to_dict(self) -> dict:
        return asdict(self)


def _sens_spec(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    pos, neg = y == 1, y == 0
    sens = float(np.mean(pred[pos])) if pos.any() else float("nan")
    spec = float(np.mean(~pred[neg])) if neg.any() else float("nan")
    return sens, spec


def prevalence_adjusted(
    y_true: Sequence | np.ndarray,
    prob: Sequence | np.ndarray,
    patient_ids: Sequence | np.ndarray | None,
    threshold: float,
    prevalence: float,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: Seed = 0,
    confidence: float = 0.95,
) -> PrevalenceAdjusted:
    """PPV/NPV at ``prevalence`` with bootstrap intervals (module docstring); ``patient_ids=None``
    resamples single images."""
    prev = check_prevalence(prevalence)
    _check_confidence(confidence)
    if int(n_boot) != n_boot or n_boot < 1:
        raise ConfigError(f"n_boot={n_boot!r}: use a positive number of bootstrap resamples (default 2000)")
    y, p = check_binary_inputs(y_true, prob)
    t = check_threshold(threshold)
    sens, spec = _sens_spec(y, p >= t)
    ppv, npv = (float(v) for v in predictive_values(sens, spec, prev))
    rng = as_generator(seed)
    resampler = PatientResampler(patient_ids, len(y))
    resampled = np.empty((int(n_boot), 2))
    for b in range(int(n_boot)):
        idx = resampler.sample(rng)
        resampled[b] = _sens_spec(y[idx], p[idx] >= t)
    ppv_b, npv_b = predictive_values(resampled[:, 0], resampled[:, 1], prev)
    unit = "image" if patient_ids is None else "patient"
    kind = f"{unit}_bootstrap"
    why = "" if np.isfinite(sens) and np.isfinite(spec) else "needs both classes among the evaluated images"
    return PrevalenceAdjusted(
        prevalence=prev,
        threshold=t,
        sensitivity=sens,
        specificity=spec,
        ppv=_percentile_estimate(ppv, ppv_b, confidence, kind, why or "no positive predictions possible"),
        npv=_percentile_estimate(npv, npv_b, confidence, kind, why or "no negative predictions possible"),
        method=METHOD.format(unit=unit),
        n_boot=int(n_boot),
    )
