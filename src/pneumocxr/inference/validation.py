"""Evaluation splits that are not a folder on disk, named by what they are.

When a dataset has no ``test`` split (the shared Kermany copy withholds it), the only labelled
images a model was not fitted on are

- the patient-level validation split carved from ``train``. It chose the best epoch, the decision
  threshold and the temperature, so its numbers are optimistic. It is rebuilt from the patient list
  the checkpoint records (``extra["split"]["val_patients"]``), not by re-running the splitter, so it
  is exactly the split training used (with any ``limit_train_images``), checked against the
  recorded class counts and hash;
- the official ``val/`` folder (16 images in the Kermany release): never used for selection, but
  far too small to judge a model by.

Both come back as a ``Dataset`` whose split NAME is its label (``CARVED_VALIDATION_SPLIT``,
``"official val (16 images)"``). ``evaluate_checkpoint`` and ``compare_models`` take such a Dataset
in place of a folder, and the name flows into every results row, metrics.json and plot title, so
no validation number can be mistaken for a test number.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pneumocxr.data.discovery import Dataset, discover
from pneumocxr.errors import DatasetError
from pneumocxr.inference.provenance import CARVED_VALIDATION_SPLIT
from pneumocxr.labels import PNEUMONIA

logger = logging.getLogger(__name__)

__all__ = [
    "CARVED_VALIDATION_SPLIT",
    "carved_validation",
    "official_split_label",
    "relabelled_split",
]


def carved_validation(split_info: Mapping[str, Any], data_root: str | os.PathLike | Dataset) -> Dataset:
    """The validation split ``split_info`` records, as a Dataset with split ``CARVED_VALIDATION_SPLIT``.

    DatasetError when the data is not the data the split was carved from (images added, removed
    or relabelled since training): then the model must be retrained on the current data.
    """
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
            "those patients): the data changed since training; retrain on the current data"
        )
    logger.info("rebuilt the carved validation split: %d images of %d patients", len(records), len(found))
    renamed = tuple(replace(r, split=CARVED_VALIDATION_SPLIT) for r in records)
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
