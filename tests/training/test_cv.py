"""Cross-validation: folds hold out whole patients, every image is predicted out-of-fold exactly once,
the OOF predictions are what the fold model predicts, and a re-run resumes instead of retraining."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.conftest import make_kermany_tree

from pneumocxr.cli.main import main
from pneumocxr.config import DataConfig, RunConfig
from pneumocxr.data.discovery import discover
from pneumocxr.data.splits import patient_key
from pneumocxr.errors import ConfigError
from pneumocxr.inference import load_predictor
from pneumocxr.models import load_checkpoint
from pneumocxr.training.cv import holdout_split
from pneumocxr.training.datamodule import split_info, split_records

K = 3
SETTINGS = {
    "model": {"name": "custom_cnn", "image_size": 32},
    "train": {"max_epochs": 1, "batch_size": 8, "precision": "32", "accelerator": "cpu"},
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    """A 3-fold cross-validation through the CLI: (data root, config file, cv folder, printout)."""
    base = tmp_path_factory.mktemp("cv")
    root = make_kermany_tree(
        base / "cx", splits=("train",), patients_per_class=8, images_per_patient=2, size=(36, 36)
    )
    config = base / "cv.yaml"
    config.write_text(yaml.safe_dump({**SETTINGS, "data": {"root": str(root)}}))
    out = base / "cv"
    code, printed = run_cli(
        "cv", "--config", str(config), "--folds", str(K), "--out", str(out), "--no-progress"
    )
    assert code == 0
    return root, config, out, printed


def test_config_folds_hold_out_every_patient_exactly_once(tmp_path):
    root = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=7, images_per_patient=3)
    records = discover(root).in_split("train")
    seen: dict[tuple[str, str], int] = {}
    held_out = []
    for fold in range(K):
        train, val = split_records(DataConfig(root=str(root), val_fraction=0, folds=K, fold=fold))
        assert {patient_key(r) for r in train}.isdisjoint({patient_key(r) for r in val})
        assert sorted(r.path for r in (*train, *val)) == sorted(r.path for r in records)
        assert {r.label for r in val} == {0, 1}  # stratified: both classes in every fold
        for key in {patient_key(r) for r in val}:
            assert key not in seen, f"patient {key} validates in folds {seen.get(key)} and {fold}"
            seen[key] = fold
        held_out += [r.path for r in val]
    assert sorted(held_out) == sorted(r.path for r in records)  # each image out-of-fold exactly once


def test_folds_never_see_the_ordinary_validation_patients(tmp_path):
    root = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=10, images_per_patient=2)
    _, ordinary_val = split_records(DataConfig(root=str(root), val_fraction=0.2))
    holdout = {patient_key(r) for r in ordinary_val}
    assert holdout
    folded = []
    for fold in range(K):
        train, val = split_records(DataConfig(root=str(root), val_fraction=0.2, folds=K, fold=fold))
        assert holdout.isdisjoint(patient_key(r) for r in (*train, *val))
        folded += [r.path for r in val]
    every = {r.path for r in discover(root).in_split("train")}
    assert sorted(folded) == sorted(every - {r.path for r in ordinary_val})


@pytest.mark.parametrize("folds, fold", [(1, 0), (3, 3), (3, -1)])
def test_impossible_fold_settings_are_config_errors(kermany_tree, folds, fold):
    with pytest.raises(ConfigError, match=r"data\.folds"):
        split_records(DataConfig(root=str(kermany_tree), folds=folds, fold=fold))


@pytest.mark.slow
def test_out_of_fold_predictions_cover_each_development_image_once(cv_run):
    root, _, out, printed = cv_run
    rows = read_csv(out / "oof_predictions.csv")
    _, held_out = split_records(DataConfig(root=str(root)))  # the ordinary validation split: in no fold
    paths = sorted({str(r.path) for r in discover(root).in_split("train")} - {str(r.path) for r in held_out})
    assert [r["path"] for r in rows] == paths
    fold_of_patient: dict[str, set[str]] = {}
    for r in rows:
        fold_of_patient.setdefault(r["patient_id"], set()).add(r["fold"])
    assert all(len(folds) == 1 for folds in fold_of_patient.values())  # a patient never split
    assert {r["fold"] for r in rows} == {str(i) for i in range(K)}
    assert "mean ± std over 3 folds" in printed and "pooled out-of-fold" in printed


@pytest.mark.slow
def test_oof_predictions_are_what_the_fold_model_predicts(cv_run):
    root, _, out, _ = cv_run
    rows = read_csv(out / "oof_predictions.csv")
    for fold in range(K):
        _, meta = load_checkpoint(out / f"fold{fold}" / "best.pt")
        assert (meta.config["data"]["folds"], meta.config["data"]["fold"]) == (K, fold)
        _, val = split_records(DataConfig(root=str(root), folds=K, fold=fold))
        batch = load_predictor(out / f"fold{fold}" / "best.pt", device="cpu").predict_records(val)
        mine = {r["path"]: r for r in rows if r["fold"] == str(fold)}
        assert sorted(mine) == sorted(str(r.path) for r in val)
        got = np.array([float(mine[str(r.path)]["calibrated_probability"]) for r in val])
        np.testing.assert_array_equal(got, batch.calibrated_probability)
        assert all(float(mine[str(r.path)]["threshold"]) == meta.threshold for r in val)


@pytest.mark.slow
def test_cv_json_records_the_held_out_patients_as_training_records_its_split(cv_run, tmp_path):
    root, _, out, _ = cv_run
    held = json.loads((out / "cv.json").read_text())["holdout_split"]
    ordinary = split_info(DataConfig(root=str(root)), 0, *split_records(DataConfig(root=str(root))))
    # the patients (and settings) an ordinary run with the same recipe validates on: in no fold
    assert held["kind"] == "cv-holdout" and held["val_patients"]
    for key in ("source", "split_seed", "val_fraction", "val_patients", "val_patients_sha256", "val_counts"):
        assert held[key] == ordinary.as_dict()[key], key
    oof = read_csv(out / "oof_predictions.csv")
    assert sum(held["train_counts"]) == len(oof)  # train_* = what the folds split
    assert not {r["patient_id"] for r in oof} & {p.split("/")[1] for p in held["val_patients"]}
    # data.val_fraction=0 folds every image: nothing held out
    assert holdout_split(RunConfig(data=DataConfig(root=str(root), val_fraction=0.0)), []) is None


@pytest.mark.slow
def test_metrics_table_has_each_fold_and_mean_and_std(cv_run):
    _, _, out, _ = cv_run
    table = read_csv(out / "cv_metrics.csv")
    assert [r["fold"] for r in table] == ["0", "1", "2", "mean", "std"]
    aucs = [float(r["roc_auc"]) for r in table[:K]]
    assert float(table[K]["roc_auc"]) == pytest.approx(np.mean(aucs))
    assert float(table[K + 1]["roc_auc"]) == pytest.approx(np.std(aucs, ddof=1))
    assert "± " in (out / "cv_metrics.md").read_text()
    # each threshold rule's spread over the folds (training/cv_rules.py), in the table and cv.json
    assert "| bootstrap_median |" in (out / "cv_metrics.md").read_text()
    rules = json.loads((out / "cv.json").read_text())["threshold_rules"]
    assert [f["fold"] for f in rules["per_fold"]] == list(range(K)) and "youden_edge" in rules["summary"]


@pytest.mark.slow
def test_rerun_skips_finished_folds_and_resumes_an_unfinished_one(cv_run, tmp_path):
    _, config, out, _ = cv_run
    copy = tmp_path / "cv"
    shutil.copytree(out, copy)
    before = read_csv(copy / "oof_predictions.csv")
    (copy / "fold1" / "fold_result.json").unlink()  # as if killed after training, before finishing
    (copy / "fold1" / "oof_predictions.csv").unlink()
    code, printed = run_cli(
        "cv", "--config", str(config), "--folds", str(K), "--out", str(copy), "--no-progress"
    )
    assert code == 0
    assert printed.count("(finished earlier)") == K - 1
    assert read_csv(copy / "oof_predictions.csv") == before  # the resumed fold reproduces its predictions


@pytest.mark.slow
def test_a_different_config_for_a_started_cv_is_refused(cv_run, capsys):
    _, config, out, _ = cv_run
    code = main(
        ["cv", "--config", str(config), "--folds", str(K), "--out", str(out), "--set", "train.lr=0.1"]
    )
    assert code == 2
    assert "train.lr" in capsys.readouterr().err
