"""Split-conformal prediction sets for the binary NORMAL/PNEUMONIA task.

Why: a probability says how sure the model is on average; a conformal set comes with a
guarantee. Calibrated on n held-out (validation) images, the set contains the true class for at
least 1 − α of new images from the same distribution (Vovk et al. 2005; Angelopoulos & Bates,
"A Gentle Introduction to Conformal Prediction", 2021). In the binary case a set is {NORMAL},
{PNEUMONIA}, both (the model cannot decide at this coverage) or empty (no class is plausible). LAC
returns empty sets whenever the coverage target 1 − α is below the model's accuracy (q̂ < 0.5): on
real data at 95 % a ~97 %-accurate ensemble gave 2.3 % empty and no two-class sets. For a clinician
both mean "refer": ``share_uncertain_refer`` (the referral rate the guarantee costs) counts EMPTY and
two-class sets; ``share_empty`` and ``share_two_class`` report the two kinds separately.

Scores (lower = the class fits the image better), on class probabilities π = (1 − p, p) with p the
CALIBRATED P(PNEUMONIA):

- ``"lac"`` (least ambiguous set-valued classifier, Sadinle et al. 2019): s(x, y) = 1 − π_y; the
  set is {y : π_y ≥ 1 − q̂}. Smallest sets on average; never empty when q̂ ≥ 0.5, and empty for the
  images with max π_y < 1 − q̂ when q̂ < 0.5 (a coverage target below the model's accuracy).
- ``"aps"`` (adaptive prediction sets, Romano et al. 2020): s(x, y) = mass of the classes ranked
  above y plus π_y. Deterministic by default: the top class is always in the set and the other
  joins when π_top < q̂ (coverage ≥ 1 − α, conservative). ``randomized=True`` draws U ~ U(0, 1)
  per image (s = mass above + U·π_y): exact coverage on average, but the same image can get
  different sets, so it needs an injected ``numpy.random.Generator``.

``class_conditional=True`` (Mondrian conformal) fits one q̂ per true class, so the guarantee holds
within NORMAL and within PNEUMONIA separately: with a 1:2.9 class ratio the marginal guarantee
alone can be met by covering pneumonia well and normals poorly.

The guarantee assumes the calibration and test images are exchangeable. Calibrating on the
validation split that also selected the model's epoch and threshold makes it slightly optimistic,
and a pediatric single-centre calibration set says nothing about adults or another hospital.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np

from pneumocxr.errors import ConfigError
from pneumocxr.evaluation.metrics import check_binary_inputs
from pneumocxr.labels import CLASS_NAMES

logger = logging.getLogger(__name__)

METHODS = ("lac", "aps")
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class ConformalCalibration:
    """A fitted split-conformal rule: ``q̂`` per class (equal unless class-conditional)."""

    method: str  # "lac" or "aps"
    alpha: float  # target miscoverage: sets hold the true class for >= 1 - alpha of images
    qhat: tuple[float, float]  # score threshold for NORMAL, PNEUMONIA (inf: too few calibration images)
    n_calibration: int  # images the quantile was taken over
    class_conditional: bool = False  # one quantile per true class (Mondrian)
    randomized: bool = False  # APS with a uniform draw per image

    def to_dict(self) -> dict:
        data = asdict(self)
        data["qhat"] = [None if math.isinf(q) else q for q in self.qhat]  # JSON has no inf
        return data


def check_alpha(alpha: float) -> float:
    """α must lie strictly between 0 and 1 (0.05 = 95 % coverage)."""
    value = float(alpha)
    if not 0.0 < value < 1.0:
        raise ConfigError(f"alpha={alpha!r}: use a miscoverage strictly between 0 and 1, e.g. 0.05 for 95 %")
    return value


def _check_method(method: str, randomized: bool, rng: np.random.Generator | None) -> None:
    if method not in METHODS:
        raise ConfigError(f"conformal method {method!r} is not known; use one of {', '.join(METHODS)}")
    if randomized and method != "aps":
        raise ConfigError("randomized=True applies to method 'aps' only; LAC sets are deterministic")
    if randomized and rng is None:
        raise ConfigError("randomized APS needs a numpy.random.Generator (rng=np.random.default_rng(seed))")


def class_scores(
    prob: np.ndarray, method: str = "lac", *, randomized: bool = False, rng: np.random.Generator | None = None
) -> np.ndarray:
    """(N, 2) nonconformity score of each class for each image (column 0 NORMAL, 1 PNEUMONIA)."""
    _check_method(method, randomized, rng)
    p = np.asarray(prob, dtype=np.float64).reshape(-1)
    pi = np.stack([1.0 - p, p], axis=1)  # (N, 2) class probabilities
    if method == "lac":
        return 1.0 - pi
    top = (p >= 0.5).astype(np.int64)  # ties go to PNEUMONIA (either order is valid)
    rows = np.arange(len(p))
    u = rng.uniform(size=len(p)) if randomized else np.ones(len(p))  # one draw per image, both classes
    scores = np.empty_like(pi)
    scores[rows, top] = u * pi[rows, top]
    scores[rows, 1 - top] = pi[rows, top] + u * pi[rows, 1 - top]
    return scores


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The ⌈(n + 1)(1 − α)⌉-th smallest score: the finite-sample-valid split-conformal threshold.

    ``inf`` (every class in every set) when n is too small for that coverage, with a warning.
    """
    alpha = check_alpha(alpha)
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    rank = math.ceil((len(s) + 1) * (1.0 - alpha))
    if rank > len(s):
        logger.warning(
            "%d calibration scores cannot certify %.1f %% coverage (need at least %d): sets hold every class",
            len(s),
            100 * (1 - alpha),
            math.ceil(1.0 / alpha) - 1,
        )
        return math.inf
    return float(s[rank - 1])


