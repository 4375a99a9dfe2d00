"""Evaluation splits that are not a folder on disk, named by what they are.

When a dataset has no ``test`` split (the shared Kermany copy withholds it), the only labelled
images a model was not fitted on are

- the patient-level validation split carved from ``train``. It chose the best epoch, the decision
  threshold and the temperature, so its numbers are optimistic. It is rebuilt from the patient list
  the checkpoint records (``extra["split"]["val_patients"]``), not by re-running the splitter, so it
  is exactly the split training used (with any ``limit_train_images``), checked against the
  recorded class counts and hash;
- for an ensemble of the folds of a cross-validation (``pneumocxr ensemble create OUT.pt CVDIR``):
  the patients ``pneumocxr cv`` kept out of every fold (the same patients an ordinary run with the
  same ``data.val_fraction``/``split_seed`` validates on). No fold trained or was selected on them
  and the ensemble's threshold/calibration come from out-of-fold predictions: an honest estimate,
  labelled ``HELDOUT_VALIDATION_SPLIT``;
- the official ``val/`` folder (16 images in the Kermany release): never used for selection, but
  far too small to judge a model by.

Each comes back as a ``Dataset`` whose split NAME is its label (``CARVED_VALIDATION_SPLIT``,
``HELDOUT_VALIDATION_SPLIT``, ``"official val (16 images)"``). ``recorded_validation`` picks the
right one for a checkpoint or ensemble file (what ``--split validation`` means on the command
line). ``evaluate_checkpoint`` and ``compare_models`` take such a Dataset in place of a folder,
and the name flows into every results row, metrics.json and plot title, so no validation number
can be mistaken for a test number.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pneumocxr.data.discovery import Dataset, discover
from pneumocxr.errors import CheckpointError, DatasetError
from pneumocxr.inference.onnx_runtime import is_onnx_file, read_sidecar
from pneumocxr.labels import PNEUMONIA
from pneumocxr.models.ensemble_file import read_file
from pneumocxr.workflows.provenance import CARVED_VALIDATION_SPLIT, HELDOUT_VALIDATION_SPLIT

logger = logging.getLogger(__name__)

# ``--split validation``: the split the checkpoint records, never a folder. A dataset's own
# ``val/`` (or ``validation/``) folder is discovered as split ``val``: ``--split val`` evaluates it.
VALIDATION = "validation"
FOLDER_HINT = "for the dataset's own val/ (or validation/) folder use --split val"

__all__ = [
    "CARVED_VALIDATION_SPLIT",
    "FOLDER_HINT",
    "HELDOUT_VALIDATION_SPLIT",
    "VALIDATION",
    "carved_validation",
    "held_out_validation",
    "official_split_label",
    "recorded_split",
    "recorded_validation",
    "relabelled_split",
    "shared_validation",
]


def carved_validation(split_info: Mapping[str, Any], data_root: str | os.PathLike | Dataset) -> Dataset:
    """The validation split ``split_info`` records, as a Dataset with split ``CARVED_VALIDATION_SPLIT``.

    DatasetError when the data is not the data the split was carved from (images added, removed
    or relabelled since training): then the model must be retrained on the current data.
    """
    return _rebuilt(split_info, data_root, CARVED_VALIDATION_SPLIT)


def held_out_validation(split_info: Mapping[str, Any], data_root: str | os.PathLike | Dataset) -> Dataset:
    """The patients a cross-validation held out of every fold (``split_info["kind"] == "cv-holdout"``,
    recorded by ``ensemble_create``), as a Dataset with split ``HELDOUT_VALIDATION_SPLIT``."""
    if split_info.get("kind") != "cv-holdout":
        raise CheckpointError(
            "this split was not held out of a cross-validation (it chose the model): use carved_validation"
        )
    return _rebuilt(split_info, data_root, HELDOUT_VALIDATION_SPLIT)


def recorded_split(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """``extra["split"]`` of a checkpoint or ensemble file (read as data; tensors memory-mapped), or
    of the checkpoint an ONNX model was exported from (its sidecar carries the record)."""
    if is_onnx_file(checkpoint):
        record = read_sidecar(checkpoint).get("checkpoint_record") or {}
        split = (record.get("extra") or {}).get("split")
        return dict(split) if isinstance(split, Mapping) else None
    split = (read_file(checkpoint, mmap=True).get("extra") or {}).get("split")
    return dict(split) if isinstance(split, Mapping) else None


def recorded_validation(checkpoint: str | os.PathLike, data_root: str | os.PathLike | Dataset) -> Dataset:
    """What ``--split validation`` evaluates for ``checkpoint``: the held-out split of a CV ensemble,
    else the validation split carved from train that chose the model (labelled optimistic)."""
    split = recorded_split(checkpoint)
    if split and split.get("val_patients"):
        if split.get("kind") == "cv-holdout":
            return held_out_validation(split, data_root)
        return carved_validation(split, data_root)
    if split and split.get("kind") == "out-of-fold":
        why = (
            f"it is an ensemble of a cross-validation that held no patients out of its folds "
            f"({split.get('no_holdout', 'none recorded')}); run `pneumocxr cv` with data.val_fraction > 0 "
            "(the default 0.15) and re-create the ensemble, or evaluate a test split"
        )
    elif split:
        why = (
            "it records no validation patients (an ensemble file made by an older pneumocxr): "
            "re-create it with `pneumocxr ensemble create`"
        )
    else:
        why = (
            "it records no training split (not written by `pneumocxr train`/`cv`/`ensemble create`), "
            "so its validation patients are unknown"
        )
    raise CheckpointError(f"--split validation: {checkpoint}: {why}; {FOLDER_HINT}")


def shared_validation(
    checkpoints: Sequence[str | os.PathLike], data_root: str | os.PathLike | Dataset
) -> list[Dataset]:
    """``recorded_validation`` of each model, refusing models that record different patients.

    The datasets hold the same images but may be labelled differently (an ordinary checkpoint's
    optimistic carved split and a CV ensemble's held-out split can be the same patients).
    """
    dataset = data_root if isinstance(data_root, Dataset) else discover(data_root)
    found = [(Path(c), recorded_split(c) or {}) for c in checkpoints]
    first_path, first = found[0]
    for path, split in found[1:]:
        if split.get("val_patients_sha256") != first.get("val_patients_sha256"):
            raise DatasetError(
                f"--split validation: {path} and {first_path} record different validation patients "
                f"({_describe(split)} vs {_describe(first)}), so no one validation split is fair to both; "
                "train them with the same data.root, data.split_seed and data.val_fraction (a cv with those "
                "settings holds out the same patients), or compare them on a test split; "
                f"{FOLDER_HINT}"
            )
    return [recorded_validation(path, dataset) for path, _ in found]


def _describe(split: Mapping[str, Any]) -> str:
    if not split.get("val_patients"):
        return "none recorded"
    counts = split.get("val_counts") or ["?", "?"]
    return (
        f"{len(split['val_patients'])} patients, {counts[0]} NORMAL + {counts[1]} PNEUMONIA images, "
        f"sha256 {str(split.get('val_patients_sha256'))[:12]}"
    )


def _rebuilt(split_info: Mapping[str, Any], data_root: str | os.PathLike | Dataset, label: str) -> Dataset:
    """The recorded patients' train images, checked against the recorded counts and hash, as ``label``."""
    dataset = data_root if isinstance(data_root, Dataset) else discover(data_root)
    wanted = set(split_info["val_patients"])  # "train/<patient id>"
    records = [r for r in dataset.in_split("train") if f"{r.split}/{r.patient_id}" in wanted]
    n_pos = sum(1 for r in records if r.label == PNEUMONIA)
    counts = [len(records) - n_pos, n_pos]
    found = sorted({f"{r.split}/{r.patient_id}" for r in records})
    digest = hashlib.sha256("\n".join(found).encode()).hexdigest()
    recorded = [int(c) for c in split_info.get("val_counts", counts)]
    if counts != recorded or digest != split_info.get("val_patients_sha256", digest):
        raise DatasetError(
            f"the validation split recorded at training ({recorded[0]} NORMAL, {recorded[1]} PNEUMONIA "
            f"images of {len(wanted)} patients, carved from {split_info.get('source')}) is not in "
            f"{dataset.root} now ({counts[0]} NORMAL, {counts[1]} PNEUMONIA images of {len(found)} of "
            "those patients): the data changed since training; retrain on the current data (or pass the "
            "--data the model was trained on)"
        )
    logger.info("rebuilt the split %r: %d images of %d patients", label, len(records), len(found))
    renamed = tuple(replace(r, split=label) for r in records)
    return Dataset(root=dataset.root, layout=dataset.layout, records=renamed)


def official_split_label(split: str, n_images: int) -> str:
    """``official val (16 images)``: the folder's name and how little it can tell."""
    return f"official {split} ({n_images} images)"


def relabelled_split(dataset: Dataset, split: str, label: str | None = None) -> Dataset:
    """``split`` of ``dataset`` alone, renamed ``label`` (default ``official_split_label``)."""
    records = dataset.in_split(split)
    if not records:
        present = ", ".join(dataset.splits())
        raise DatasetError(f"{dataset.root}: no {split!r} split (splits present: {present})")
    name = label or official_split_label(split, len(records))
    renamed = tuple(replace(r, split=name) for r in records)
    return Dataset(root=dataset.root, layout=dataset.layout, records=renamed)
