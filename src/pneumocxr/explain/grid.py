"""``gradcam_visualizations.png``: where the model looks in its right and wrong decisions.

One row per outcome (true positives, false positives, false negatives, true negatives), the most
confident cases of each: a confident mistake is the most instructive thing to look at. Each map
explains the class the model predicted, on the image in its original geometry, with the
probability in the cell title. The selection is also written as JSON beside the figure.

``gradcam_grid_for(checkpoint, …)`` draws it for a checkpoint OR an ensemble file: for an ensemble
each map is the equal-weight mean of its members' maps for the ENSEMBLE's decision, each member
seeing its own input size and brought to the original geometry first (as ``explain.ensemble``
does for one image).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from pneumocxr.config import Preprocess
from pneumocxr.data.cache import decode_record
from pneumocxr.data.records import ImageRecord
from pneumocxr.data.sources import load_pixels
from pneumocxr.explain._input import to_model_input
from pneumocxr.explain.cam import check_method, compute_cam
from pneumocxr.explain.geometry import to_original_geometry
from pneumocxr.explain.overlay import COLORBAR_LABEL, draw_overlay, for_display
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import load_checkpoint, model_spec
from pneumocxr.models.ensemble_file import is_ensemble_file, load_ensemble

logger = logging.getLogger(__name__)

CATEGORIES: dict[str, str] = {
    "TP": "true positives",
    "FP": "false positives",
    "FN": "false negatives",
    "TN": "true negatives",
}
CELL_SIDE = 320  # pixels: each cell's image is shrunk to at most this (aspect kept)


def select_cases(
    labels: Sequence[int], probabilities: Sequence[float], threshold: float, per_category: int
) -> dict[str, list[int]]:
    """Indices of the ``per_category`` most confident cases of each outcome (ties: lower index).

    Predicted positive = probability >= threshold. Most confident means highest probability for
    TP/FP and lowest for FN/TN.
    """
    labels_arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    probs = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if labels_arr.shape != probs.shape:
        raise ValueError(f"{labels_arr.size} labels but {probs.size} probabilities")
    positive = probs >= threshold
    masks = {
        "TP": (labels_arr == 1) & positive,
        "FP": (labels_arr == 0) & positive,
        "FN": (labels_arr == 1) & ~positive,
        "TN": (labels_arr == 0) & ~positive,
    }
    chosen = {}
    for name, mask in masks.items():
        index = np.flatnonzero(mask)
        key = -probs[index] if name in ("TP", "FP") else probs[index]
        chosen[name] = [int(i) for i in index[np.lexsort((index, key))][:per_category]]
    return chosen


def gradcam_grid(
    model: nn.Module,
    records: Sequence[ImageRecord],
    probabilities: Sequence[float],
    out_path: str | os.PathLike,
    *,
    threshold: float = 0.5,
    preprocess: Preprocess | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
    method: str = "gradcam",
    per_category: int = 3,
) -> Path:
    """Draw the TP/FP/FN/TN grid for an evaluation split and return the PNG's path.

    ``probabilities`` are the P(positive) the evaluation used (calibrated, if it calibrated), one per
    record, compared with ``threshold``; labels come from the records. ``preprocess`` defaults to
    the model's spec (pass the checkpoint's). Also writes ``<out_path>.json`` with the cases shown.
    """
    preprocess = preprocess or model_spec(model).preprocess
    members = [(model, preprocess)]
    settings = {"threshold": threshold, "class_names": class_names, "method": method}
    return _grid(members, model_spec(model).name, records, probabilities, out_path, per_category, **settings)


def gradcam_grid_for(
    checkpoint: str | os.PathLike,
    records: Sequence[ImageRecord],
    probabilities: Sequence[float],
    out_path: str | os.PathLike,
    *,
    threshold: float | None = None,
    method: str = "gradcam",
    per_category: int = 3,
    device: str | torch.device = "cpu",
) -> Path:
    """``gradcam_grid`` for a checkpoint or ensemble file (module docstring). ``probabilities``: the
    evaluation's (for an ensemble, its mean calibrated ones); ``threshold`` defaults to the file's."""
    if is_ensemble_file(checkpoint):
        loaded, meta = load_ensemble(checkpoint)
        name = f"ensemble of {len(loaded)} ({', '.join(sorted({m.model_name for _, m in loaded}))})"
    else:
        model, meta = load_checkpoint(checkpoint, map_location="cpu")
        loaded, name = [(model, meta)], model_spec(model).name
    members = [(model.to(device), m.preprocess) for model, m in loaded]
    chosen = meta.threshold if threshold is None else threshold
    settings = {"threshold": chosen, "class_names": meta.class_names, "method": method}
    return _grid(members, name, records, probabilities, out_path, per_category, **settings)


def _grid(
    members: Sequence[tuple[nn.Module, Preprocess]],
    name: str,
    records: Sequence[ImageRecord],
    probabilities: Sequence[float],
    out_path: str | os.PathLike,
    per_category: int,
    *,
    threshold: float,
    class_names: Sequence[str],
    method: str,
) -> Path:
    check_method(method)
    if len(records) != len(probabilities):
        raise ValueError(f"{len(records)} records but {len(probabilities)} probabilities")
    cases = select_cases([r.label for r in records], probabilities, threshold, per_category)
    order = [i for category in CATEGORIES for i in cases[category]]
    panels = _panels(members, records, probabilities, order, class_names, threshold, method)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _draw(out, cases, panels, per_category, title=f"{method} · {name} · threshold {threshold:.2f}")
    rows = [
        {"category": name, "path": records[i].display_name, "label": class_names[records[i].label],
         "probability": float(probabilities[i]), "explained_class": panels[i].explained}
        for name in CATEGORIES
        for i in cases[name]
    ]  # fmt: skip
    summary = {
        "method": method,
        "model": name,
        "members": len(members),
        "map": "the mean of the members' maps, original geometry" if len(members) > 1 else "the model's map",
        "threshold": threshold,
        "per_category": per_category,
        "cases": rows,
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("wrote %s (%d cases)", out, len(order))
    return out


@dataclass(frozen=True)
class _Panel:
    image: np.ndarray  # (h, w) display-size image in [0, 1], original aspect
    cam: np.ndarray  # (h, w) map on it
    explained: str  # class the map explains (the predicted one)
    probability: float
    name: str  # file name shown in the cell


def _panels(members, records, probabilities, order, class_names, threshold, method):
    """index → _Panel: each member's maps in one batch, in the original geometry, averaged."""
    if not order:
        return {}
    # the image as the user has it; each member's square comes from the cache's own decode (training input)
    fulls = [load_pixels(records[i]) for i in order]  # (H, W) float32 in [0, 1] each
    targets = [class_names[1] if probabilities[i] >= threshold else class_names[0] for i in order]
    summed = [np.zeros(full.shape, dtype=np.float32) for full in fulls]
    for model, preprocess in members:
        size, mode = preprocess.image_size, preprocess.resize_mode
        squares = np.stack([decode_record(records[i], size, mode) for i in order])  # (n, S, S) uint8
        inputs = to_model_input(squares, preprocess)  # (n, C, S, S)
        result = compute_cam(model, inputs, method=method, target=targets, class_names=class_names)
        for total, full, cam in zip(summed, fulls, result.maps):
            total += to_original_geometry(cam, *full.shape, mode)
    panels = {}
    for i, full, total, explained in zip(order, fulls, summed, targets):
        image, shown = for_display(full, total / len(members), CELL_SIDE)
        panels[i] = _Panel(image, shown, explained, float(probabilities[i]), records[i].path.name)
    return panels


def _draw(out: Path, cases: dict[str, list[int]], panels: dict, per_category: int, title: str) -> None:
    columns = max(1, per_category)
    fig = Figure(figsize=(3.0 * columns + 1.2, 3.3 * len(CATEGORIES)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(CATEGORIES), columns, squeeze=False)
    artist = None
    for row, (name, long_name) in enumerate(CATEGORIES.items()):
        for col in range(columns):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(long_name, fontsize=11)
            if col >= len(cases[name]):
                if col == 0:
                    ax.text(0.5, 0.5, f"no {long_name}", ha="center", va="center")
                    for spine in ax.spines.values():
                        spine.set_visible(False)
                else:
                    ax.axis("off")
                continue
            index = cases[name][col]
            panel = panels[index]
            artist = draw_overlay(ax, panel.image, panel.cam)
            ax.set_title(
                f"{name}  p={panel.probability:.3f}  {panel.name}\nmap explains {panel.explained}", fontsize=8
            )
    fig.suptitle(title + "  (p = model probability of pneumonia)", fontsize=11)
    if artist is not None:
        fig.colorbar(artist, ax=axes, fraction=0.03, pad=0.01, label=COLORBAR_LABEL)
    fig.savefig(out)
