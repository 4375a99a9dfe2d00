"""Files an evaluation writes: per-image predictions, classification reports, confusion matrices, plots.

The predictions CSV is the source of truth: every metric in ``metrics.json`` can be recomputed
from its ``label``, ``calibrated_probability`` and ``patient_id`` columns with
``pneumocxr.evaluation`` alone (probabilities are written with ``repr``, which round-trips float64
exactly). ``logit`` is stored too, so temperature scaling can be refitted and a later compare can
reuse the predictions without re-running the model.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import DatasetError
from pneumocxr.evaluation import classification_report, confusion_matrix
from pneumocxr.inference.predictor import PredictionBatch
from pneumocxr.labels import CLASS_NAMES

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = (
    "path",
    "patient_id",
    "label",
    "sublabel",
    "probability",
    "calibrated_probability",
    "prediction",
    "logit",
)


def write_predictions(path: Path, records: Sequence[ImageRecord], batch: PredictionBatch) -> Path:
    """One row per image, in record order (``PREDICTION_COLUMNS``), plus ``spread`` (the std of the
    members' / MC-dropout passes' calibrated probabilities) when the batch has members."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spread = getattr(batch, "spread", None)  # inference.ensemble.EnsembleBatch
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(PREDICTION_COLUMNS + (("spread",) if spread is not None else ()))
        for i, r in enumerate(records):
            writer.writerow(
                [
                    r.display_name,
                    r.patient_id,
                    r.label,
                    r.sublabel,
                    repr(float(batch.probability[i])),
                    repr(float(batch.calibrated_probability[i])),
                    int(batch.prediction[i]),
                    repr(float(batch.logits[i])),
                ]
                + ([repr(float(spread[i]))] if spread is not None else [])
            )
    return path


def read_predictions(path: Path) -> dict[str, list[str]]:
    """Column name → values (strings) of a predictions CSV; DatasetError if it is not one."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = set(PREDICTION_COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(f"{path}: not a predictions file (missing {', '.join(sorted(missing))})")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read the predictions ({exc})") from None
    return {c: [row[c] for row in rows] for c in PREDICTION_COLUMNS}


def _nan_to_none(value: object) -> object:
    """JSON has no NaN: write null (the reason sits beside it)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, np.generic):
        return _nan_to_none(value.item())
    return value


def write_json(path: Path, data: Mapping) -> Path:
    """Strict JSON (NaN → null) with stable key order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_nan_to_none(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_reports(
    out_dir: Path, y: np.ndarray, predictions: Mapping[str, tuple[float, np.ndarray]]
) -> dict[str, Path]:
    """classification_report.{txt,json} and confusion_matrix.json for each threshold kind.

    ``predictions``: threshold kind → (threshold, 0/1 predictions).
    """
    texts, tables, matrices = [], {}, {}
    for kind, (threshold, pred) in predictions.items():
        text, table = classification_report(y, pred, CLASS_NAMES)
        texts.append(f"== threshold {threshold:.6g} ({kind}), calibrated probability >= threshold\n{text}")
        tables[kind] = {"threshold": threshold, "report": table}
        cm = confusion_matrix(y, pred)
        matrices[kind] = {
            "threshold": threshold,
            "rows_true_columns_predicted": list(CLASS_NAMES),
            "matrix": cm.tolist(),
            **dict(zip(("tn", "fp", "fn", "tp"), (int(v) for v in cm.ravel()))),
        }
    txt = out_dir / "classification_report.txt"
    txt.write_text("\n".join(texts), encoding="utf-8")
    return {
        "classification_report_txt": txt,
        "classification_report_json": write_json(out_dir / "classification_report.json", tables),
        "confusion_matrix_json": write_json(out_dir / "confusion_matrix.json", matrices),
    }


def write_plots(
    plots_dir: Path,
    y: np.ndarray,
    batch: PredictionBatch,
    patient_ids: Sequence[str],
    *,
    n_boot: int,
    seed: int,
    title: str,
) -> dict[str, Path]:
    """ROC (CI band), PR, confusion matrix, reliability, histograms: PNG + CSV each, under ``plots_dir``."""
    from pneumocxr.evaluation import plots  # Matplotlib: only when figures are drawn

    p, t = batch.calibrated_probability, batch.threshold
    written = {
        "roc": plots.plot_roc(
            y,
            p,
            plots_dir / "roc.png",
            patient_ids=patient_ids,
            threshold=t,
            n_boot=n_boot,
            seed=seed,
            title=f"ROC — {title}",
        ),
        "precision_recall": plots.plot_precision_recall(
            y, p, plots_dir / "precision_recall.png", threshold=t, title=f"Precision–recall — {title}"
        ),
        "confusion_matrix": plots.plot_confusion_matrix(
            confusion_matrix(y, batch.prediction),
            plots_dir / "confusion_matrix.png",
            title=f"{title}, threshold {t:.3g}",
        ),
        "probability_histogram": plots.plot_probability_histogram(
            y, p, plots_dir / "probability_histogram.png", threshold=t
        ),
    }
    series = {"model": p}
    if batch.temperature != 1.0:
        series = {"uncalibrated": batch.probability, f"temperature-scaled (T={batch.temperature:.3g})": p}
    written["reliability"] = plots.plot_reliability(y, series, plots_dir / "reliability.png")
    for fig in written.values():
        fig.clear()  # free the figure's memory now; the files are written
    return {name: plots_dir / f"{name}.png" for name in written}
