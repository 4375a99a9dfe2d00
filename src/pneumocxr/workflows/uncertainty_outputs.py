"""Uncertainty outputs of an evaluation: risk–coverage, per-image uncertainty and conformal sets.

Evaluation output, not prediction: it lives above the core (``pneumocxr.inference``), which stays
free of scipy and scikit-learn.
"""

from __future__ import annotations

import os

import numpy as np

from pneumocxr.evaluation.conformal import ConformalCalibration, calibrate
from pneumocxr.evaluation.uncertainty import UncertaintyReport, uncertainty_report
from pneumocxr.inference.ensemble import EnsembleBatch
from pneumocxr.inference.predictions import PredictionBatch
from pneumocxr.models import CheckpointMeta


def stored_calibration(meta: CheckpointMeta) -> tuple[ConformalCalibration | None, str]:
    """The conformal rule from the calibration predictions an ensemble file stores, and a note.

    A plain training checkpoint stores none (the note says how to get one).
    """
    data = meta.extra.get("conformal")
    if not isinstance(data, dict) or not data.get("labels"):
        return None, (
            f"{meta.path} stores no calibration predictions, so no conformal sets; wrap it as a one-member "
            "ensemble (pneumocxr ensemble create OUT.pt RUN) to calibrate them on its validation split"
        )
    calibration = calibrate(
        np.asarray(data["labels"], dtype=np.int64),
        np.asarray(data["probabilities"], dtype=np.float64),
        float(data["alpha"]),
        method=str(data.get("method", "lac")),
        class_conditional=bool(data.get("class_conditional", False)),
    )
    note = f"calibrated on {len(data['labels'])} {data.get('source', 'validation')} predictions"
    return calibration, note


def uncertainty_outputs(
    out_dir: str | os.PathLike,
    y: np.ndarray,
    batch: PredictionBatch,
    meta: CheckpointMeta,
    *,
    ids,
    title: str,
) -> UncertaintyReport:
    """Risk–coverage, per-image uncertainty and (when stored) conformal sets for an evaluation."""
    calibration, note = stored_calibration(meta)
    members = batch.member_probabilities if isinstance(batch, EnsembleBatch) else None
    return uncertainty_report(
        out_dir,
        y,
        batch.calibrated_probability,
        batch.threshold,
        ids=list(ids),
        member_probabilities=members,
        calibration=calibration,
        calibration_note=note,
        title=title,
    )
