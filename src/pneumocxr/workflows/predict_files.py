"""``predict_images``: P(PNEUMONIA) for image files or folders, one CSV row per image.

The numbers are ``Predictor``'s (the path ``evaluate`` and the API use), so a file predicted here
gets the probability it gets everywhere else. Columns of the CSV:

    path, prediction (class name), calibrated_probability (what the threshold applies to),
    probability (uncalibrated), logit, threshold, and ``spread`` for an ensemble file or
    MC-dropout: the standard deviation of the members' / passes' calibrated probabilities

and beside it ``<csv>.json``: checkpoint (path, sha256, model), threshold, temperature, how the
model was run (``provenance.inference_settings``: TTA, MC-dropout passes and seed) and the files
that could not be decoded (each named with its reason; the others are still predicted).
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

import numpy as np

from pneumocxr.data.image_files import collect_inputs, read_path_manifest
from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import UnsupportedImageError
from pneumocxr.inference.predictor import PredictionBatch, PredictorBase, file_sha256
from pneumocxr.labels import SUBLABEL_UNKNOWN
from pneumocxr.workflows import outputs
from pneumocxr.workflows.provenance import inference_settings

logger = logging.getLogger(__name__)

CHUNK = 256  # files decoded and predicted at a time
COLUMNS = ("path", "prediction", "calibrated_probability", "probability", "logit", "threshold")


@dataclass(frozen=True)
class PredictRun:
    """What ``predict_images`` wrote."""

    csv_path: Path
    json_path: Path
    rows: tuple[dict[str, Any], ...]  # one per predicted file, in input order
    failures: tuple[tuple[str, str], ...]  # (file, why it could not be decoded)
    inference: dict[str, Any]  # provenance.inference_settings


def predict_images(
    checkpoint: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    *,
    predictor: PredictorBase,
    manifest: str | os.PathLike | None = None,
) -> PredictRun:
    """Predict every image in ``inputs`` (files or folders) and ``manifest`` with ``predictor``
    (loaded from ``checkpoint``) into ``out_csv`` and its JSON (module docstring). One process;
    ``predict_shards.predict_launched`` shares the same work between the ranks of a job."""
    files = input_files(inputs, manifest)
    return write_outputs(checkpoint, predictor, out_csv, files, score_files(files, predictor))


def input_files(inputs: Sequence[str | os.PathLike], manifest: str | os.PathLike | None = None) -> list[Path]:
    """The files to predict, in a deterministic order: the named files and folders (each folder
    searched recursively in sorted order), then the manifest's rows in their order."""
    files = collect_inputs(inputs) if inputs or manifest is None else []
    return files + (read_path_manifest(manifest) if manifest is not None else [])


Outcome = dict[str, Any] | str  # a CSV row, or why the file could not be predicted


def score_files(files: Sequence[Path], predictor: PredictorBase) -> list[Outcome]:
    """One outcome per file, in order: its CSV row, or the reason it could not be decoded."""
    records = [ImageRecord(p, label=-1, split="", patient_id="", sublabel=SUBLABEL_UNKNOWN) for p in files]
    outcomes: list[Outcome] = []
    for start in range(0, len(records), CHUNK):
        chunk = records[start : start + CHUNK]
        try:
            outcomes += _rows(chunk, predictor.predict_records(chunk))
        except UnsupportedImageError:  # find the bad file(s); predict the rest one by one
            for record in chunk:
                try:
                    outcomes += _rows([record], predictor.predict_records([record]))
                except UnsupportedImageError as exc:
                    logger.warning("cannot predict %s: %s", record.path, exc.reason)
                    outcomes.append(exc.reason)
    return outcomes


def write_outputs(
    checkpoint: str | os.PathLike,
    predictor: PredictorBase,
    out_csv: str | os.PathLike,
    files: Sequence[Path],
    outcomes: Sequence[Outcome],
    extra: dict[str, Any] | None = None,
) -> PredictRun:
    """The CSV (rows in ``files`` order) and its JSON summary (``extra`` added to it)."""
    rows = [o for o in outcomes if isinstance(o, dict)]
    failures = [(str(f), o) for f, o in zip(files, outcomes, strict=True) if isinstance(o, str)]
    csv_path = Path(out_csv)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    spread = any("spread" in row for row in rows)
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        classes = [f"p_{name}" for name in predictor.class_names]  # calibrated, every class
        writer = csv.DictWriter(fh, fieldnames=[*COLUMNS, *classes, *(("spread",) if spread else ())])
        writer.writeheader()
        writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    settings = inference_settings(predictor)
    meta = predictor.meta
    summary = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "model_name": meta.model_name,
        "threshold": predictor.threshold,
        "threshold_applies_to": "calibrated_probability" if predictor.num_classes == 2 else "none (argmax)",
        "class_names": list(predictor.class_names),
        "temperature": predictor.temperature,
        "inference": settings,
        "n_images": len(rows),
        "failures": [{"path": p, "reason": why} for p, why in failures],
        "predictions_csv": str(csv_path),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    json_path = outputs.write_json(csv_path.with_suffix(".json"), summary)
    return PredictRun(csv_path, json_path, tuple(rows), tuple(failures), settings)


def _rows(records: Sequence[ImageRecord], batch: PredictionBatch) -> list[dict[str, Any]]:
    spread = getattr(batch, "spread", None)  # ensembles and MC-dropout (inference.ensemble.EnsembleBatch)
    rows = []
    for i, record in enumerate(records):
        item = batch[i]
        row: dict[str, Any] = {
            "path": str(record.path),
            "prediction": item.label,
            "calibrated_probability": item.calibrated_probability,
            "probability": item.probability,
            "logit": item.logit,
            "threshold": batch.threshold if not batch.multiclass else "",  # k classes: argmax
            **{f"p_{name}": p for name, p in item.probabilities.items()},
        }
        if spread is not None:
            row["spread"] = float(np.asarray(spread)[i])
        rows.append(row)
    return rows
