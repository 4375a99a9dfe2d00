"""``evaluate_checkpoint``: one checkpoint on one split of a dataset, every number with its 95 % CI.

What is measured: the checkpoint's calibrated probability ``sigmoid(logit / T)`` (see
``predictor``). Threshold metrics are reported twice — at the checkpoint's stored threshold
(chosen on validation by training) and at 0.5 — as threshold kinds ``checkpoint`` and
``fixed_0.5``. Intervals come from ``evaluation.metrics_with_ci``: Wilson for proportions,
a patient-level bootstrap for AUC, PR AUC, F1, balanced accuracy, MCC, Brier and ECE. A metric
the data cannot define (AUC on a single-class folder) is NaN with its reason, never a crash.

Output folder (``out_dir``):

    predictions.csv                 one row per image (outputs.PREDICTION_COLUMNS)
    metrics.json                    everything below, plus provenance (checkpoint sha256, data, split)
    metrics.csv                     tidy: threshold_kind, metric, value, low, high, method, note
    classification_report.{txt,json}, confusion_matrix.json
    plots/{roc,precision_recall,confusion_matrix,reliability,probability_histogram}.{png,csv}
    uncertainty/{risk_coverage.{png,csv},uncertainty.csv}   selective accuracy vs coverage, per-image
                                    uncertainty and conformal sets (``workflows.uncertainty_outputs``)

and the rows for ``results_csv`` (default ``out_dir/results/performance_metrics.csv``), see
``results_table`` for the append/replace rule.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pneumocxr.data.discovery import Dataset, discover
from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation import (
    DEFAULT_N_BOOT,
    MetricsCI,
    PrevalenceAdjusted,
    check_prevalence,
    expected_calibration_error,
    metrics_with_ci,
    prevalence_adjusted,
)
from pneumocxr.inference import load_predictor
from pneumocxr.inference.ensemble import EnsemblePredictor
from pneumocxr.inference.predictor import DEFAULT_BATCH_SIZE, PredictionBatch, Predictor, file_sha256
from pneumocxr.labels import CLASS_NAMES
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
from pneumocxr.workflows.operating_rules import check_rule_name, rule_summary, with_threshold_rule
from pneumocxr.workflows.provenance import inference_settings, inference_suffix
from pneumocxr.workflows.results_table import csv_cell, metric_row
from pneumocxr.workflows.uncertainty_outputs import uncertainty_outputs

logger = logging.getLogger(__name__)

FIXED_THRESHOLD = 0.5


@dataclass(frozen=True, kw_only=True)
class EvaluationResult(Evaluated):
    """What ``evaluate_checkpoint`` measured (``Evaluated``: on what, and where it wrote it)."""

    metrics: dict[str, MetricsCI]  # threshold kind ("checkpoint", "fixed_0.5") → metrics with CIs
    # threshold kind → PPV/NPV at the user's prevalence (``evaluate --prevalence``); empty without one
    prevalence_adjusted: dict[str, PrevalenceAdjusted] = field(default_factory=dict)

    def undefined(self, kind: str = "checkpoint") -> dict[str, str]:
        """metric → why it is NaN, at one threshold kind."""
        return {k: e.note for k, e in self.metrics[kind].estimates.items() if np.isnan(e.value)}


def model_label(checkpoint: str | os.PathLike) -> str:
    """``runs/NAME/best.pt`` → ``NAME``; any other file → its stem."""
    path = Path(checkpoint)
    return path.parent.name if path.name == "best.pt" and path.parent.name else path.stem


def records_of_split(dataset: Dataset, split: str) -> list[ImageRecord]:
    """The split's records, or a DatasetError naming the splits that are there."""
    records = dataset.in_split(split)
    if not records:
        present = ", ".join(dataset.splits()) or "none"
        raise DatasetError(
            f"{dataset.root}: no {split!r} split (splits present: {present}); choose one of those"
        )
    return records


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    data_root: str | os.PathLike | Dataset,
    *,
    split: str = "test",
    out_dir: str | os.PathLike,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    results_csv: str | os.PathLike | None = None,
    reuse_predictions: bool = False,
    predictor: Predictor | None = None,
    threshold_rule: str | None = None,
    prevalence: float | None = None,
) -> EvaluationResult:
    """Evaluate ``checkpoint`` on ``split`` of ``data_root`` into ``out_dir`` (module docstring).

    ``reuse_predictions``: when ``out_dir`` already holds predictions of this exact checkpoint
    (sha256) for the same images, use them instead of running the model again. ``predictor``: an
    already loaded one for ``checkpoint`` (saves loading it twice). A k-class checkpoint is measured
    by ``evaluate_multiclass`` and returns a ``MulticlassEvaluationResult`` (never reused).
    ``threshold_rule``: decide at that rule's stored threshold instead of the checkpoint's (the
    model is named ``NAME@RULE``; a checkpoint without stored rules is refused). ``prevalence``:
    also report PPV/NPV at that prevalence (``evaluation.prevalence``). Both: binary task only.
    """
    if prevalence is not None:
        prevalence = check_prevalence(prevalence)
    if threshold_rule is not None:
        check_rule_name(threshold_rule)
    out_dir = Path(out_dir)
    checkpoint = Path(checkpoint)
    # A Dataset is taken as given: evaluation splits that are no folder (inference.validation).
    dataset = data_root if isinstance(data_root, Dataset) else discover(data_root)  # fails fast
    root = dataset.root if isinstance(data_root, Dataset) else data_root
    records = records_of_split(dataset, split)
    predictor = predictor or load_predictor(checkpoint, device=device, batch_size=batch_size)
    sha = file_sha256(checkpoint)
    settings = inference_settings(predictor)  # TTA / MC-dropout: named in the results and metrics.json
    if len(predictor.meta.class_names) > 2:  # -- k-class task (inference/evaluate_multiclass.py) --
        from pneumocxr.workflows.evaluate_multiclass import evaluate_multiclass

        if threshold_rule is not None or prevalence is not None:
            raise ConfigError(
                f"{checkpoint} decides by argmax over {len(predictor.meta.class_names)} classes: "
                "--threshold-rule and --prevalence apply to the binary (NORMAL/PNEUMONIA) task only"
            )

        return evaluate_multiclass(  # type: ignore[return-value]  (a MulticlassEvaluationResult)
            predictor,
            checkpoint,
            sha,
            dataset,
            root,
            split,
            records,
            out_dir,
            model=model_label(checkpoint) + inference_suffix(settings),
            n_boot=n_boot,
            seed=seed,
            cache_dir=cache_dir,
            results_csv=results_csv,
        )
    suffix = inference_suffix(settings)
    if threshold_rule is not None:
        predictor = with_threshold_rule(predictor, threshold_rule)
        suffix += f"@{threshold_rule}"
    # Ensembles: predictions.csv lacks the members' probabilities (their spread), so never reused.
    reuse = reuse_predictions and not isinstance(predictor, EnsemblePredictor)
    batch = _reusable(out_dir, sha, dataset, split, records, predictor) if reuse else None
    reused = batch is not None
    if batch is None:
        logger.info("predicting %d %s images of %s", len(records), split, dataset.root)
        batch = predictor.predict_records(records, cache=prediction_cache(predictor, cache_dir))
    metrics = _metrics(records, batch, n_boot, seed)
    result = EvaluationResult(
        model=model_label(checkpoint) + suffix,
        **evaluated_fields(predictor, checkpoint, sha, dataset, root, split, out_dir, records),
        predictions=batch,
        metrics=metrics,
        prevalence_adjusted=_at_prevalence(records, batch, metrics, prevalence, n_boot, seed),
        reused_predictions=reused,
    )
    for message in result.selection.warnings:
        logger.warning("%s", message)
    _write_outputs(result, records, predictor, dataset, n_boot=n_boot, seed=seed, results_csv=results_csv)
    return result


