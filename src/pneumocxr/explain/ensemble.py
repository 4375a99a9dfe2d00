"""Explain an ensemble file: every member's map for the ENSEMBLE's decision, averaged.

Why this shape: an ensemble predicts the mean of its members' calibrated probabilities, with equal
weights, so its explanation is the equal-weight mean of the members' maps for the same target
class (the ensemble's prediction for ``target="predicted"``, not each member's own). Members may
take different input sizes, so each map is first brought to the ORIGINAL image geometry with that
member's resize mode, then averaged. Each member sees the pixels it sees when predicting (the
cache's ``decode_record`` at its own ``Preprocess``), so the probabilities in the report are the
ones ``predict``/``evaluate`` give for the file.

Outputs per image as for one checkpoint (``images.explain_file``): ``<stem>.overlay.png``,
``<stem>.cam.npy`` — the mean map at model-input resolution when all members share one input size
and resize mode, else the mean map in the original geometry (the JSON says which) — and ``<stem>.json``
with the members' probabilities and their spread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pneumocxr.data.cache import decode_record
from pneumocxr.data.records import ImageRecord
from pneumocxr.data.sources import load_pixels
from pneumocxr.errors import DatasetError
from pneumocxr.explain._input import decide, probabilities, to_model_input
from pneumocxr.explain.cam import CLASS_AGNOSTIC, compute_cam, resolve_targets
from pneumocxr.explain.geometry import to_original_geometry
from pneumocxr.explain.images import (
    ExplainRun,
    Explanation,
    _file_record,
    _title,
    explain_each,
    output_paths,
    write_outputs,
)
from pneumocxr.models import CheckpointMeta, PneumoModel
from pneumocxr.models.ensemble_file import load_ensemble

logger = logging.getLogger(__name__)


def explain_ensemble_images(
    checkpoint: str | os.PathLike,
    files: Sequence[Path],
    out_dir: str | os.PathLike,
    *,
    method: str = "gradcam",
    target: str = "predicted",
    device: str | torch.device = "cpu",
) -> ExplainRun:
    """Explain ``files`` with the ensemble in ``checkpoint``; undecodable files go to ``failures``."""
    members, meta = load_ensemble(checkpoint)
    for model, _ in members:
        model.to(device)
    return explain_each(
        files,
        out_dir,
        lambda path, stem: explain_ensemble_file(members, meta, path, stem, method=method, target=target),
    )


def explain_ensemble_file(
    members: Sequence[tuple[PneumoModel, CheckpointMeta]],
    meta: CheckpointMeta,
    path: Path,
    stem: Path,
    *,
    method: str = "gradcam",
    target: str = "predicted",
) -> Explanation:
    """One file: the ensemble's decision, then every member's map for that class, averaged."""
    record = _file_record(path)
    full = load_pixels(record)  # (H, W) float32 in [0, 1]
    height, width = full.shape
    inputs, raw, calibrated = _member_inputs(members, record)  # (M, k) class probabilities each
    mean_calibrated = calibrated.mean(axis=0)  # (k,): the ensemble's probabilities, as EnsemblePredictor
    index = int(decide(mean_calibrated[None], meta.threshold)[0])  # binary: threshold; k classes: argmax
    shown = 1 if len(meta.class_names) == 2 else index  # binary: P(positive); k classes: the decided one
    p_calibrated = float(mean_calibrated[shown])
    if target.lower() == "predicted":
        target_class = meta.class_names[index]
    else:
        target_class = resolve_targets(torch.zeros(1, 1), target, meta.class_names)[0]  # validates the name
    maps, aligned, layers = [], [], []
    for (model, m), x in zip(members, inputs):
        result = compute_cam(model, x, method=method, target=[target_class], class_names=m.class_names)
        maps.append(result.maps[0])
        layers.append(result.layer)
        aligned.append(to_original_geometry(result.maps[0], height, width, m.preprocess.resize_mode))
    mean_aligned = np.mean(aligned, axis=0).astype(np.float32)  # (H, W)
    same_input = len({(m.preprocess.image_size, m.preprocess.resize_mode) for _, m in members}) == 1
    raw_map = np.mean(maps, axis=0).astype(np.float32) if same_input else mean_aligned
    explanation = Explanation(
        source=str(path),
        prediction=meta.class_names[index],
        probability=float(raw.mean(axis=0)[shown]),
        calibrated_probability=p_calibrated,
        target_class=target_class,
        **output_paths(stem),
    )
    layer = f"{len(members)} members' {layers[0]}" if len(set(layers)) == 1 else f"{len(members)} members"
    names = meta.model_kwargs.get("members", [f"member{i}" for i in range(len(members))])
    report = {
        "source": explanation.source,
        "prediction": explanation.prediction,
        "probability": explanation.probability,
        "calibrated_probability": explanation.calibrated_probability,
        "probability_of": meta.class_names[shown],
        "probabilities": {name: float(v) for name, v in zip(meta.class_names, mean_calibrated)},
        "threshold": meta.threshold,
        "combine": "mean of the members' calibrated probabilities; map = mean of the members' maps",
        "members": [
            {"name": n, "model": m.model_name, "calibrated_probability": float(c[shown]), "layer": lay}
            for n, (_, m), c, lay in zip(names, members, calibrated, layers)
        ],
        "member_spread": float(np.std(calibrated[:, shown])),
        "method": method,
        "target_class": target_class,
        "class_agnostic": method in CLASS_AGNOSTIC,
        "model": meta.model_name,
        "checkpoint": meta.path,
        "image_size": {"height": height, "width": width},
        "raw_map_geometry": "model input" if same_input else "original image",
        "map_empty": bool(mean_aligned.max() <= 0),
    }
    title = _title(explanation, meta, layer, method)
    write_outputs(explanation, raw_map, full, mean_aligned, title=title, report=report)
    return explanation


def _member_inputs(
    members: Sequence[tuple[PneumoModel, CheckpointMeta]], record: ImageRecord
) -> tuple[list[torch.Tensor], np.ndarray, np.ndarray]:
    """Each member's (1, C, S, S) input and its raw and calibrated class probabilities, (M, k) each."""
    names = {tuple(m.class_names) for _, m in members}
    if len(names) > 1:
        raise DatasetError(
            f"ensemble members predict different classes ({sorted(names)}); rebuild the ensemble"
        )
    inputs, raw, calibrated = [], [], []
    for model, m in members:
        square = decode_record(record, m.preprocess.image_size, m.preprocess.resize_mode)  # (S, S) uint8
        x = to_model_input(square[None], m.preprocess)  # (1, C, S, S)
        with torch.no_grad():
            logits = model(x.to(next(model.parameters()).device))  # (1, 1)
        r, c = probabilities(logits, m.temperature)
        inputs.append(x)
        raw.append(r[0])
        calibrated.append(c[0])
    return inputs, np.stack(raw), np.stack(calibrated)
