"""Evaluation of a k-class checkpoint (the ``normal-bacterial-viral`` task) on one split.

``evaluate_checkpoint`` hands over here when the checkpoint has more than two classes. The images
are labelled for the checkpoint's task (``data.tasks``: the file names' sub-labels), predicted by
the same ``Predictor`` (softmax of logits / T, argmax), and measured with
``evaluation.multiclass_metrics`` (95 % CIs: Wilson for accuracy and per-class proportions, patient
bootstrap for the rest). There is no threshold: every number is at the argmax decision.

Output folder (``out_dir``):

    predictions.csv                 one row per image: label and predicted class (index and name),
                                    probability_<CLASS> (calibrated) and logit_<CLASS> per class
    metrics.json                    MulticlassMetrics.to_dict() plus provenance (sha256, data, split)
    metrics.csv                     one row per class and an "overall" row, value/low/high/note each
    classification_report.txt       per-class precision/recall/specificity/F1/AUC, then every CI
    confusion_matrix.json           k × k counts, rows = true class, columns = predicted
    plots/confusion_matrix.{png,csv}, plots/roc_ovr.{png,csv}   k × k matrix, one-vs-rest ROC curves

and one row (``threshold_kind = "argmax"``) in the performance table (``results_table``).
Ensembles and MC-dropout average the members' / passes' calibrated class probabilities row by row
(``inference.ensemble.combine``) and decide by argmax, like a single checkpoint.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pneumocxr.data.discovery import Dataset
from pneumocxr.data.records import ImageRecord
from pneumocxr.data.tasks import label_for_task
from pneumocxr.evaluation import DEFAULT_N_BOOT, MulticlassMetrics, multiclass_metrics
from pneumocxr.inference.predictor import PredictionBatch, Predictor
from pneumocxr.workflows import outputs
from pneumocxr.workflows.evaluation_files import (
    CONFIDENCE,
    Evaluated,
    checkpoint_meta_summary,
    evaluated_fields,
    identity,
    prediction_cache,
    summary,
    write_performance_rows,
)
from pneumocxr.workflows.results_table import multiclass_row

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class MulticlassEvaluationResult(Evaluated):
    """What a k-class evaluation measured (``Evaluated``: on what, and where it wrote it).

    ``predictions``: .probabilities (N, k), .prediction (N,) argmax; ``reused_predictions`` is
    always False for now (kept for the printing code's sake).
    """

    task: str  # the checkpoint's task, e.g. "normal-bacterial-viral"
    class_names: tuple[str, ...]
    metrics: MulticlassMetrics


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
    task = predictor.meta.task
    labelled = label_for_task(records, task, where=f"split {split!r} of {dataset.root}")
    logger.info("predicting %d %s images of %s (%s)", len(labelled), split, dataset.root, task)
    batch = predictor.predict_records(labelled, cache=prediction_cache(predictor, cache_dir))
    evaluated = evaluated_fields(predictor, checkpoint, sha, dataset, root, split, out_dir, labelled)
    names = predictor.class_names
    metrics = multiclass_metrics(
        evaluated["labels"],
        batch.probabilities,
        names,
        groups=list(evaluated["patient_ids"]),
        n_boot=n_boot,
        seed=seed,
        confidence=CONFIDENCE,
    )
    result = MulticlassEvaluationResult(
        model=model, **evaluated, task=task, class_names=names, predictions=batch, metrics=metrics
    )
    for message in result.selection.warnings:
        logger.warning("%s", message)
    _write_outputs(result, labelled, predictor, dataset, n_boot=n_boot, seed=seed, results_csv=results_csv)
    return result


def _write_outputs(
    result: MulticlassEvaluationResult,
    records: Sequence[ImageRecord],
    predictor: Predictor,
    dataset: Dataset,
    *,
    n_boot: int,
    seed: int,
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
    row = multiclass_row(m, task=result.task, **identity(result))
    files["performance_csv"] = write_performance_rows(result, [row], results_csv, when)
    files["metrics_json"] = outputs.write_json(
        out / "metrics.json", _summary(result, predictor, dataset, n_boot=n_boot, seed=seed, when=when)
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
    result: MulticlassEvaluationResult,
    predictor: Predictor,
    dataset: Dataset,
    *,
    n_boot: int,
    seed: int,
    when: str,
) -> dict[str, Any]:
    meta = predictor.meta
    return summary(
        result,
        dataset,
        result.class_names,
        about={"task": result.task, "class_names": list(result.class_names)},
        measured={
            "scored_probability": "softmax(logits / temperature); prediction = argmax",
            "temperature": meta.temperature,
            "metrics": result.metrics.to_dict(),
        },
        checkpoint_meta=checkpoint_meta_summary(
            meta, temperature=meta.temperature, operating_point=meta.extra.get("operating_point")
        ),
        n_boot=n_boot,
        seed=seed,
        when=when,
    )