def _metrics(
    records: list[ImageRecord], batch: PredictionBatch, n_boot: int, seed: int
) -> dict[str, MetricsCI]:
    y = np.array([r.label for r in records], dtype=np.int64)
    patients = [r.patient_id for r in records]
    p = batch.calibrated_probability
    return {
        kind: metrics_with_ci(y, p, patients, t, n_boot=n_boot, seed=seed, confidence=CONFIDENCE)
        for kind, t in (("checkpoint", batch.threshold), ("fixed_0.5", FIXED_THRESHOLD))
    }


def _at_prevalence(
    records: list[ImageRecord],
    batch: PredictionBatch,
    metrics: dict[str, MetricsCI],
    prevalence: float | None,
    n_boot: int,
    seed: int,
) -> dict[str, PrevalenceAdjusted]:
    """PPV/NPV at ``prevalence`` for each threshold kind (none without a prevalence)."""
    if prevalence is None:
        return {}
    y = np.array([r.label for r in records], dtype=np.int64)
    patients = [r.patient_id for r in records]
    return {
        kind: prevalence_adjusted(
            y,
            batch.calibrated_probability,
            patients,
            ci.info["threshold"],
            prevalence,
            n_boot=n_boot,
            seed=seed,
            confidence=CONFIDENCE,
        )
        for kind, ci in metrics.items()
    }


