"""Per-image uncertainty and selective prediction: which images should a model hand to a radiologist?

Scores (higher = less sure), each computed from saved predictions only:

- ``error_probability``: the calibrated probability that the thresholded decision is wrong,
  1 − p when PNEUMONIA is predicted (p >= t) and p otherwise. Needs calibrated p; with a
  threshold t ≠ 0.5 it is not symmetric around 0.5, which is the point.
- ``ensemble_spread``: the standard deviation of the members' calibrated probabilities (ensembles
  only): disagreement between models trained on different data or from different starts.

A risk–coverage curve (Geifman & El-Yaniv 2017) orders images from most to least certain and, for
each coverage c (the share of images the model decides; the rest are referred), gives the
accuracy on the decided ones. At c = 1 it is the ordinary accuracy at the threshold; a useful
score makes it rise as c falls. AURC (area under the selective-risk curve, lower is better) sums
it up. Ties in a score are decided together: the curve has one point per distinct score value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumocxr.errors import DatasetError
from pneumocxr.evaluation._csv import write_rows
from pneumocxr.evaluation.conformal import (
    ConformalCalibration,
    prediction_sets,
    set_labels,
    set_summary,
)
from pneumocxr.evaluation.metrics import check_binary_inputs, check_threshold

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RiskCoverage:
    """Selective accuracy at each coverage, decided from the most to the least certain image."""

    score: str  # name of the uncertainty score
    coverage: np.ndarray  # (K,) share of images decided, increasing, last = 1
    selective_accuracy: np.ndarray  # (K,) accuracy on the decided images
    uncertainty_cutoff: np.ndarray  # (K,) decide images with uncertainty <= this
    n: int

    @property
    def selective_risk(self) -> np.ndarray:
        return 1.0 - self.selective_accuracy

    @property
    def aurc(self) -> float:
        """Mean selective risk over the N coverages k/N (ties share their group's value)."""
        sizes = np.diff(np.r_[0, np.rint(self.coverage * self.n).astype(np.int64)])
        return float(np.sum(self.selective_risk * sizes) / self.n)

    def accuracy_at(self, coverage: float) -> float:
        """Selective accuracy at the largest curve point with coverage <= ``coverage`` (NaN if none)."""
        keep = self.coverage <= coverage + 1e-12
        return float(self.selective_accuracy[keep][-1]) if keep.any() else math.nan

    def rows(self) -> list[dict]:
        return [
            {
                "score": self.score,
                "coverage": c,
                "selective_accuracy": a,
                "selective_risk": 1.0 - a,
                "cutoff": u,
            }
            for c, a, u in zip(self.coverage, self.selective_accuracy, self.uncertainty_cutoff)
        ]


def error_probability(prob: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) calibrated probability that the decision ``prob >= threshold`` is wrong."""
    p = np.asarray(prob, dtype=np.float64).reshape(-1)
    t = check_threshold(threshold)
    return np.where(p >= t, 1.0 - p, p)


def ensemble_spread(member_probabilities: np.ndarray) -> np.ndarray:
    """(N,) population standard deviation over members of (M, N) calibrated probabilities."""
    probs = np.asarray(member_probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] < 1:
        raise DatasetError(f"member probabilities must be (members, images); got shape {probs.shape}")
    return probs.std(axis=0)


def risk_coverage(
    y_true: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    uncertainty: np.ndarray,
    score: str = "uncertainty",
) -> RiskCoverage:
    """The risk–coverage curve of deciding ``prob >= threshold`` on the least uncertain images first."""
    y, p = check_binary_inputs(y_true, prob)
    u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    if len(u) != len(y) or not np.all(np.isfinite(u)):
        raise DatasetError(f"uncertainty must be {len(y)} finite values, one per image; got {len(u)}")
    correct = ((p >= check_threshold(threshold)).astype(np.int64) == y).astype(np.float64)
    order = np.argsort(u, kind="mergesort")
    us, cs = u[order], correct[order]
    last = np.r_[np.flatnonzero(np.diff(us)), len(us) - 1]  # last index of each tie group
    decided = last + 1
    return RiskCoverage(
        score=score,
        coverage=decided / len(y),
        selective_accuracy=np.cumsum(cs)[last] / decided,
        uncertainty_cutoff=us[last],
        n=len(y),
    )


@dataclass(frozen=True)
class UncertaintyReport:
    """What ``uncertainty_report`` wrote and measured."""

    curves: dict[str, RiskCoverage]
    conformal: dict | None  # calibration + set summary on these images, or None without calibration
    summary: dict  # JSON-ready numbers for metrics.json
    files: dict[str, Path]


def uncertainty_report(
    out_dir: str | Path,
    y_true: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    *,
    ids: list[str] | None = None,
    member_probabilities: np.ndarray | None = None,
    calibration: ConformalCalibration | None = None,
    calibration_note: str = "",
    rng: np.random.Generator | None = None,
    title: str = "",
) -> UncertaintyReport:
    """Risk–coverage curves (plot + CSV), per-image uncertainty CSV and conformal set statistics.

    Writes ``risk_coverage.{png,csv}`` and ``uncertainty.csv`` (one row per image) into ``out_dir``.
    Without ``calibration`` there are no prediction sets (``conformal`` is None; the caller says why).
    """
    y, p = check_binary_inputs(y_true, prob)
    out = Path(out_dir)
    scores = {"error_probability": error_probability(p, threshold)}
    if member_probabilities is not None and np.asarray(member_probabilities).shape[0] > 1:
        scores["ensemble_spread"] = ensemble_spread(member_probabilities)
    curves = {name: risk_coverage(y, p, threshold, u, name) for name, u in scores.items()}
    sets, conformal = None, None
    if calibration is not None:
        sets = prediction_sets(p, calibration, rng=rng)  # randomized APS needs rng
        conformal = {"calibration": calibration.to_dict(), "note": calibration_note, **set_summary(sets, y)}
    rows = []
    for i in range(len(y)):
        row = {"id": ids[i] if ids else i, "label": int(y[i]), "calibrated_probability": float(p[i])}
        row.update({name: float(u[i]) for name, u in scores.items()})
        if sets is not None:
            row["conformal_set"] = set_labels(sets[i : i + 1])[0]
            row["refer"] = bool(sets[i].sum() != 1)
        rows.append(row)
    files = {"uncertainty_csv": write_rows(out / "uncertainty.csv", rows)}
    files["risk_coverage_png"] = plot_risk_coverage(curves, out / "risk_coverage.png", conformal, title=title)
    summary = {
        "threshold": float(threshold),
        "risk_coverage": {
            name: {
                "aurc": c.aurc,
                "accuracy_at_full_coverage": float(c.selective_accuracy[-1]),
                **{f"accuracy_at_{k}_coverage": c.accuracy_at(k / 100) for k in (50, 80, 90, 95)},
            }
            for name, c in curves.items()
        },
        "conformal": conformal,
        "conformal_note": calibration_note,
        "files": {k: str(v) for k, v in files.items()},
    }
    if "ensemble_spread" in scores:
        spread = scores["ensemble_spread"]
        summary["ensemble_spread"] = {"mean": float(spread.mean()), "max": float(spread.max())}
    return UncertaintyReport(curves, conformal, summary, files)


def plot_risk_coverage(
    curves: Mapping[str, RiskCoverage], path: str | Path, conformal: dict | None = None, *, title: str = ""
) -> Path:
    """Selective accuracy vs coverage, one line per score; the conformal operating point as a marker.

    Writes ``path`` (PNG) and the curve points as CSV beside it.
    """
    from matplotlib.figure import Figure  # only when a figure is drawn

    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot()
    rows: list[dict] = []
    for name, curve in curves.items():
        ax.step(
            curve.coverage, curve.selective_accuracy, where="post", label=f"{name} (AURC {curve.aurc:.3f})"
        )
        rows.extend(curve.rows())
    if conformal is not None and not math.isnan(conformal.get("singleton_accuracy", math.nan)):
        decided = 1.0 - conformal["share_uncertain_refer"]  # refer = empty or two-class sets
        alpha = conformal["calibration"]["alpha"]
        ax.plot(
            [decided], [conformal["singleton_accuracy"]], "k*", ms=11,
            label=f"conformal {100 * (1 - alpha):.0f}%: refer {100 * (1 - decided):.1f}%",
        )  # fmt: skip
        rows.append(
            {
                "score": "conformal_singletons",
                "coverage": decided,
                "selective_accuracy": conformal["singleton_accuracy"],
            }
        )
    ax.set_xlim(0, 1.01)
    ax.set_xlabel("coverage (share of images decided; the rest referred)")
    ax.set_ylabel("accuracy on decided images")
    ax.set_title(title or "Risk–coverage")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    write_rows(path.with_suffix(".csv"), rows)
    return path


__all__ = [
    "RiskCoverage",
    "UncertaintyReport",
    "ensemble_spread",
    "error_probability",
    "plot_risk_coverage",
    "risk_coverage",
    "uncertainty_report",
]
