"""Choose the operating threshold on the VALIDATION split (never on test) and say what it buys there.

An image is positive when ``prob >= t``, so validation sensitivity and specificity only change at
observed scores: every threshold in the gap ``(s_next, s]`` between two consecutive distinct
validation scores gives the validation operating point of ``s``. The rules differ in which point
they pick and WHERE in its gap they put the cut.

Rules (``RULES`` are the ones a checkpoint stores; ``METHODS`` adds ``fixed``):

- ``"youden"``: the centre of the optimal interval of Youden's J = sensitivity + specificity − 1.
  The interval is the widest contiguous run of operating points whose J is within ``tolerance``
  of the maximum (one validation image: ``1 / min(n_pos, n_neg)``); the threshold is its centre in
  LOGIT space. Why not the first maximum: on a near-perfect validation ROC the optimum is a wide
  flat interval, and its lowest score (the old rule) sits right at the NORMAL films' upper edge; on
  another site's films NORMAL scores shift upward and that edge costs specificity first.
- ``"youden_edge"``: the old rule, kept for comparison: the highest threshold of maximal J, placed
  exactly ON that validation score.
- ``"target_sensitivity"``: the HIGHEST threshold whose validation sensitivity is ≥ the target
  (default 0.95), i.e. the most specific cut that still meets it, placed midway (logit) between the
  last qualifying score and the next score down.
- ``"bootstrap_median"``: the median over ``n_boot`` (default 200) patient-level bootstrap
  resamples of the validation split of the ``youden`` centre; images are resampled singly when no
  patient ids are given. Seeded; the 2.5–97.5 % range of the resampled thresholds is reported.
- ``"fixed"``: a given threshold (0.5 by default), reported with its validation sens/spec.

Why logit space for every midpoint: the decision is ``sigmoid(z / T) >= t``, i.e. ``z / T >=
logit(t)``. The centre of an interval in logit space stays the centre whatever the temperature
(dividing by T scales the interval about 0), a site shift moves logits roughly additively, and
float32 rounding of the logit z is an error in logit units. A probability midpoint between 0.02
and 0.98 is 0.5; the logit one respects that the scores are 3.9 logits apart on both sides.

Never on a score: a midpoint rule's threshold is at least ``min(MIN_MARGIN_LOGIT, half its
gap)`` (logit units) from every validation score; ``ThresholdChoice.margin_logit`` records the
actual distance. The network's float32 logits differ by ~1e-6 between batch sizes or float32 vs
float64 sigmoids, far below 0.01, so a validation image's decision cannot flip between a batch of
1 and a batch of 64 unless two validation scores lie within ~1e-5 logits of each other at the cut.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from pneumocxr.config import THRESHOLD_RULES
from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation.intervals import MIN_VALID, PatientResampler, Seed, as_generator
from pneumocxr.evaluation.metrics import check_binary_inputs, check_threshold

logger = logging.getLogger(__name__)

RULES: tuple[str, ...] = THRESHOLD_RULES  # what best.pt stores, every one
METHODS: tuple[str, ...] = (*RULES, "fixed")
# A screening tool starts at 95 % sensitivity: a missed pneumonia costs a sick child a delayed
# treatment, a false alarm costs a second read of a normal film.
DEFAULT_TARGET_SENSITIVITY = 0.95
DEFAULT_N_BOOT_THRESHOLD = 200  # enough for a stable median (its SE is ~1.25 SD / sqrt(200))
# Keep a midpoint threshold this far (logit units) from any validation score when its gap allows.
# 0.01 logit is ~1e4 times the float32 logit noise between batch sizes (~1e-6); at p = 0.5 it is
# 0.0025 in probability, well inside any gap that separates validation films in practice.
MIN_MARGIN_LOGIT = 0.01
_LOGIT_CLIP = 40.0  # |logit| bound for distances: a float64 probability of 1.0 is +inf otherwise


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold and what it achieved on the validation split."""

    threshold: float  # predict PNEUMONIA when probability >= threshold
    method: str  # one of METHODS
    sensitivity: float  # validation sensitivity at the threshold
    specificity: float  # validation specificity at the threshold
    target_sensitivity: float | None = None  # the target, for method "target_sensitivity"
    margin_logit: float | None = None  # logit distance from the threshold to the nearest validation score
    tolerance: float | None = None  # youden/bootstrap_median: J within this of the maximum is optimal
    # youden: the optimal interval's bounding scores (its threshold lies strictly inside);
    # bootstrap_median: the 2.5–97.5 % range of the resampled thresholds
    range_low: float | None = None
    range_high: float | None = None
    n_boot: int | None = None  # bootstrap_median: resamples drawn …
    n_valid_resamples: int | None = None  # … and those with both classes (the median is over these)
    bootstrap_unit: str | None = None  # bootstrap_median: "patient" or "image"

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


