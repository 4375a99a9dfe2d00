"""What every evaluation (binary ``evaluate`` and k-class ``evaluate_multiclass``) records the same way.

The two evaluations measure different things, but what was evaluated (checkpoint and its sha256,
data, split, images, patients), whether the split could have chosen the model, where the rows of
the performance table go and how ``metrics.json`` opens and closes must not drift apart: a reader of
``metrics.json`` or ``performance_metrics.csv`` finds the same provenance keys whatever the task.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumocxr.data.cache import PreprocessedCache
from pneumocxr.data.discovery import Dataset
from pneumocxr.data.records import ImageRecord
from pneumocxr.inference.predictor import PredictionBatch, Predictor, device_description
from pneumocxr.models import CheckpointMeta
from pneumocxr.workflows.provenance import Selection, selection_check
from pneumocxr.workflows.results_table import performance_csv_path, update_performance_csv

CONFIDENCE = 0.95  # of every interval an evaluation reports


@dataclass(frozen=True, kw_only=True)
class Evaluated:
    """What any evaluation measured on and where it wrote it; ``evaluated_fields`` fills most of it.

    ``EvaluationResult`` (binary) and ``MulticlassEvaluationResult`` add their metrics.
    """

    model: str  # display name (run folder name for runs/NAME/best.pt, else the file stem)
    architecture: str  # registry name
    checkpoint: Path
    checkpoint_sha256: str
    data: str  # dataset root actually read
    split: str
    out_dir: Path
    paths: tuple[str, ...]  # evaluated images, in order
    labels: np.ndarray  # (N,) class indices of the checkpoint's task (binary: 0/1)
    patient_ids: tuple[str, ...]
    predictions: PredictionBatch
    selection: Selection
    device: str
    reused_predictions: bool = False  # predictions read back from out_dir, not predicted again
    files: dict[str, Path] = field(default_factory=dict)  # predictions_csv, metrics_json, plots …

    @property
    def n_images(self) -> int:
        return len(self.labels)


def prediction_cache(predictor: Predictor, cache_dir: str | os.PathLike | None) -> PreprocessedCache | None:
    """The preprocessed-image cache for this predictor's input size, or None without ``cache_dir``."""
    if cache_dir is None:
        return None
    pre = predictor.preprocess
    return PreprocessedCache(cache_dir, pre.image_size, pre.resize_mode)


def evaluated_fields(
    predictor: Predictor,
    checkpoint: Path,
    sha: str,
    dataset: Dataset,
    root: str | os.PathLike,
    split: str,
    out_dir: Path,
    records: Sequence[ImageRecord],
) -> dict[str, Any]:
    """The result fields that say what was evaluated, on which images, and could they have chosen it.

    ``root``: what the caller named (``selection_check`` compares it with the checkpoint's split).
    """
    return {
        "architecture": predictor.meta.model_name,
        "checkpoint": checkpoint,
        "checkpoint_sha256": sha,
        "data": str(Path(dataset.root).resolve()),
        "split": split,
        "out_dir": out_dir,
        "paths": tuple(r.display_name for r in records),
        "labels": np.array([r.label for r in records], dtype=np.int64),
        "patient_ids": tuple(r.patient_id for r in records),
        "selection": selection_check(predictor.meta, root, dataset, split),
        "device": device_description(predictor.device),
    }


def write_performance_rows(
    result: Evaluated, rows: list[dict[str, Any]], results_csv: str | os.PathLike | None, when: str
) -> Path:
    """Add the result's identity to ``rows`` and merge them into the performance table.

    ``results_csv`` None: ``out_dir/results/performance_metrics.csv`` (``results_table`` has the rule).
    """
    for row in rows:
        row.update(checkpoint_sha256=result.checkpoint_sha256, evaluated_at=when)
    return update_performance_csv(performance_csv_path(result.out_dir, results_csv), rows)


def identity(result: Evaluated) -> dict[str, str]:
    """The columns that name a performance-table row's model and data."""
    return {
        "model": result.model,
        "architecture": result.architecture,
        "checkpoint": str(result.checkpoint),
        "data": result.data,
        "split": result.split,
    }


def summary(
    result: Evaluated,
    dataset: Dataset,
    class_names: Sequence[str],
    *,
    about: dict[str, Any],
    measured: dict[str, Any],
    checkpoint_meta: dict[str, Any],
    n_boot: int,
    seed: int,
    when: str,
) -> dict[str, Any]:
    """``metrics.json``: provenance first, then ``about`` (task, classes), the counts, ``measured``
    (what the evaluation computed), then how (selection, CIs, device) and the checkpoint's meta."""
    y = result.labels
    return {
        "model": result.model,
        "architecture": result.architecture,
        "checkpoint": str(result.checkpoint),
        "checkpoint_sha256": result.checkpoint_sha256,
        "data": result.data,
        "layout": dataset.layout,
        "split": result.split,
        **about,
        "n_images": len(y),
        "n_patients": len(set(result.patient_ids)),
        "class_counts": {name: int((y == i).sum()) for i, name in enumerate(class_names)},
        **measured,
        "selection": result.selection.to_dict(),
        "confidence": CONFIDENCE,
        "n_boot": n_boot,
        "seed": seed,
        "device": result.device,
        "reused_predictions": result.reused_predictions,
        "checkpoint_meta": checkpoint_meta,
        "files": {k: str(v) for k, v in result.files.items()},
        "evaluated_at": when,
    }


def checkpoint_meta_summary(meta: CheckpointMeta, **how_it_decides: Any) -> dict[str, Any]:
    """What ``metrics.json`` repeats of the checkpoint: ``how_it_decides`` (threshold, temperature …)
    first, then when and with what it was made and its validation metrics."""
    return {
        **how_it_decides,
        "created": meta.created,
        "versions": meta.versions,
        "validation_metrics": meta.metrics,
    }
