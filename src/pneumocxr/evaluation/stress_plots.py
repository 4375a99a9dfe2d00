"""The stress-suite figure: AUC, sensitivity and specificity against shift severity, one line per shift.

One row of three panels per model, so several models' robustness can be read side by side. Every
line starts at the clean reference (severity 0) with its 95 % CI drawn as a grey band, so a shift
whose line leaves the band changed the model's behaviour beyond sampling noise of the clean
estimate. Solid lines: shifts the training augmentation covers; dashed: shifts it never showed the
model ("blind"); dotted: unknown. Matplotlib's object API only, like ``plots``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from pneumocxr.evaluation._csv import write_rows

logger = logging.getLogger(__name__)

__all__ = ["STRESS_PANELS", "plot_stress"]

STRESS_PANELS = (("auc", "ROC AUC"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity"))
CLEAN_SHIFT = "none"  # the clean reference row's shift name (severity 0)
_DPI = 150
_COVERAGE_STYLE = {True: "-", False: "--", None: ":"}


def plot_stress(
    rows: Sequence[Mapping[str, object]], path: str | Path, *, title: str = "", write_data: bool = True
) -> Figure:
    """Draw ``rows`` (stress.csv rows: model, shift, severity, severity_name, auc/_lo/_hi, sensitivity…,
    in_training_augmentation) into ``<path>.png``; with ``write_data`` also the plotted points as
    ``<path>.csv`` (leave it off when the rows are already saved as a table)."""
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    shifts = list(dict.fromkeys(str(r["shift"]) for r in rows if r["shift"] != CLEAN_SHIFT))
    colours = colormaps["tab20"].resampled(max(len(shifts), 1))
    fig = Figure(figsize=(15, 3.6 * len(models) + 0.8), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(models), len(STRESS_PANELS), squeeze=False))
    points: list[dict] = []
    for m, model in enumerate(models):
        mine = [r for r in rows if str(r["model"]) == model]
        clean = next((r for r in mine if r["shift"] == CLEAN_SHIFT), None)
        for ax, (column, label) in zip(axes[m], STRESS_PANELS):
            _clean_band(ax, clean, column)
            for k, shift in enumerate(shifts):
                line = [r for r in mine if r["shift"] == shift]
                points += _draw_line(ax, line, clean, column, shift, colours(k))
            ax.set_title(f"{model}: {label}" if len(models) > 1 or not title else label)
            ax.set_xlabel("severity")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.set_xticks(range(4), ["clean", "mild", "moderate", "severe"])
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize="small", title="shift")
    if title:
        fig.suptitle(title)
    png = Path(path).with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=_DPI)
    if write_data:
        write_rows(png.with_suffix(".csv"), points)
    logger.info("wrote %s", png)
    return fig


def _clean_band(ax, clean: Mapping[str, object] | None, column: str) -> None:
    """The clean estimate's 95 % CI as a horizontal grey band."""
    if clean is None:
        return
    low, high = float(clean[f"{column}_lo"]), float(clean[f"{column}_hi"])  # type: ignore[arg-type]
    if np.isfinite(low) and np.isfinite(high):
        ax.axhspan(low, high, color="0.85", zorder=0, label="_clean 95% CI")


def _draw_line(ax, line, clean, column: str, shift: str, colour) -> list[dict]:
    """One shift's points (clean first) as a line; returns them as tidy rows."""
    ordered = ([clean] if clean is not None else []) + sorted(line, key=lambda r: int(r["severity"]))
    x = [int(r["severity"]) for r in ordered]
    y = [float(r[column]) for r in ordered]
    covered = line[0].get("in_training_augmentation") if line else None
    covered = covered if isinstance(covered, bool) else None
    suffix = {True: " (trained)", False: " (blind)", None: ""}[covered]
    ax.plot(x, y, _COVERAGE_STYLE[covered], marker="o", markersize=3, color=colour, label=shift + suffix)
    return [
        {"model": r["model"], "shift": shift, "severity": r["severity"], "metric": column, "value": v}
        for r, v in zip(ordered, y)
    ]
