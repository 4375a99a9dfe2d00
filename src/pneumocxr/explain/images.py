"""Explain image files with a checkpoint: overlay PNG, raw map and a JSON report per image.

This is the one library call behind ``pneumocxr explain``. Pixels go through the same functions
as training (the cache's ``decode_record``, then the model's normalisation), so the explanation
is of the prediction the model really makes on the file.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import UnsupportedImageError
from pneumocxr.explain._input import decide, load_record, probabilities, to_model_input
from pneumocxr.explain.cam import CLASS_AGNOSTIC, compute_cam
from pneumocxr.explain.geometry import to_original_geometry
from pneumocxr.explain.overlay import save_overlay
from pneumocxr.labels import SUBLABEL_UNKNOWN
from pneumocxr.models import CheckpointMeta

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Explanation:
    """One explained image: what the model said and where the outputs were written."""

    source: str  # the input file
    prediction: str  # class the checkpoint's decision rule picks
    probability: float  # binary: P(positive class), uncalibrated; k classes: P(predicted class)
    calibrated_probability: float  # the same after temperature scaling (what the threshold applies to)
    target_class: str  # the class the map explains
    overlay: Path  # PNG: image + map in the original geometry, colour bar, probability in the title
    raw_map: Path  # .npy: (S, S) float32 map at model-input resolution
    report: Path  # .json: everything above plus method, layer, sizes


@dataclass(frozen=True)
class ExplainFailure:
    """An input that could not be explained, and why (never skipped silently)."""

    source: str
    reason: str


@dataclass(frozen=True)
class ExplainRun:
    """What ``explain_images`` did."""

    out_dir: Path
    explanations: tuple[Explanation, ...]
    failures: tuple[ExplainFailure, ...]


def _stems(files: Sequence[Path]) -> list[str]:
    """Output name per input: the file stem, made safe and unique (a/x.png and b/x.png)."""
    seen: dict[str, int] = {}
    stems = []
    for path in files:
        stem = re.sub(r"[^\w.-]+", "_", path.stem) or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def _file_record(path: Path) -> ImageRecord:
    """A user's file as a record, so it is decoded by the cache's own ``decode_record``.
    The label is unknown (-1); nothing here reads it."""
    return ImageRecord(path=path, label=-1, split="input", patient_id="", sublabel=SUBLABEL_UNKNOWN)


def explain_each(
    files: Sequence[Path], out_dir: str | os.PathLike, explain_one: Callable[[Path, Path], Explanation]
) -> ExplainRun:
    """``explain_one(file, out_dir/stem)`` for every file; an undecodable one goes to ``failures``
    (logged) and the others are still explained."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done, failed = [], []
    for path, stem in zip(files, _stems(files)):
        try:
            done.append(explain_one(path, out / stem))
        except UnsupportedImageError as exc:
            logger.warning("cannot explain %s: %s", path, exc.reason)
            failed.append(ExplainFailure(str(path), exc.reason))
    return ExplainRun(out, tuple(done), tuple(failed))


def explain_file(
    model: nn.Module,
    meta: CheckpointMeta,
    path: Path,
    stem: Path,
    *,
    method: str = "gradcam",
    target: str = "predicted",
) -> Explanation:
    """Explain one file; outputs are ``<stem>.overlay.png``, ``<stem>.cam.npy``, ``<stem>.json``."""
    square, full = load_record(_file_record(path), meta.preprocess)
    inputs = to_model_input(square[None], meta.preprocess)  # (1, C, S, S)
    result = compute_cam(
        model,
        inputs,
        method=method,
        target=target,
        class_names=meta.class_names,
        threshold=meta.threshold,
        temperature=meta.temperature,
    )
    raw, calibrated = probabilities(torch.from_numpy(result.logits), meta.temperature)
    index = int(decide(calibrated, meta.threshold)[0])
    binary = raw.shape[1] == 2
    shown = 1 if binary else index  # binary: report P(positive class) whatever the prediction
    height, width = full.shape
    aligned = to_original_geometry(result.maps[0], height, width, meta.preprocess.resize_mode)
    explanation = Explanation(
        source=str(path),
        prediction=meta.class_names[index],
        probability=float(raw[0, shown]),
        calibrated_probability=float(calibrated[0, shown]),
        target_class=result.target_classes[0],
        **output_paths(stem),
    )
    report = {
        "source": explanation.source,
        "prediction": explanation.prediction,
        "probability": explanation.probability,
        "calibrated_probability": explanation.calibrated_probability,
        "probability_of": meta.class_names[shown],
        "probabilities": {c: float(p) for c, p in zip(meta.class_names, calibrated[0])},
        "threshold": meta.threshold if binary else None,
        "temperature": meta.temperature,
        "method": method,
        "target_class": explanation.target_class,
        "class_agnostic": method in CLASS_AGNOSTIC,
        "layer": result.layer,
        "model": meta.model_name,
        "checkpoint": meta.path,
        "image_size": {"height": height, "width": width},
        "model_input": {"size": meta.preprocess.image_size, "resize_mode": meta.preprocess.resize_mode},
        "map_empty": bool(result.maps[0].max() <= 0),
    }
    title = _title(explanation, meta, result.layer, method)
    write_outputs(explanation, result.maps[0], full, aligned, title=title, report=report)
    return explanation


def output_paths(stem: Path) -> dict[str, Path]:
    """``Explanation``'s output files for ``stem``: overlay PNG, raw map .npy, JSON report."""
    return {
        "overlay": stem.with_name(stem.name + ".overlay.png"),
        "raw_map": stem.with_name(stem.name + ".cam.npy"),
        "report": stem.with_name(stem.name + ".json"),
    }


def write_outputs(
    explanation: Explanation,
    raw_map: np.ndarray,
    image: np.ndarray,
    aligned: np.ndarray,
    *,
    title: str,
    report: dict[str, Any],
) -> None:
    """Write ``raw_map`` (.npy), the overlay of ``aligned`` (map in ``image``'s geometry) on ``image``,
    and ``report`` (JSON, with the output names added) to ``explanation``'s paths."""
    np.save(explanation.raw_map, raw_map)
    save_overlay(explanation.overlay, image, aligned, title=title)
    report = {**report, "outputs": {"overlay": explanation.overlay.name, "raw_map": explanation.raw_map.name}}
    explanation.report.write_text(json.dumps(report, indent=2) + "\n")


def _title(explanation: Explanation, meta: CheckpointMeta, layer: str, method: str) -> str:
    name = Path(explanation.source).name
    prob = f"P({meta.class_names[-1] if len(meta.class_names) == 2 else explanation.prediction})"
    agnostic = " (class-agnostic)" if method in CLASS_AGNOSTIC else ""
    calibrated = " calibrated" if meta.temperature != 1.0 else ""
    # a k-class prediction is the argmax: the stored threshold does not apply to it
    rule = f"threshold {meta.threshold:.2f}" if len(meta.class_names) == 2 else "argmax"
    return (
        f"{name}: {explanation.prediction},{calibrated} {prob} = {explanation.calibrated_probability:.3f}"
        f" ({rule})\n{method} for {explanation.target_class}{agnostic}, layer {layer}"
    )