def calibrate(
    y_cal: np.ndarray,
    p_cal: np.ndarray,
    alpha: float = DEFAULT_ALPHA,
    *,
    method: str = "lac",
    class_conditional: bool = False,
    randomized: bool = False,
    rng: np.random.Generator | None = None,
) -> ConformalCalibration:
    """Fit q̂ on calibration labels and calibrated P(PNEUMONIA) (the validation split, never test)."""
    y, p = check_binary_inputs(y_cal, p_cal)
    alpha = check_alpha(alpha)
    scores = class_scores(p, method, randomized=randomized, rng=rng)[np.arange(len(y)), y]  # true class
    if class_conditional:
        qhat = tuple(
            conformal_quantile(scores[y == c], alpha) if (y == c).any() else math.inf for c in (0, 1)
        )
    else:
        q = conformal_quantile(scores, alpha)
        qhat = (q, q)
    return ConformalCalibration(method, alpha, qhat, len(y), class_conditional, randomized)  # type: ignore[arg-type]


def prediction_sets(
    prob: np.ndarray, calibration: ConformalCalibration, *, rng: np.random.Generator | None = None
) -> np.ndarray:
    """(N, 2) bool: whether NORMAL / PNEUMONIA is in each image's set.

    LAC and randomized APS keep the classes whose score is <= q̂ (randomized APS may return an empty
    set, as it should). Deterministic APS keeps a class when the mass ranked above it is < q̂, i.e. it
    includes the class that crosses q̂: the top class is always in, and coverage stays >= 1 − α.
    """
    qhat = np.asarray(calibration.qhat, dtype=np.float64)[None, :]  # (1, 2)
    scores = class_scores(prob, calibration.method, randomized=calibration.randomized, rng=rng)
    if calibration.method == "aps" and not calibration.randomized:
        p = np.asarray(prob, dtype=np.float64).reshape(-1)
        top = (p >= 0.5)[:, None]  # (N, 1), as in class_scores
        p_top = np.maximum(p, 1.0 - p)[:, None]
        is_top = np.concatenate([~top, top], axis=1)  # (N, 2): column 0 NORMAL, 1 PNEUMONIA
        mass_above = np.where(is_top, 0.0, p_top)  # (N, 2): probability of the classes ranked above
        return mass_above < qhat
    return scores <= qhat


def set_labels(sets: np.ndarray) -> list[str]:
    """Each set as text: "NORMAL", "PNEUMONIA", "NORMAL|PNEUMONIA" or "" (empty); the last two: refer."""
    return ["|".join(name for name, keep in zip(CLASS_NAMES, row) if keep) for row in np.asarray(sets)]


def set_summary(sets: np.ndarray, y: np.ndarray | None = None) -> dict:
    """Shares of each set kind, mean set size and (with labels) empirical coverage, overall and per class.

    ``share_uncertain_refer`` = every set that is not one class: ``share_two_class`` + ``share_empty``
    (module docstring: an empty set is a referral too, not a decision).
    """
    sets = np.asarray(sets, dtype=bool)
    n = len(sets)
    size = sets.sum(axis=1)
    summary: dict = {
        "n": n,
        "mean_set_size": float(size.mean()) if n else math.nan,
        "share_uncertain_refer": float((size != 1).mean()) if n else math.nan,  # empty or two-class
        "share_two_class": float((size == 2).mean()) if n else math.nan,
        "share_empty": float((size == 0).mean()) if n else math.nan,
        "share_normal_only": float((sets[:, 0] & ~sets[:, 1]).mean()) if n else math.nan,
        "share_pneumonia_only": float((sets[:, 1] & ~sets[:, 0]).mean()) if n else math.nan,
    }
    if y is not None:
        y = np.asarray(y, dtype=np.int64)
        covered = sets[np.arange(n), y] if n else np.zeros(0, dtype=bool)
        summary["coverage"] = float(covered.mean()) if n else math.nan
        for c, name in enumerate(CLASS_NAMES):
            mask = y == c
            summary[f"coverage_{name.lower()}"] = float(covered[mask].mean()) if mask.any() else math.nan
        # Accepted = a single class: how often is that class right? (what a "no referral" decision buys)
        single = size == 1
        decided = sets[single].argmax(axis=1) if single.any() else np.zeros(0, dtype=np.int64)
        summary["singleton_accuracy"] = float((decided == y[single]).mean()) if single.any() else math.nan
    return summary


__all__ = [
    "DEFAULT_ALPHA",
    "METHODS",
    "ConformalCalibration",
    "calibrate",
    "check_alpha",
    "class_scores",
    "conformal_quantile",
    "prediction_sets",
    "set_labels",
    "set_summary",
]
