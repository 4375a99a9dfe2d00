"""A normal-bacterial-viral (3-class) checkpoint through Predictor and evaluate: softmax, argmax, 3×3."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import make_kermany_tree
from tests.inference.conftest import write_checkpoint

from pneumocxr.cli.main import main
from pneumocxr.data.discovery import discover
from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation import multiclass_metrics
from pneumocxr.inference import PredictionBatch, load_predictor
from pneumocxr.labels import THREE_CLASS_NAMES
from pneumocxr.models import load_checkpoint
from pneumocxr.workflows import evaluate_checkpoint
from pneumocxr.workflows.results_table import update_performance_csv

N_BOOT = 30
TASK = "normal-bacterial-viral"


def write_three_class_checkpoint(path: Path, *, temperature: float = 1.5, seed: int = 0) -> Path:
    """An untrained, deterministic 3-logit custom_cnn checkpoint of the three-class task."""
    return write_checkpoint(path, temperature=temperature, seed=seed, task=TASK)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("three")
    tree = make_kermany_tree(base / "cx", splits=("train", "test"), patients_per_class=4)
    checkpoint = write_three_class_checkpoint(base / "runs" / "nbv" / "best.pt")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(
            [
                "evaluate",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(tree),
                "--split",
                "test",
                "--out",
                str(base / "out"),
                "--n-boot",
                str(N_BOOT),
                "--device",
                "cpu",
            ]
        )
    assert code == 0
    return base, tree, checkpoint, stdout.getvalue()


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_checkpoint_records_its_task_and_class_names(setup):
    _, _, checkpoint, _ = setup
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert raw["task"] == TASK and raw["class_names"] == list(THREE_CLASS_NAMES)
    meta = load_checkpoint(checkpoint)[1]
    assert meta.task == TASK and meta.class_names == THREE_CLASS_NAMES


def test_predictor_gives_softmax_probabilities_and_argmax_labels(setup):
    _, tree, checkpoint, _ = setup
    predictor = load_predictor(checkpoint, device="cpu")
    records = discover(tree).in_split("test")
    batch = predictor.predict_records(records)
    probs = batch.probabilities
    assert probs.shape == (len(records), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(batch.prediction, probs.argmax(axis=1))
    # calibrated = softmax(logits / T) with the stored T; the predicted class's probability is the max
    z = batch.logits
    expected = np.exp(z / 1.5) / np.exp(z / 1.5).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-10)
    np.testing.assert_allclose(batch.calibrated_probability, probs.max(axis=1))
    one = predictor.predict_file(records[0].path)
    assert one.label == THREE_CLASS_NAMES[int(np.argmax(list(one.probabilities.values())))]
    assert list(one.probabilities) == list(THREE_CLASS_NAMES)
    assert sum(one.probabilities.values()) == pytest.approx(1.0)
    assert predictor.describe()["task"] == TASK


def test_binary_batches_keep_their_shape_and_gain_a_two_column_view():
    batch = PredictionBatch.from_logits(np.array([-2.0, 0.0, 3.0]), temperature=2.0, threshold=0.4)
    assert batch.logits.shape == (3,) and batch.prediction.tolist() == [0, 1, 1]
    np.testing.assert_allclose(batch.probabilities[:, 1], batch.calibrated_probability)
    np.testing.assert_allclose(batch.probabilities.sum(axis=1), 1.0)
    assert batch[2].label == "PNEUMONIA" and set(batch[2].probabilities) == {"NORMAL", "PNEUMONIA"}


def test_evaluate_writes_per_class_probabilities_and_a_three_by_three_matrix(setup):
    base, tree, _, _ = setup
    out = base / "out"
    rows = read_csv(out / "predictions.csv")
    records = discover(tree).in_split("test")
    assert len(rows) == len(records) == 16
    for name in THREE_CLASS_NAMES:
        assert f"probability_{name}" in rows[0] and f"logit_{name}" in rows[0]
    by_sub = {"normal": "NORMAL", "bacterial": "BACTERIAL", "viral": "VIRAL"}
    assert all(r["label_name"] == by_sub[r["sublabel"]] for r in rows)
    probs = np.array([[float(r[f"probability_{c}"]) for c in THREE_CLASS_NAMES] for r in rows])
    assert [int(r["prediction"]) for r in rows] == probs.argmax(axis=1).tolist()
    matrix = json.loads((out / "confusion_matrix.json").read_text())
    cm = np.array(matrix["matrix"])
    assert cm.shape == (3, 3) and cm.sum() == 16
    assert matrix["rows_true_columns_predicted"] == list(THREE_CLASS_NAMES)
    assert cm.sum(axis=1).tolist() == [8, 4, 4]  # NORMAL, BACTERIAL, VIRAL images of the test split
    for plot in ("confusion_matrix", "roc_ovr"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000
        assert (out / "plots" / f"{plot}.csv").is_file()


def test_evaluation_metrics_are_reproducible_from_the_predictions_csv(setup):
    base, _, _, _ = setup
    rows = read_csv(base / "out" / "predictions.csv")
    y = np.array([int(r["label"]) for r in rows])
    probs = np.array([[float(r[f"probability_{c}"]) for c in THREE_CLASS_NAMES] for r in rows])
    again = multiclass_metrics(
        y, probs, THREE_CLASS_NAMES, groups=[r["patient_id"] for r in rows], n_boot=N_BOOT
    )
    saved = json.loads((base / "out" / "metrics.json").read_text())
    assert saved["task"] == TASK and saved["n_images"] == 16
    assert saved["metrics"]["confusion"] == again.confusion.tolist()
    assert saved["metrics"]["overall"]["accuracy"]["value"] == pytest.approx(again.overall["accuracy"].value)
    auc = saved["metrics"]["overall"]["macro_auc"]["value"]
    assert auc == pytest.approx(again.overall["macro_auc"].value)


def test_performance_table_row_names_the_task_and_keeps_binary_rows(setup, tmp_path):
    base, _, _, _ = setup
    table = tmp_path / "performance_metrics.csv"
    update_performance_csv(
        table,
        [
            {
                "model": "bin",
                "checkpoint": "b.pt",
                "data": "d",
                "split": "test",
                "threshold_kind": "checkpoint",
            }
        ],
    )
    rows = read_csv(base / "out" / "results" / "performance_metrics.csv")
    assert len(rows) == 1
    row = rows[0]
    assert row["task"] == TASK and row["threshold_kind"] == "argmax"
    assert row["class_names"] == "NORMAL/BACTERIAL/VIRAL"
    saved = json.loads((base / "out" / "metrics.json").read_text())["metrics"]["overall"]
    assert float(row["roc_auc"]) == pytest.approx(saved["macro_auc"]["value"])
    assert float(row["macro_f1"]) == pytest.approx(saved["macro_f1"]["value"])
    for name in THREE_CLASS_NAMES:
        assert f"recall_{name}" in row
    assert row.get("sensitivity", "") == ""  # binary-only columns stay empty
    update_performance_csv(table, [row])
    merged = read_csv(table)
    assert [r["model"] for r in merged] == ["bin", "nbv"] and merged[0]["task"] == ""


def test_evaluate_prints_the_report_and_the_confusion_matrix(setup):
    _, _, _, printed = setup
    assert "task normal-bacterial-viral" in printed and "argmax" in printed
    assert "confusion matrix (rows = true class, columns = predicted)" in printed
    assert "macro avg" in printed
    for name in THREE_CLASS_NAMES:
        assert name in printed


def test_images_without_a_cause_in_their_name_are_refused_by_name(setup, tmp_path):
    _, _, checkpoint, _ = setup
    tree = make_kermany_tree(tmp_path / "cx", splits=("test",), patients_per_class=2)
    odd = tree / "test" / "PNEUMONIA" / "scan_0007.jpeg"
    odd.write_bytes(next((tree / "test" / "PNEUMONIA").glob("*.jpeg")).read_bytes())
    with pytest.raises(DatasetError, match=r"1 of 9 images .*scan_0007\.jpeg.*bacteria"):
        evaluate_checkpoint(checkpoint, tree, split="test", out_dir=tmp_path / "out", n_boot=N_BOOT)


def test_compare_refuses_a_three_class_model_by_name(setup, tmp_path):
    from pneumocxr.workflows import compare_models

    _, tree, checkpoint, _ = setup
    with pytest.raises(ConfigError, match=r"3-class model .*binary models only"):
        compare_models([checkpoint, checkpoint], tree, split="test", out_dir=tmp_path / "cmp", n_boot=N_BOOT)
