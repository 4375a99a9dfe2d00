"""evaluate_checkpoint: predictions CSV, metrics reproducible from it, reports, plots, results table."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from tests.conftest import make_kermany_tree
from tests.inference.conftest import write_checkpoint

from pneumocxr.data.discovery import discover
from pneumocxr.errors import DatasetError
from pneumocxr.evaluation import METRIC_NAMES, binary_metrics, metrics_with_ci
from pneumocxr.models import load_checkpoint
from pneumocxr.workflows import evaluate_checkpoint
from pneumocxr.workflows.outputs import PREDICTION_COLUMNS
from pneumocxr.workflows.provenance import selection_check
from pneumocxr.workflows.results_table import update_performance_csv

N_BOOT = 40
PLOTS = ("roc", "precision_recall", "confusion_matrix", "reliability", "probability_histogram")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("eval")
    tree = make_kermany_tree(base / "cx", patients_per_class=4)
    checkpoint = write_checkpoint(base / "runs" / "cnn" / "best.pt", threshold=0.45, temperature=0.02)
    result = evaluate_checkpoint(checkpoint, tree, split="test", out_dir=base / "out", n_boot=N_BOOT, seed=3)
    return base, tree, checkpoint, result


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_predictions_csv_has_one_row_per_test_image(setup):
    _, tree, _, result = setup
    rows = read_csv(result.files["predictions_csv"])
    records = discover(tree).in_split("test")
    assert list(rows[0]) == list(PREDICTION_COLUMNS)
    assert [r["path"] for r in rows] == [str(rec.path) for rec in records]
    assert [r["patient_id"] for r in rows] == [rec.patient_id for rec in records]
    assert {r["sublabel"] for r in rows} == {"normal", "bacterial", "viral"}
    for r in rows:
        assert int(r["prediction"]) == int(float(r["calibrated_probability"]) >= 0.45)
    assert result.model == "cnn" and result.n_images == len(records) == 16


def test_metrics_are_reproducible_from_the_saved_predictions(setup):
    _, _, _, result = setup
    rows = read_csv(result.files["predictions_csv"])
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["calibrated_probability"]) for r in rows])
    patients = [r["patient_id"] for r in rows]
    saved = json.loads(result.files["metrics_json"].read_text())
    for kind, threshold in (("checkpoint", 0.45), ("fixed_0.5", 0.5)):
        point = binary_metrics(y, p, threshold)
        again = metrics_with_ci(y, p, patients, threshold, n_boot=N_BOOT, seed=3)
        estimates = saved["metrics"][kind]["estimates"]
        assert saved["metrics"][kind]["threshold"] == threshold
        for name in METRIC_NAMES:
            saved_values = [estimates[name][k] for k in ("value", "low", "high")]
            saved_values = [np.nan if v is None else v for v in saved_values]  # JSON null = NaN
            assert saved_values[0] == pytest.approx(point[name], nan_ok=True, rel=0, abs=0), name
            assert saved_values == pytest.approx(list(again[name]), nan_ok=True, rel=0, abs=0), name
    assert saved["threshold_applies_to"] == "calibrated_probability" and saved["temperature"] == 0.02


def test_reports_and_plots_are_written_with_their_data(setup):
    _, _, _, result = setup
    out = result.out_dir
    for name in PLOTS:
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
        assert read_csv(out / "plots" / f"{name}.csv"), name
    assert "PNEUMONIA" in (out / "classification_report.txt").read_text()
    report = json.loads((out / "classification_report.json").read_text())
    assert set(report) == {"checkpoint", "fixed_0.5"}
    cm = json.loads((out / "confusion_matrix.json").read_text())["checkpoint"]
    info = result.metrics["checkpoint"].info
    assert cm["matrix"] == [[info["tn"], info["fp"]], [info["fn"], info["tp"]]]
    tidy = read_csv(out / "metrics.csv")
    assert len(tidy) == 2 * len(METRIC_NAMES)


def test_rerun_reuses_predictions_and_replaces_its_table_rows(setup):
    base, tree, checkpoint, first = setup
    again = evaluate_checkpoint(
        checkpoint, tree, out_dir=base / "out", n_boot=N_BOOT, seed=3, reuse_predictions=True
    )
    assert again.reused_predictions
    np.testing.assert_array_equal(
        again.predictions.calibrated_probability, first.predictions.calibrated_probability
    )
    rows = read_csv(again.files["performance_csv"])
    assert [r["threshold_kind"] for r in rows] == ["checkpoint", "fixed_0.5"]  # replaced, not duplicated
    for metric in ("roc_auc", "sensitivity", "specificity"):
        assert {metric, f"{metric}_lo", f"{metric}_hi"} <= set(rows[0])
    assert float(rows[0]["threshold"]) == 0.45 and rows[0]["model"] == "cnn"


def test_changed_checkpoint_is_not_served_stale_predictions(setup, tmp_path):
    base, tree, _, _ = setup
    out = tmp_path / "out"
    shutil.copytree(base / "out", out)
    other = write_checkpoint(tmp_path / "cnn" / "best.pt", seed=7, threshold=0.45, temperature=0.02)
    result = evaluate_checkpoint(other, tree, out_dir=out, n_boot=N_BOOT, reuse_predictions=True)
    assert not result.reused_predictions


def test_results_table_appends_new_keys_and_replaces_same_keys(tmp_path):
    path = tmp_path / "results" / "performance_metrics.csv"
    key = {"model": "a", "checkpoint": "a.pt", "data": "d", "split": "test"}
    update_performance_csv(path, [{**key, "threshold_kind": "checkpoint", "accuracy": 0.8}])
    update_performance_csv(path, [{**key, "split": "val", "threshold_kind": "checkpoint", "accuracy": 0.7}])
    update_performance_csv(path, [{**key, "threshold_kind": "checkpoint", "accuracy": 0.9, "f1": 0.5}])
    rows = read_csv(path)
    assert [(r["split"], r["accuracy"], r["f1"]) for r in rows] == [
        ("val", "0.7", ""),
        ("test", "0.9", "0.5"),
    ]


def test_only_test_folder_is_evaluated(tmp_path):
    tree = make_kermany_tree(tmp_path / "cx", splits=("test",), patients_per_class=2)
    result = evaluate_checkpoint(
        write_checkpoint(tmp_path / "m.pt"), tree, out_dir=tmp_path / "o", n_boot=N_BOOT
    )
    assert result.n_images == 8 and not np.isnan(result.metrics["checkpoint"]["roc_auc"][0])


def test_missing_split_names_the_splits_present(tmp_path):
    tree = make_kermany_tree(tmp_path / "cx", splits=("train", "val"), patients_per_class=1)
    with pytest.raises(DatasetError, match=r"no 'test' split \(splits present: train, val\)"):
        evaluate_checkpoint(write_checkpoint(tmp_path / "m.pt"), tree, out_dir=tmp_path / "o", n_boot=N_BOOT)


def _split_extra(tree):
    return {"split": {"source": str(tree.resolve()), "val_patients": ["train/person1"]}}


def test_evaluating_train_warns_that_it_chose_the_model(tmp_path):
    tree = make_kermany_tree(tmp_path / "cx", splits=("train", "test"), patients_per_class=1)
    _, meta = load_checkpoint(write_checkpoint(tmp_path / "m.pt", extra=_split_extra(tree)))
    dataset = discover(tree)
    on_train = selection_check(meta, tree, dataset, "train")
    assert on_train.could_have_been_used_for_selection is True and "measure fit" in on_train.warnings[0]
    on_test = selection_check(meta, tree, dataset, "test")
    assert on_test.could_have_been_used_for_selection is False and not on_test.warnings
    elsewhere = make_kermany_tree(tmp_path / "other", splits=("test",), patients_per_class=1)
    external = selection_check(meta, elsewhere, discover(elsewhere), "test")
    assert external.same_dataset is False and "external validation" in external.notes[-1]
    _, bare = load_checkpoint(write_checkpoint(tmp_path / "bare.pt"))
    unknown = selection_check(bare, tree, dataset, "test")
    assert unknown.could_have_been_used_for_selection is None and "cannot be verified" in unknown.warnings[0]


@pytest.mark.realdata
def test_real_val_split_is_evaluated_end_to_end(shared_data, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "m.pt", temperature=0.02)
    result = evaluate_checkpoint(
        checkpoint, shared_data / "chest_xray", split="val", out_dir=tmp_path / "o", n_boot=50
    )
    assert result.n_images == 16 and int(result.labels.sum()) == 8
    assert len(read_csv(result.files["predictions_csv"])) == 16
    assert result.selection.could_have_been_used_for_selection is None  # no split recorded: unknown
