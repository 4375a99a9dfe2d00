"""`ensemble create` of a cv folder takes the held-out patients from cv.json (``training.cv`` records
them), checks them against the folds and the out-of-fold predictions, and rebuilds them from the data
only for a cv folder from before they were recorded. No training: the folder is written by hand."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from tests.conftest import make_kermany_tree
from tests.inference.conftest import write_checkpoint

from pneumocxr.config import DataConfig, RunConfig
from pneumocxr.errors import DatasetError
from pneumocxr.training.cv import OOF_COLUMNS, holdout_split
from pneumocxr.training.datamodule import split_info, split_records
from pneumocxr.workflows.ensemble_create import create_ensemble

K = 3
SPLIT_KEYS = (
    "kind",
    "source",
    "split_seed",
    "val_fraction",
    "limit_train_images",
    "train_counts",
    "val_counts",
    "val_patients",
    "val_patients_sha256",
    "n_oof_images",
)


def cv_folder(tmp_path: Path) -> tuple[Path, Path]:
    """(data root, cv folder): fold checkpoints recording their split, OOF rows for every folded image,
    and a cv.json with ``holdout_split`` as ``training.cv`` writes it."""
    root = make_kermany_tree(
        tmp_path / "cx", splits=("train",), patients_per_class=8, images_per_patient=2, size=(32, 32)
    )
    config = RunConfig(data=DataConfig(root=str(root), val_fraction=0.2))
    cv = tmp_path / "cv"
    development = []
    rows = []
    for fold in range(K):
        train, val = split_records(replace(config.data, folds=K, fold=fold))
        recorded = {"split": split_info(config.data, 0, train, val).as_dict()}
        write_checkpoint(cv / f"fold{fold}" / "best.pt", seed=fold, extra=recorded)
        development += val
        for i, r in enumerate(val):
            p = 0.2 + 0.6 * r.label + 0.01 * i
            row = {
                "path": r.display_name,
                "patient_id": r.patient_id,
                "label": r.label,
                "sublabel": r.sublabel,
            }
            row.update(
                fold=fold, logit=0.0, probability=p, calibrated_probability=p, prediction=int(p >= 0.5)
            )
            rows.append({**row, "threshold": 0.5, "temperature": 1.0})
    with (cv / "oof_predictions.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=OOF_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    saved = {"folds": K, "config": {}, "holdout_split": holdout_split(config, development)}
    (cv / "cv.json").write_text(json.dumps(saved))
    return root, cv


def _drop_holdout(cv: Path) -> None:
    """cv.json as a cross-validation from before the held-out split was recorded."""
    saved = json.loads((cv / "cv.json").read_text())
    del saved["holdout_split"]
    (cv / "cv.json").write_text(json.dumps(saved))


def test_the_recorded_held_out_split_is_what_the_rebuild_from_the_data_gives(tmp_path):
    root, cv = cv_folder(tmp_path)
    recorded = create_ensemble(tmp_path / "a.pt", [cv], device="cpu").split
    assert recorded["kind"] == "cv-holdout" and recorded["val_patients"]
    _, ordinary_val = split_records(DataConfig(root=str(root), val_fraction=0.2))
    assert recorded["val_patients"] == sorted({f"train/{r.patient_id}" for r in ordinary_val})
    # --data (the data moved): rebuilt there, checked against the record, and recorded as the source
    moved = create_ensemble(tmp_path / "m.pt", [cv], data_root=root, device="cpu").split
    assert {k: moved[k] for k in SPLIT_KEYS} == {k: recorded[k] for k in SPLIT_KEYS}
    _drop_holdout(cv)  # an old cv folder: the fallback rebuilds the same split from the data
    rebuilt = create_ensemble(tmp_path / "b.pt", [cv], device="cpu").split
    assert {k: recorded[k] for k in SPLIT_KEYS} == {k: rebuilt[k] for k in SPLIT_KEYS}


def test_the_recorded_split_needs_no_data_and_the_rebuild_does(tmp_path):
    root, cv = cv_folder(tmp_path)
    shutil.rmtree(root)  # the training data is gone (or moved)
    split = create_ensemble(tmp_path / "a.pt", [cv], device="cpu").split
    assert split["kind"] == "cv-holdout" and split["source"] == str(root.resolve())
    _drop_holdout(cv)
    with pytest.raises(DatasetError):
        create_ensemble(tmp_path / "b.pt", [cv], device="cpu")


def test_a_recorded_split_that_overlaps_the_out_of_fold_patients_is_refused(tmp_path):
    _, cv = cv_folder(tmp_path)
    saved = json.loads((cv / "cv.json").read_text())
    with (cv / "oof_predictions.csv").open() as fh:
        folded_patient = next(csv.DictReader(fh))["patient_id"]
    saved["holdout_split"]["val_patients"].append(f"train/{folded_patient}")
    (cv / "cv.json").write_text(json.dumps(saved))
    with pytest.raises(DatasetError, match="holdout_split does not describe"):
        create_ensemble(tmp_path / "a.pt", [cv], device="cpu")
