"""Multi-class figures: k × k confusion matrix and one-vs-rest ROC curves.

Same conventions as ``plots`` (object API, Agg via ``savefig``, ``<path>.png`` + ``<path>.csv``
with the plotted numbers, the ``Figure`` returned); kept apart because ``plots`` is near the
module-size limit and these functions take (n, k) probability matrices, not P(PNEUMONIA).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from pneumocxr.errors import DatasetError
from pneumocxr.evaluation.metrics import roc_auc
from pneumocxr.evaluation.multiclass import check_multiclass_inputs
from pneumocxr.evaluation.plots import LINESTYLES, Array, _draw_confusion, _finish, _square_axes

logger = logging.getLogger(__name__)


def plot_multiclass_confusion(
    cm: np.ndarray, class_names: Sequence[str], path: str | Path, *, title: str = "Confusion matrix"
) -> Figure:
    """k × k counts with row percentages (the diagonal is each class's recall), rows = true class.

    The CSV has one row per cell: true, predicted, count, row_percent.
    """
    cm = np.asarray(cm)
    names = [str(c) for c in class_names]
    if cm.ndim != 2 or cm.shape != (len(names), len(names)):
        raise DatasetError(
            f"confusion matrix has shape {cm.shape}; need ({len(names)}, {len(names)}) for {names}"
        )
    side = 1.6 + 1.3 * len(names)  # cells stay readable as k grows
    fig = Figure(figsize=(side, side - 0.2), layout="constrained")
    rows = _draw_confusion(fig.subplots(), cm, names, title)
    return _finish(fig, path, rows)


def plot_multiclass_roc(
    y_true: Array,
    probs: Array,
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str = "One-vs-rest ROC curves",
) -> Figure:
    """One ROC curve per class (that class vs the rest, scored by its probability column), AUC in the
    legend and the macro AUC in the title. A class with no cases, or with every case, has no curve: it
    is listed in the legend as undefined and logged. The CSV has class, fpr, tpr, threshold, auc."""
    y, p, names = check_multiclass_inputs(y_true, probs, class_names)
    fig = Figure(figsize=(5.8, 5.6), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="0.6", label="chance")
    rows: list[dict] = []
    aucs = []
    for c, name in enumerate(names):
        yc = (y == c).astype(np.int64)
        if yc.min() == yc.max():
            why = "no cases" if yc.max() == 0 else "every case"
            logger.warning("one-vs-rest ROC for %s undefined: %s", name, why)
            ax.plot([], [], lw=0, label=f"{name}: undefined ({why})")
            aucs.append(float("nan"))
            continue
        auc = roc_auc(yc, p[:, c])
        aucs.append(auc)
        fpr, tpr, thr = roc_curve(yc, p[:, c], drop_intermediate=False)
        style = LINESTYLES[c % len(LINESTYLES)]
        ax.plot(fpr, tpr, lw=2, ls=style, color=f"C{c}", label=f"{name} vs rest (AUC {auc:.3f})")
        rows += [
            {"class": name, "fpr": f, "tpr": t, "threshold": h, "auc": auc} for f, t, h in zip(fpr, tpr, thr)
        ]
    macro = float(np.mean(aucs))  # NaN when a class is undefined, as in multiclass_metrics
    _square_axes(ax, "1 − specificity (false-positive rate)", "Sensitivity (true-positive rate)")
    ax.set_title(
        f"{title}\nmacro AUC {macro:.3f}" if not np.isnan(macro) else f"{title}\nmacro AUC undefined"
    )
    ax.legend(loc="lower right", fontsize=8)
    if not rows:
        rows = [
            {"class": name, "fpr": None, "tpr": None, "threshold": None, "auc": a}
            for name, a in zip(names, aucs)
        ]
    return _finish(fig, path, rows)
