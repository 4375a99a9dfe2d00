"""Evaluation of a k-class checkpoint (the ``normal-bacterial-viral`` task) on one split.

``evaluate_checkpoint`` hands over here when the checkpoint has more than two classes. The images
are labelled for the checkpoint's task (``data.tasks``: the file names' sub-labels), predicted by
the same ``Predictor`` (softmax of logits / T, argmax), and measured with
``evaluation.multiclass_metrics`` (95 % CIs: Wilson for accuracy and per-class proportions, patient
bootstrap for the rest). There is no threshold: every number is at the argmax decision.

Output folder (``out_dir``)::

    predictions.csv                 one row per image: label and predicted class (index and name),
                                    probability_<CLASS> (calibrated) and logit_<CLASS> per class
    metrics.json                    MulticlassMetrics.to_dict() plus provenance (sha256, data, split)
    metrics.csv                     one row per class and an "overall" row, value/low/high/note each
    classification_report.txt       per-class precision/recall/specificity/F1/AUC, then every CI
    confusion_matrix.json           k × k counts, rows = true class, columns = predicted
    plots/confusion_matrix.{png,csv}, plots/roc_ovr.{png,csv}   k × k matrix, one-vs-rest ROC curves

and one row (``threshold_kind = "argmax"``) in the performance table (``results_table``).
Ensembles, MC-dropout and reusing saved predictions are binary-only for now and are refused here
with a ConfigError rather than averaged wrongly.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pneumocxr.data.cache import PreprocessedCache
from pneumocxr.data.discovery import Dataset
from pneumocxr.data.records import ImageRecord
from pneumocxr.data.tasks import label_for_task
from pneumocxr.errors import ConfigError
from pneumocxr.evaluation import DEFAULT_N_BOOT, MulticlassMetrics, multiclass_metrics
from pneumocxr.inference import outputs
from pneumocxr.inference.predictor import PredictionBatch, Predictor, device_description
from pneumocxr.inference.provenance import Selection, selection_check
from pneumocxr.inference.results_table import multiclass_row, update_performance_csv

logger = logging.getLogger(__name__)

CONFIDENCE = 0.95


@dataclass(frozen=True)
class MulticlassEvaluationResult:
    """What a k-class evaluation measured and where it wrote it (cf. ``EvaluationResult``)."""

    model: str  # display name
    architecture: str  # registry name
    checkpoint: Path
    checkpoint_sha256: str
    data: str  # dataset root actually read
    split: str
    out_dir: Path
    task: str  # the checkpoint's task, e.g. "normal-bacterial-viral"
    class_names: tuple[str, ...]
    paths: tuple[str, ...]  # evaluated images, in order
    labels: np.ndarray  # (N,) class indices of the task
    patient_ids: tuple[str, ...]
    predictions: PredictionBatch  # .probabilities (N, k), .prediction (N,) argmax
    metrics: MulticlassMetrics
    selection: Selection
    device: str
    files: dict[str, Path] = field(default_factory=dict)
    reused_predictions: bool = False  # never, for now (kept for the printing code's sake)

    @property
    def n_images(self) -> int:
        return len(self.labels)


def evaluate_multiclass(
    predictor: Predictor,
    checkpoint: Path,
    sha: str,
    dataset: Dataset,
    root: str | os.PathLike,
    split: str,
    records: Sequence[ImageRecord],
    out_dir: Path,
    *,
    model: str,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    results_csv: str | os.PathLike | None = None,
) -> MulticlassEvaluationResult:
    """Predict ``records`` with a k-class ``predictor`` and write every output (module docstring)."""
    if getattr(predictor, "members", None) is not None or int(getattr(predictor, "mc_passes", 0) or 0):
        raise ConfigError(
            f"{checkpoint}: ensembles and MC-dropout average binary probabilities; a {predictor.num_classes}"
            "-class checkpoint is evaluated on its own (drop the ensemble / MC-dropout options)"
        )
    task = predictor.meta.task
    labelled = label_for_task(records, task, where=f"split {split!r} of {dataset.root}")
    cache = None
    if cache_dir is not None:
        pre = predictor.preprocess
        cache = PreprocessedCache(cache_dir, pre.image_size, pre.resize_mode)
    logger.info("predicting %d %s images of %s (%s)", len(labelled), split, dataset.root, task)
    batch = predictor.predict_records(labelled, cache=cache)
    y = np.array([r.label for r in labelled], dtype=np.int64)
    patients = tuple(r.patient_id for r in labelled)
    names = predictor.class_names
    metrics = multiclass_metrics(
        y, batch.probabilities, names, groups=list(patients), n_boot=n_boot, seed=seed, confidence=CONFIDENCE
    )
    result = MulticlassEvaluationResult(
        model=model,
        architecture=predictor.meta.model_name,
        checkpoint=checkpoint,
        checkpoint_sha256=sha,
        data=str(Path(dataset.root).resolve()),
        split=split,
        out_dir=out_dir,
        task=task,
        class_names=names,
        paths=tuple(r.display_name for r in labelled),
        labels=y,
        patient_ids=patients,
        predictions=batch,
        metrics=metrics,
        selection=selection_check(predictor.meta, root, dataset, split),
        device=device_description(predictor.device),
    )
    for message in result.selection.warnings:
        logger.warning("%s", message)
    _write_outputs(result, labelled, predictor, dataset, results_csv=results_csv)
    return result


def _write_outputs(
    result: MulticlassEvaluationResult,
    records: Sequence[ImageRecord],
    predictor: Predictor,
    dataset: Dataset,
    *,
    results_csv: str | os.PathLike | None,
) -> None:
    from pneumocxr.evaluation.multiclass_plots import plot_multiclass_confusion, plot_multiclass_roc

    out, files, m = result.out_dir, result.files, result.metrics
    out.mkdir(parents=True, exist_ok=True)
    files["predictions_csv"] = write_multiclass_predictions(
        out / "predictions.csv", records, result.predictions
    )
    files["metrics_csv"] = m.to_csv(out / "metrics.csv")
    report = out / "classification_report.txt"
    report.write_text(
        f"== argmax of the calibrated probabilities, {result.split}\n{m.classification_report()}"
    )
    files["classification_report_txt"] = report
    files["confusion_matrix_json"] = outputs.write_json(
        out / "confusion_matrix.json",
        {"rows_true_columns_predicted": list(result.class_names), "matrix": m.confusion.tolist()},
    )
    title = f"{result.model} on {result.split} (n={result.n_images})"
    plots = out / "plots"
    figures = {
        "confusion_matrix": plot_multiclass_confusion(
            m.confusion, result.class_names, plots / "confusion_matrix.png", title=f"{title}, argmax"
        ),
        "roc_ovr": plot_multiclass_roc(
            result.labels,
            result.predictions.probabilities,
            result.class_names,
            plots / "roc_ovr.png",
            title=f"One-vs-rest ROC — {title}",
        ),
    }
    for name, figure in figures.items():
        figure.clear()  # free the memory now; the files are written
        files[name] = plots / f"{name}.png"
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    identity = {
        "model": result.model,
        "architecture": result.architecture,
        "checkpoint": str(result.checkpoint),
        "data": result.data,
        "split": result.split,
    }
    row = multiclass_row(m, task=result.task, **identity)
    row.update(checkpoint_sha256=result.checkpoint_sha256, evaluated_at=when)
    table = Path(results_csv) if results_csv is not None else out / "results" / "performance_metrics.csv"
    files["performance_csv"] = update_performance_csv(table, [row])
    files["metrics_json"] = outputs.write_json(
        out / "metrics.json", _summary(result, predictor, dataset, when)
    )


def write_multiclass_predictions(path: Path, records: Sequence[ImageRecord], batch: PredictionBatch) -> Path:
    """One row per image: path, patient, true and predicted class, then per-class calibrated
    probability and raw logit (``repr`` floats: exact round trip)."""
    names = batch.class_names
    probs = batch.probabilities  # (N, k)
    header = ["path", "patient_id", "label", "label_name", "sublabel", "prediction", "prediction_name"]
    header += [f"probability_{c}" for c in names] + [f"logit_{c}" for c in names]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i, r in enumerate(records):
            pred = int(batch.prediction[i])
            row = [r.display_name, r.patient_id, r.label, names[r.label], r.sublabel, pred, names[pred]]
            row += [repr(float(v)) for v in probs[i]] + [repr(float(v)) for v in batch.logits[i]]
            writer.writerow(row)
    return path


def _summary(
    result: MulticlassEvaluationResult, predictor: Predictor, dataset: Dataset, when: str
) -> dict[str, Any]:
    meta = predictor.meta
    return {
        "model": result.model,
        "architecture": result.architecture,
        "checkpoint": str(result.checkpoint),
        "checkpoint_sha256": result.checkpoint_sha256,
        "data": result.data,
        "layout": dataset.layout,
        "split": result.split,
        "task": result.task,
        "class_names": list(result.class_names),
        "n_images": result.n_images,
        "n_patients": len(set(result.patient_ids)),
        "class_counts": {n: int((result.labels == i).sum()) for i, n in enumerate(result.class_names)},
        "scored_probability": "softmax(logits / temperature); prediction = argmax",
        "temperature": meta.temperature,
        "metrics": result.metrics.to_dict(),
        "selection": result.selection.to_dict(),
        "confidence": CONFIDENCE,
        "device": result.device,
        "checkpoint_meta": {
            "temperature": meta.temperature,
            "operating_point": meta.extra.get("operating_point"),
            "created": meta.created,
            "versions": meta.versions,
            "validation_metrics": meta.metrics,
        },
        "files": {k: str(v) for k, v in result.files.items()},
        "evaluated_at": when,
    }
