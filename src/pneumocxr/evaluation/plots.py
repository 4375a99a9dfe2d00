"""Evaluation figures, each saved as PNG together with the CSV of the numbers it draws.

Matplotlib's object API only (``matplotlib.figure.Figure``): no pyplot, no global state, so the
functions are safe in servers and threads and never pop up windows. ``savefig`` renders with Agg.
Every function writes ``<path>.png`` and ``<path>.csv`` (same stem; the CSV is tidy, one row per
plotted point) and returns the ``Figure`` for embedding (e.g. in the HTML report).
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from pneumocxr.evaluation._csv import write_rows
from pneumocxr.evaluation.calibration import DEFAULT_N_BINS, reliability_curve
from pneumocxr.evaluation.intervals import DEFAULT_N_BOOT, Seed, bootstrap_roc_band
from pneumocxr.evaluation.metrics import average_precision, check_binary_inputs, check_threshold, roc_auc
from pneumocxr.labels import CLASS_NAMES

logger = logging.getLogger(__name__)

CLASS_COLORS = ("#1f77b4", "#d62728")  # NORMAL blue, PNEUMONIA red (as in the EDA figures)
DPI = 150
LINESTYLES = ("-", "--", "-.", ":")
Array = Sequence | np.ndarray


def _finish(fig: Figure, path: str | Path, rows: list[dict]) -> Figure:
    _wrap_titles(fig)
    png = Path(path).with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=DPI)
    write_rows(png.with_suffix(".csv"), rows)
    logger.info("wrote %s and %s", png, png.with_suffix(".csv").name)
    return fig


def _wrap_titles(fig: Figure) -> None:
    """Wrap each axes title to the width of its figure: titles carry the model and split names
    ("validation (used for model selection: optimistic)"), which a centred one-line title clips."""
    width = fig.get_figwidth()
    for ax in fig.axes:
        title = ax.get_title()
        if title:
            chars = max(20, int(width * 72 / (0.62 * ax.title.get_fontsize())))  # ~0.62 em per character
            ax.set_title("\n".join(textwrap.fill(line, chars) for line in title.split("\n")))


def _square_axes(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_roc(
    y_true: Array,
    prob: Array,
    path: str | Path,
    *,
    patient_ids: Array | None = None,
    threshold: float | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: Seed = 0,
    title: str = "ROC curve",
) -> Figure:
    """ROC curve with a pointwise 95 % patient-bootstrap band and the operating point at ``threshold``."""
    y, p = check_binary_inputs(y_true, prob)
    fig = Figure(figsize=(5.4, 5.2), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="0.6", label="chance")
    rows: list[dict] = []
    if y.min() == y.max():
        ax.text(0.5, 0.5, "ROC undefined:\nonly one class present", ha="center", va="center", fontsize=12)
    else:
        band = bootstrap_roc_band(y, p, patient_ids, n_boot=n_boot, seed=seed)
        fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
        lo, hi = band["auc_ci"]
        unit = "patient" if patient_ids is not None else "image"
        ax.fill_between(
            band["fpr"],
            band["tpr_low"],
            band["tpr_high"],
            color="C0",
            alpha=0.2,
            lw=0,
            label=f"95% CI ({unit} bootstrap)",
        )
        ax.plot(fpr, tpr, color="C0", lw=2, label=f"AUC {roc_auc(y, p):.3f} (95% CI {lo:.3f}–{hi:.3f})")
        rows += [{"series": "roc", "fpr": f, "tpr": t, "threshold": h} for f, t, h in zip(fpr, tpr, thr)]
        rows += [
            {"series": "ci_band", "fpr": f, "tpr_low": a, "tpr_median": m, "tpr_high": b}
            for f, a, m, b in zip(band["fpr"], band["tpr_low"], band["tpr_median"], band["tpr_high"])
        ]
        if threshold is not None:
            t = check_threshold(threshold)
            pred = p >= t
            op_fpr, op_tpr = float(pred[y == 0].mean()), float(pred[y == 1].mean())
            ax.plot(op_fpr, op_tpr, "o", ms=8, color="C3", label=f"threshold {t:.3g}")
            rows.append({"series": "operating_point", "fpr": op_fpr, "tpr": op_tpr, "threshold": t})
    _square_axes(ax, "1 − specificity (false-positive rate)", "Sensitivity (true-positive rate)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return _finish(fig, path, rows)


def plot_precision_recall(
    y_true: Array,
    prob: Array,
    path: str | Path,
    *,
    threshold: float | None = None,
    title: str = "Precision–recall",
) -> Figure:
    """Precision–recall curve with average precision and the prevalence (no-skill) line."""
    y, p = check_binary_inputs(y_true, prob)
    fig = Figure(figsize=(5.4, 5.2), layout="constrained")
    ax = fig.subplots()
    rows: list[dict] = []
    prevalence = float(y.mean())
    ax.axhline(prevalence, ls="--", lw=1, color="0.6", label=f"prevalence {prevalence:.3f}")
    if y.sum() == 0:
        ax.text(0.5, 0.5, "PR curve undefined:\nno positive cases", ha="center", va="center", fontsize=12)
    else:
        precision, recall, thr = precision_recall_curve(y, p, drop_intermediate=False)
        ax.step(recall, precision, where="post", color="C0", lw=2, label=f"AP {average_precision(y, p):.3f}")
        thr = np.r_[thr, np.nan]  # sklearn's last point (recall 0, precision 1) has no threshold
        rows += [
            {"series": "pr", "recall": r, "precision": q, "threshold": h}
            for r, q, h in zip(recall, precision, thr)
        ]
        if threshold is not None:
            t = check_threshold(threshold)
            pred = p >= t
            if pred.any():
                op_r, op_p = float(pred[y == 1].mean()), float(y[pred].mean())
                ax.plot(op_r, op_p, "o", ms=8, color="C3", label=f"threshold {t:.3g}")
                rows.append({"series": "operating_point", "recall": op_r, "precision": op_p, "threshold": t})
    _square_axes(ax, "Recall (sensitivity)", "Precision (PPV)")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    return _finish(fig, path, rows)


def _draw_confusion(ax, cm: np.ndarray, class_names: Sequence[str], title: str) -> list[dict]:
    cm = np.asarray(cm, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        row_frac = cm / cm.sum(axis=1, keepdims=True)
    ax.imshow(np.nan_to_num(row_frac), cmap="Blues", vmin=0, vmax=1)
    rows = []
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            frac = row_frac[i, j]
            pct = "–" if np.isnan(frac) else f"{100 * frac:.1f}%"
            colour = "white" if frac > 0.6 else "black"
            ax.text(j, i, f"{cm[i, j]:,}\n({pct})", ha="center", va="center", color=colour, fontsize=11)
            rows.append(
                {
                    "true": class_names[i],
                    "predicted": class_names[j],
                    "count": int(cm[i, j]),
                    "row_percent": 100 * float(frac),
                }
            )
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names)
    ax.set_yticks(ticks, class_names, rotation=90, va="center")
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(f"{title}\ncount (% of true class)", fontsize=11)
    return rows


def plot_confusion_matrix(
    cm: np.ndarray,
    path: str | Path,
    *,
    class_names: Sequence[str] = CLASS_NAMES,
    title: str = "Confusion matrix",
) -> Figure:
    """Counts with row percentages (the share of each true class: sensitivity/specificity on the diagonal)."""
    fig = Figure(figsize=(4.8, 4.6), layout="constrained")
    rows = _draw_confusion(fig.subplots(), cm, class_names, title)
    return _finish(fig, path, rows)


def plot_confusion_matrix_grid(
    matrices: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    class_names: Sequence[str] = CLASS_NAMES,
    ncols: int = 3,
) -> Figure:
    """One confusion matrix per model, side by side (wrapping after ``ncols``)."""
    names = list(matrices)
    ncols = max(1, min(ncols, len(names)))
    nrows = max(1, -(-len(names) // ncols))
    fig = Figure(figsize=(4.2 * ncols, 4.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    rows: list[dict] = []
    for ax, name in zip(axes, names):
        rows += [{"model": name, **r} for r in _draw_confusion(ax, matrices[name], class_names, name)]
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    return _finish(fig, path, rows)


def plot_reliability(
    y_true: Array, probs: Array | Mapping[str, Array], path: str | Path, *, n_bins: int = DEFAULT_N_BINS
) -> Figure:
    """Reliability diagram (observed positive rate vs mean predicted, per bin) with bin counts below.

    ``probs`` may map names to probabilities, e.g. {"uncalibrated": p, "temperature-scaled": q}.
    """
    series = dict(probs) if isinstance(probs, Mapping) else {"model": probs}
    fig = Figure(figsize=(5.4, 6.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], ls="--", lw=1, color="0.6", label="perfect calibration")
    rows: list[dict] = []
    width = 1.0 / n_bins / max(1, len(series))
    for k, (name, prob) in enumerate(series.items()):
        y, p = check_binary_inputs(y_true, prob)
        rel = reliability_curve(y, p, n_bins)
        centres = (rel.edges[:-1] + rel.edges[1:]) / 2
        top.plot(rel.mean_predicted, rel.observed, "o-", color=f"C{k}", label=f"{name} (ECE {rel.ece:.3f})")
        bottom.bar(
            rel.edges[:-1] + k * width, rel.counts, width=width, align="edge", color=f"C{k}", alpha=0.8
        )
        rows += [{"series": name, **r, "bin_centre": c, "ece": rel.ece} for r, c in zip(rel.rows(), centres)]
    _square_axes(top, "", "Observed PNEUMONIA rate")
    top.set_title(f"Reliability diagram ({n_bins} equal-width bins)")
    top.legend(loc="upper left", fontsize=8)
    bottom.set_xlabel("Predicted probability of PNEUMONIA")
    bottom.set_ylabel("Images")
    bottom.set_yscale("symlog", linthresh=10)
    bottom.grid(alpha=0.3)
    return _finish(fig, path, rows)


def plot_probability_histogram(
    y_true: Array,
    prob: Array,
    path: str | Path,
    *,
    threshold: float | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
    bins: int = 25,
) -> Figure:
    """Histogram of predicted P(PNEUMONIA) for each true class, with the decision threshold."""
    y, p = check_binary_inputs(y_true, prob)
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows: list[dict] = []
    for cls, name in enumerate(class_names[:2]):
        counts, _ = np.histogram(p[y == cls], bins=edges)
        ax.hist(
            p[y == cls],
            bins=edges,
            alpha=0.55,
            color=CLASS_COLORS[cls],
            label=f"true {name} (n={int((y == cls).sum())})",
        )
        rows += [
            {"true_class": name, "bin_low": a, "bin_high": b, "count": int(c)}
            for a, b, c in zip(edges[:-1], edges[1:], counts)
        ]
    if threshold is not None:
        ax.axvline(check_threshold(threshold), color="k", ls="--", lw=1.2, label=f"threshold {threshold:.3g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("Predicted probability of PNEUMONIA")
    ax.set_ylabel("Images")
    ax.set_title("Predicted probabilities by true class")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(fig, path, rows)


def plot_roc_comparison(
    y_true: Array, probs: Mapping[str, Array], path: str | Path, *, title: str = "ROC comparison"
) -> Figure:
    """Several models' ROC curves on the same images, AUC in the legend."""
    fig = Figure(figsize=(5.6, 5.4), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="0.6", label="chance")
    rows: list[dict] = []
    for k, (name, prob) in enumerate(probs.items()):
        y, p = check_binary_inputs(y_true, prob)
        if y.min() == y.max():
            logger.warning("ROC for %s undefined: only one class present", name)
            continue
        fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
        style = LINESTYLES[k % len(LINESTYLES)]  # curves of similar models overlap: keep them apart
        ax.plot(fpr, tpr, lw=2, ls=style, color=f"C{k}", label=f"{name} (AUC {roc_auc(y, p):.3f})")
        rows += [{"model": name, "fpr": f, "tpr": t, "threshold": h} for f, t, h in zip(fpr, tpr, thr)]
    _square_axes(ax, "1 − specificity (false-positive rate)", "Sensitivity (true-positive rate)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return _finish(fig, path, rows)