def _logit(p: np.ndarray | float) -> np.ndarray:
    """Logit, clipped to ±_LOGIT_CLIP so saturated probabilities (0.0, 1.0) stay finite."""
    q = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        z = np.log(q) - np.log1p(-q)
    return np.clip(z, -_LOGIT_CLIP, _LOGIT_CLIP)


def _expit(z: float) -> float:
    return float(1.0 / (1.0 + np.exp(-z)))


def gap_midpoint(low: float, high: float) -> float:
    """A threshold strictly between two scores ``low < high``: their midpoint in logit space, else
    (a saturated score) in probability space; ``high`` only when no float lies between them."""
    mid = _expit((float(_logit(low)) + float(_logit(high))) / 2.0)
    if not low < mid < high:
        mid = (low + high) / 2.0
    return mid if low < mid < high else high


def _gap(scores: np.ndarray, i: int) -> tuple[float, float]:
    """(next score down, score) of operating point ``i``; 0.0 stands below the lowest score."""
    return (float(scores[i + 1]) if i + 1 < len(scores) else 0.0), float(scores[i])


def _point_of(t: float, scores: np.ndarray) -> int:
    """The operating point a threshold gives: ``scores[i + 1] < t <= scores[i]`` (scores descending)."""
    return int(np.count_nonzero(scores >= t)) - 1


def clear_of_scores(t: float, scores: np.ndarray) -> float:
    """``t`` moved to the middle of its gap when it lies closer than ``min(MIN_MARGIN_LOGIT, half
    the gap)`` to a validation score (or on one); otherwise ``t`` unchanged. Same operating point."""
    i = _point_of(t, scores)
    if i < 0:  # above every score: nothing to clear
        return t
    low, high = _gap(scores, i)
    zl, zt, zh = (float(v) for v in _logit(np.array([low, t, high])))
    needed = min(MIN_MARGIN_LOGIT, (zh - zl) / 2.0)
    return gap_midpoint(low, high) if min(zh - zt, zt - zl) < needed else t


def _tolerance(y: np.ndarray) -> float:
    """J of one validation image of the smaller class, ``1 / min(n_pos, n_neg)``: moving one film
    across the cut changes J by 1/n of its class, and differences that small are noise (the
    sampling SD of J is several films' worth), so every point within one film of the best is optimal."""
    n_pos = int(y.sum())
    return 1.0 / min(n_pos, len(y) - n_pos)