def _reusable(
    out_dir: Path, sha: str, dataset: Dataset, split: str, records: list[ImageRecord], predictor: Predictor
) -> PredictionBatch | None:
    """Predictions saved in ``out_dir`` by this checkpoint for exactly these images, else None."""
    meta_path, csv_path = out_dir / "metrics.json", out_dir / "predictions.csv"
    if not (meta_path.is_file() and csv_path.is_file()):
        return None
    try:
        saved = json.loads(meta_path.read_text(encoding="utf-8"))
        columns = outputs.read_predictions(csv_path)
    except (OSError, ValueError, DatasetError) as exc:
        logger.info("not reusing %s (%s)", out_dir, exc)
        return None
    same = (
        saved.get("checkpoint_sha256") == sha
        and saved.get("data") == str(Path(dataset.root).resolve())
        and saved.get("split") == split
        and saved.get("inference", inference_settings(None)) == inference_settings(predictor)
        and columns["path"] == [r.display_name for r in records]
        and columns["label"] == [str(r.label) for r in records]
    )
    if not same:
        logger.info("predictions in %s are for another checkpoint or other images: predicting again", out_dir)
        return None
    logger.info("reusing the per-image predictions in %s", csv_path)
    logits = np.array([float(v) for v in columns["logit"]])
    return PredictionBatch.from_logits(logits, predictor.temperature, predictor.threshold)


def _write_outputs(
    result: EvaluationResult,
    records: list[ImageRecord],
    predictor: Predictor,
    dataset: Dataset,
    *,
    n_boot: int,
    seed: int,
    results_csv: str | os.PathLike | None,
) -> None:
    out, batch, y = result.out_dir, result.predictions, result.labels
    files = result.files
    files["predictions_csv"] = outputs.write_predictions(out / "predictions.csv", records, batch)
    thresholds = {kind: ci.info["threshold"] for kind, ci in result.metrics.items()}
    preds = {
        kind: (t, (batch.calibrated_probability >= t).astype(np.int64)) for kind, t in thresholds.items()
    }
    files.update(outputs.write_reports(out, y, preds))
    files["metrics_csv"] = _write_metrics_csv(out / "metrics.csv", result.metrics)
    title = f"{result.model} on {result.split} (n={result.n_images})"
    files.update(
        outputs.write_plots(
            out / "plots", y, batch, result.patient_ids, n_boot=n_boot, seed=seed, title=title
        )
    )
    rows = [metric_row(ci, **identity(result), threshold_kind=kind) for kind, ci in result.metrics.items()]
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    files["performance_csv"] = write_performance_rows(result, rows, results_csv, when)
    # -- uncertainty (ensembles/conformal): risk–coverage, ensemble spread, conformal prediction sets --
    report = uncertainty_outputs(out / "uncertainty", y, batch, predictor.meta, ids=result.paths, title=title)
    files.update(report.files)
    summary = _summary(result, predictor, dataset, n_boot=n_boot, seed=seed, when=when)
    summary["uncertainty"] = report.summary
    summary["inference"] = inference_settings(predictor)
    files["metrics_json"] = outputs.write_json(out / "metrics.json", summary)


def _write_metrics_csv(path: Path, metrics: dict[str, MetricsCI]) -> Path:
    rows = [
        {"threshold_kind": kind, "threshold": ci.info["threshold"], **row}
        for kind, ci in metrics.items()
        for row in ci.rows()
    ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    return path


def _summary(
    result: EvaluationResult, predictor: Predictor, dataset: Dataset, *, n_boot: int, seed: int, when: str
) -> dict[str, Any]:
    meta, batch, y = predictor.meta, result.predictions, result.labels
    per_kind = {}
    for kind, ci in result.metrics.items():
        per_kind[kind] = {
            "threshold": ci.info["threshold"],
            "counts": {k: ci.info[k] for k in ("tp", "fp", "tn", "fn")},
            "n_degenerate_resamples": ci.info["n_degenerate"],
            "estimates": {k: vars(e) for k, e in ci.estimates.items()},
            "undefined": result.undefined(kind),
        }
    measured = {
        "scored_probability": "calibrated_probability = sigmoid(logit / temperature)",
        "temperature": batch.temperature,
        "threshold_applies_to": "calibrated_probability",
        "metrics": per_kind,
        "threshold_rule": rule_summary(meta),
        "prevalence_adjusted": {kind: pa.to_dict() for kind, pa in result.prevalence_adjusted.items()},
        "uncalibrated": {
            "brier": float(np.mean((batch.probability - y) ** 2)),
            "ece": expected_calibration_error(y, batch.probability),
        },
    }
    checkpoint_meta = checkpoint_meta_summary(
        meta,
        threshold=rule_summary(meta)["checkpoint_threshold"],  # its own, whatever --threshold-rule
        temperature=meta.temperature,
        # how it was chosen on validation: train() stores "operating_point", ensembles "threshold_choice"
        threshold_choice=meta.extra.get("operating_point") or meta.extra.get("threshold_choice"),
    )
    return summary(
        result,
        dataset,
        CLASS_NAMES,
        about={},
        measured=measured,
        checkpoint_meta=checkpoint_meta,
        n_boot=n_boot,
        seed=seed,
        when=when,
    )
