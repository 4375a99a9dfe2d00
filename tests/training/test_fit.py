"""End to end on synthetic images: `pneumocxr train` learns, and best.pt is self-describing and honest."""

from __future__ import annotations

import contextlib
import io
import math
import shutil

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score
from tests.conftest import make_kermany_tree

from pneumocxr.cli.main import main
from pneumocxr.config import RunConfig, from_dict, load_yaml
from pneumocxr.data.cache import PreprocessedCache
from pneumocxr.errors import ConfigError
from pneumocxr.evaluation import apply_temperature, fit_temperature
from pneumocxr.models import load_checkpoint, to_model_input
from pneumocxr.training import train
from pneumocxr.training.callbacks import read_history
from pneumocxr.training.datamodule import split_records

SETTINGS = {
    "model": {"name": "custom_cnn", "image_size": 32},
    "train": {"max_epochs": 2, "batch_size": 8, "lr": 3e-4, "precision": "32", "augment": "anatomy"},
}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One 2-epoch run through the CLI: (run folder, config file, printed summary)."""
    base = tmp_path_factory.mktemp("fit")
    # 50 patients per class, 4 images each; PNEUMONIA images carry a bright blob (a strong signal)
    root = make_kermany_tree(
        base / "cx", splits=("train",), patients_per_class=50, images_per_patient=4, size=(36, 36)
    )
    config = base / "run.yaml"
    config.write_text(yaml.safe_dump({**SETTINGS, "data": {"root": str(root), "val_fraction": 0.25}}))
    out = base / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", "--config", str(config), "--out", str(out), "--no-progress"])
    assert code == 0
    return out, config, stdout.getvalue()


def test_two_epochs_learn_the_synthetic_signal(fitted):
    out, _, summary = fitted
    rows = read_history(out / "history.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["val_auc"] > 0.9
    meta = load_checkpoint(out / "best.pt")[1]
    assert meta.metrics["val_auc"] > 0.9
    assert meta.extra["bn_recalibrated_layers"] == 8  # custom_cnn: a Dropout feeds BatchNorm
    # validation during training saw the re-estimated statistics too: the best epoch's logged AUC is best.pt's
    best = rows[meta.extra["best_epoch"] - 1]
    assert best["val_auc"] == pytest.approx(meta.metrics["val_auc"], abs=1e-6)
    assert best["val_loss"] == pytest.approx(meta.metrics["val_loss"], rel=1e-4, abs=1e-6)
    assert "best epoch" in summary and "AUC" in summary and str(out / "best.pt") in summary
    assert "threshold" in summary and "temperature" in summary


def test_best_checkpoint_is_plain_data_and_reproduces_its_validation_metrics(fitted):
    out, _, _ = fitted
    raw = torch.load(out / "best.pt", map_location="cpu", weights_only=True)  # data only, no code
    assert raw["model_name"] == "custom_cnn" and raw["class_names"] == ["NORMAL", "PNEUMONIA"]
    model, meta = load_checkpoint(out / "best.pt")
    config = from_dict(RunConfig, meta.config)
    train_records, val_records = split_records(config.data, config.train.limit_train_images)
    pixels = PreprocessedCache(out / "cache", meta.preprocess.image_size).load(val_records)
    with torch.no_grad():
        logits = model(to_model_input(torch.from_numpy(pixels), meta.preprocess))[:, 0].double()
    labels = torch.tensor([float(r.label) for r in val_records], dtype=torch.float64)
    probs = torch.sigmoid(logits).numpy()
    predicted = probs >= 0.5  # the logged val_acc/sensitivity/specificity are at 0.5 on raw probabilities
    y = labels.numpy().astype(bool)
    assert meta.metrics["val_auc"] == pytest.approx(roc_auc_score(y, probs), abs=1e-5)
    assert meta.metrics["val_acc"] == pytest.approx(float(np.mean(predicted == y)), abs=1e-6)
    assert meta.metrics["val_sensitivity"] == pytest.approx(float(predicted[y].mean()), abs=1e-6)
    assert meta.metrics["val_specificity"] == pytest.approx(float((~predicted[~y]).mean()), abs=1e-6)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert meta.metrics["val_loss"] == pytest.approx(float(bce), rel=1e-4, abs=1e-6)  # float32 vs float64
    # the operating point: temperature and Youden threshold fitted on these validation predictions
    z = logits.numpy()
    assert meta.temperature == pytest.approx(fit_temperature(z, y.astype(int)), rel=1e-3)
    calibrated = apply_temperature(z, meta.temperature)
    at_threshold = calibrated >= meta.threshold  # the Youden centre: between two scores, not on one
    op = meta.extra["operating_point"]
    assert op["threshold"] == meta.threshold and op["method"] == op["threshold_rule"] == "youden"
    assert op["rules"]["youden"]["threshold"] == meta.threshold and len(op["rules"]) == 4
    assert op["sensitivity"] == pytest.approx(float(at_threshold[y].mean()), abs=1e-6)
    assert op["specificity"] == pytest.approx(float((~at_threshold[~y]).mean()), abs=1e-6)
    assert (
        op["sensitivity"] + op["specificity"] >= float(predicted[y].mean() + (~predicted[~y]).mean()) - 1e-6
    )
    # the checkpoint names the validation patients it was selected on: none of them trained
    split = meta.extra["split"]
    assert split["val_patients"] == sorted({f"{r.split}/{r.patient_id}" for r in val_records})
    assert not set(split["val_patients"]) & {f"{r.split}/{r.patient_id}" for r in train_records}
    assert len(split["val_patients_sha256"]) == 64
    assert split["split_seed"] == 42 and split["val_fraction"] == 0.25
    assert meta.extra["monitor"] == "val_auc" and 1 <= meta.extra["best_epoch"] <= 2


def test_run_folder_holds_resolved_config_history_curves_and_resume_point(fitted):
    out, config_file, _ = fitted
    saved = from_dict(RunConfig, load_yaml(out / "config.yaml"))
    assert saved == from_dict(RunConfig, load_yaml(config_file))
    assert saved.train.lr == 3e-4 and saved.train.plateau_patience == 5  # YAML value and default
    history = read_history(out / "history.csv")
    assert all(math.isfinite(r["lr"]) and r["lr"] == 3e-4 for r in history)
    assert (out / "training_curves.png").stat().st_size > 5000
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert list((out / "checkpoints").glob("best-epoch*.ckpt"))


def test_an_existing_run_is_never_overwritten_without_resume(fitted, capsys):
    out, config_file, _ = fitted
    code = main(["train", "--config", str(config_file), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1


def test_resume_needs_a_last_checkpoint(fitted, tmp_path, capsys):
    _, config_file, _ = fitted
    code = main(["train", "--config", str(config_file), "--out", str(tmp_path / "fresh"), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "nothing to resume" in err and "last.ckpt" in err


def test_resume_refuses_a_different_model_or_data(fitted, tmp_path):
    out, config_file, _ = fitted
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    config = from_dict(RunConfig, load_yaml(config_file))
    changed = from_dict(RunConfig, {**load_yaml(config_file), "model": {**SETTINGS["model"], "dropout": 0.2}})
    with pytest.raises(ConfigError, match=r"model\.dropout"):
        train(changed, copy, resume=True, progress=False)
    # the same config resumes a finished run without training again: same selected model
    before = load_checkpoint(copy / "best.pt")[1].metrics
    result = train(config, copy, resume=True, progress=False)
    assert result.epochs_run == 2
    assert result.metrics == pytest.approx(before, abs=1e-6)


def test_config_mistakes_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batchsize: 8\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'batch_size'" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "o")]) == 2
    assert "--config" in capsys.readouterr().err
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump({"data": {"root": str(tmp_path / "missing")}}))
    assert (
        main(["train", "--config", str(ok), "--out", str(tmp_path / "o"), "--set", "train.augment=mirror"])
        == 2
    )
    assert "train.augment='mirror'" in capsys.readouterr().err


def test_weights_without_pretrained_is_refused(tmp_path):
    config = from_dict(RunConfig, {"data": {"root": str(tmp_path)}, "model": {"weights": "/w.pth"}})
    with pytest.raises(ConfigError, match="pretrained"):
        train(config, tmp_path / "o", progress=False)