def _youden_interval(y: np.ndarray, p: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """(centre, low, high, scores): the widest contiguous run of near-optimal points (ties: the
    highest) spans thresholds ``(low, high]``; centre = its logit midpoint, not yet cleared of scores.

    The interval never reaches below the lowest validation score: that happens only when J is within
    one image of 0 everywhere (a useless model, or a tiny bootstrap resample), and an open end there
    would drag the centre (and the bootstrap median) to an arbitrary depth."""
    scores, sens, spec = operating_points(y, p)
    j = sens + spec - 1.0
    ok = j >= j.max() - _tolerance(y) - 1e-12
    edges = np.diff(np.r_[0, ok.astype(np.int8), 0])
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1  # runs a..b inclusive

    def bounds(a: int, b: int) -> tuple[float, float]:
        return float(scores[min(b + 1, len(scores) - 1)]), float(scores[a])

    best, best_width = (0, 0), -1.0
    for a, b in zip(starts, stops):
        low, high = bounds(int(a), int(b))
        width = float(_logit(high) - _logit(low))
        if width > best_width + 1e-12:  # strictly wider: ties keep the higher run
            best, best_width = (int(a), int(b)), width
    low, high = bounds(*best)
    return gap_midpoint(low, high), low, high, scores


def _sens_spec(y: np.ndarray, p: np.ndarray, t: float) -> tuple[float, float]:
    """Validation sensitivity and specificity at ``prob >= t`` (as ``binary_metrics`` counts them)."""
    pred = p >= t
    return float(np.mean(pred[y == 1])), float(np.mean(~pred[y == 0]))


def _margin(p: np.ndarray, t: float) -> float:
    return float(np.min(np.abs(_logit(p) - _logit(t))))


def _choice(y: np.ndarray, p: np.ndarray, t: float, method: str, **extra) -> ThresholdChoice:
    sens, spec = _sens_spec(y, p, t)
    return ThresholdChoice(float(t), method, sens, spec, margin_logit=_margin(p, t), **extra)


def _bootstrap_median(
    y: np.ndarray, p: np.ndarray, patient_ids: Sequence | np.ndarray | None, n_boot: int, seed: Seed
) -> ThresholdChoice:
    if int(n_boot) != n_boot or n_boot < MIN_VALID:
        raise ConfigError(f"n_boot={n_boot!r}: use at least {MIN_VALID} resamples (default 200)")
    rng = as_generator(seed)
    resampler = PatientResampler(patient_ids, len(y))
    centres = []
    for _ in range(int(n_boot)):
        idx = resampler.sample(rng)
        yb = y[idx]
        if yb.min() != yb.max():  # a one-class resample has no J
            centres.append(float(_logit(_youden_interval(yb, p[idx])[0])))
    if len(centres) < MIN_VALID:
        raise DatasetError(
            f"bootstrap_median: only {len(centres)} of {n_boot} resamples hold both classes; the "
            "validation split is too small or too unbalanced to resample"
        )
    scores = operating_points(y, p)[0]
    t = clear_of_scores(_expit(float(np.median(centres))), scores)
    low, high = (_expit(v) for v in np.percentile(centres, [2.5, 97.5]))
    return _choice(
        y,
        p,
        t,
        "bootstrap_median",
        tolerance=_tolerance(y),
        range_low=low,
        range_high=high,
        n_boot=int(n_boot),
        n_valid_resamples=len(centres),
        bootstrap_unit="image" if patient_ids is None else "patient",
    )


def choose_threshold(
    y_val: Sequence | np.ndarray,
    prob_val: Sequence | np.ndarray,
    method: str = "youden",
    *,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    fixed: float = 0.5,
    patient_ids: Sequence | np.ndarray | None = None,
    n_boot: int = DEFAULT_N_BOOT_THRESHOLD,
    seed: Seed = 0,
) -> ThresholdChoice:
    """Pick the operating threshold on validation labels/probabilities (see module docstring).

    ``patient_ids``, ``n_boot`` and ``seed`` matter only to ``bootstrap_median``.
    """
    if method not in METHODS:
        raise ConfigError(f"threshold method {method!r} is not one of {', '.join(METHODS)}")
    y, p = check_binary_inputs(y_val, prob_val)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise DatasetError(
            f"cannot choose a threshold: the validation split has only one class ({n_pos} of {len(y)} "
            "positive); it needs both NORMAL and PNEUMONIA images"
        )
    if method == "fixed":
        choice = _choice(y, p, check_threshold(fixed), method)
    elif method == "youden":
        centre, low, high, scores = _youden_interval(y, p)
        t = clear_of_scores(centre, scores)
        choice = _choice(y, p, t, method, tolerance=_tolerance(y), range_low=low, range_high=high)
    elif method == "youden_edge":
        scores, sens, spec = operating_points(y, p)
        j = sens + spec - 1.0
        i = int(np.flatnonzero(j >= j.max() - 1e-12)[0])  # thresholds descend: first = highest
        choice = _choice(y, p, float(scores[i]), method)
    elif method == "target_sensitivity":
        target = float(target_sensitivity)
        if not 0.0 < target <= 1.0:
            raise ConfigError(f"target_sensitivity={target_sensitivity!r}: use a value in (0, 1], e.g. 0.95")
        scores, sens, _ = operating_points(y, p)
        i = int(np.flatnonzero(sens >= target - 1e-12)[0])  # sens non-decreasing as t falls
        choice = _choice(y, p, gap_midpoint(*_gap(scores, i)), method, target_sensitivity=target)
    else:
        choice = _bootstrap_median(y, p, patient_ids, n_boot, seed)
    logger.info(
        "threshold %.4f by %s: validation sensitivity %.3f, specificity %.3f",
        choice.threshold,
        method,
        choice.sensitivity,
        choice.specificity,
    )
    return choice


def all_rules(
    y_val: Sequence | np.ndarray,
    prob_val: Sequence | np.ndarray,
    patient_ids: Sequence | np.ndarray | None = None,
    *,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    n_boot: int = DEFAULT_N_BOOT_THRESHOLD,
    seed: Seed = 0,
) -> dict[str, ThresholdChoice]:
    """Every rule in ``RULES`` on the same validation predictions, in that order."""
    return {
        rule: choose_threshold(
            y_val,
            prob_val,
            rule,
            target_sensitivity=target_sensitivity,
            patient_ids=patient_ids,
            n_boot=n_boot,
            seed=seed,
        )
        for rule in RULES
    }
