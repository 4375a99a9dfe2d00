"""What was evaluated, and could the evaluated images have chosen the model?

Reported numbers are only honest when the images they come from played no part in training or
model selection. pneumocxr training fits on the dataset's ``train`` folder and selects (best
epoch, threshold, temperature) on a patient-level validation split carved from that same folder
(``extra["split"]`` in the checkpoint records which). So:

- evaluating the carved validation split (``CARVED_VALIDATION_SPLIT``, see ``validation``) chose
  the model: ``could_have_been_used_for_selection = True``, said in a note (an expected, labelled use);
- evaluating the patients a cross-validation held out of every fold (``HELDOUT_VALIDATION_SPLIT``)
  with the ensemble of its folds: no fold trained or was selected on them and the ensemble's
  threshold/calibration come from out-of-fold predictions, so False, said in a note;
- evaluating ``train`` of the dataset a checkpoint was trained on measures fit, not performance:
  a warning, and ``could_have_been_used_for_selection = True``;
- ``val``/``test`` of that dataset were never read by training: False (the official ``val`` folder
  is not used for selection either);
- another dataset is external validation: False, and said so;
- a checkpoint without split information: None (unknown), with a warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pneumocxr.data.discovery import Dataset
from pneumocxr.models import CheckpointMeta

logger = logging.getLogger(__name__)

SMALL_SPLIT = 50  # fewer images than this: intervals are wide, say so
# The split name under which inference.validation evaluates the validation split carved from train:
# the name is the label, so every table row and plot title says what the numbers are.
CARVED_VALIDATION_SPLIT = "validation (used for model selection: optimistic)"
# The patients `pneumocxr cv` kept out of every fold, evaluated with the ensemble of those folds.
HELDOUT_VALIDATION_SPLIT = "held-out validation (no fold trained or selected on it)"


@dataclass(frozen=True)
class Selection:
    """Whether the evaluated split could have been used to train or select the model."""

    could_have_been_used_for_selection: bool | None  # None = the checkpoint does not say
    trained_on: str | None  # dataset root recorded in the checkpoint
    same_dataset: bool | None  # the evaluated data is the one trained on
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        data = asdict(self)
        return {**data, "notes": list(self.notes), "warnings": list(self.warnings)}


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _same_dataset(source: str, data_root: str | os.PathLike, dataset: Dataset) -> bool:
    """The recorded training root is the evaluated root, or one holds the other (nested Kaggle trees)."""
    trained = _resolved(source)
    for candidate in {_resolved(data_root), _resolved(dataset.root)}:
        if trained == candidate or trained in candidate.parents or candidate in trained.parents:
            return True
    return False


def selection_check(
    meta: CheckpointMeta, data_root: str | os.PathLike, dataset: Dataset, split: str
) -> Selection:
    """Could ``split`` of ``dataset`` have trained or selected this checkpoint? (module docstring)"""
    split_info = meta.extra.get("split") if isinstance(meta.extra.get("split"), dict) else None
    source = str(split_info["source"]) if split_info and split_info.get("source") else None
    n = len(dataset.in_split(split))
    notes: list[str] = []
    warnings: list[str] = []
    if n < SMALL_SPLIT:
        notes.append(f"only {n} images in split {split!r}: confidence intervals are wide")
    if source is None:
        used = split == "train" or None
        warnings.append(
            f"{meta.path} records no training split, so it cannot be verified that {split!r} was not "
            "used for training or model selection"
        )
        return Selection(used, None, None, tuple(notes), tuple(warnings))
    same = _same_dataset(source, data_root, dataset)
    if same and split == "train":
        warnings.append(
            f"split 'train' of {dataset.root} is what this model was trained on and selected on (its "
            "validation split is carved from it): these metrics measure fit, not performance on new "
            "patients; evaluate 'test' for that"
        )
        return Selection(True, source, True, tuple(notes), tuple(warnings))
    # The two recorded splits were rebuilt from the checkpoint's patient list and checked against its
    # counts and hash (inference.validation), so they are the recorded images even if the folder moved.
    if split == CARVED_VALIDATION_SPLIT:
        notes.append(
            "the patient-level validation split carved from 'train' chose this model's epoch, threshold "
            "and temperature: its metrics are optimistic; only a held-out test split measures performance"
        )
        return Selection(True, source, same, tuple(notes), tuple(warnings))
    if split == HELDOUT_VALIDATION_SPLIT and split_info.get("kind") == "cv-holdout":
        notes.append(
            "held-out validation: the cross-validation kept these patients out of every fold (no fold "
            "trained or was selected on them) and the ensemble's threshold and conformal calibration come "
            "from out-of-fold predictions, so these metrics are not optimistic, unless the recipe itself "
            "was tuned on this split (pneumocxr tune selects on the same patient-level validation split)"
        )
        return Selection(False, source, same, tuple(notes), tuple(warnings))
    if same:
        notes.append(
            f"split {split!r} was not read by training (fit on 'train', selected on a patient-level "
            "validation split carved from 'train')"
        )
    else:
        notes.append(f"external validation: trained on {source}, evaluated on {dataset.root}")
    return Selection(False, source, same, tuple(notes), tuple(warnings))


# ---- how the model was run: TTA / MC-dropout change the numbers, so they travel with them -------------


def inference_settings(predictor: object) -> dict[str, object]:
    """What ``predictor`` does beyond one plain forward pass (for metrics.json and result names).

    ``threshold_chosen_with_these_settings``: the stored threshold (and temperature) were chosen on
    plain predictions, unless an ensemble file records that its threshold was chosen with TTA.
    """
    from pneumocxr.inference.ensemble import TTA_VIEWS, TTAModel  # imports predictor: not at module load

    model = getattr(predictor, "model", None)
    tta = bool(getattr(predictor, "tta", False)) or isinstance(model, TTAModel)
    passes = int(getattr(predictor, "mc_passes", 0))
    meta = getattr(predictor, "meta", None)
    stored_tta = bool(meta.extra.get("threshold_chosen_with_tta", False)) if meta is not None else False
    settings: dict[str, object] = {
        "tta": tta,
        "tta_views": [list(v) for v in TTA_VIEWS] if tta else [],
        "mc_dropout_passes": passes,
        "mc_dropout_seed": getattr(predictor, "mc_seed", None) if passes else None,
        "threshold_chosen_with_these_settings": tta == stored_tta and not passes,
        "runtime": str(getattr(predictor, "runtime", "torch")),  # "onnx": an exported graph on ONNX Runtime
    }
    return settings


def inference_suffix(settings: dict[str, object]) -> str:
    """``+tta``, ``+mc20``, ``+tta+mc20`` or "": appended to the model's name in every result row,
    so numbers with and without TTA / MC-dropout are never mistaken for one another."""
    suffix = "+tta" if settings.get("tta") else ""
    passes = int(settings.get("mc_dropout_passes") or 0)
    return suffix + (f"+mc{passes}" if passes else "")
