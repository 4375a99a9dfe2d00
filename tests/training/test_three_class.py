"""The normal-bacterial-viral task: config, labels from sub-labels, weighted CE, one epoch end to end."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tests.conftest import make_kermany_tree

from pneumocxr import config as config_module
from pneumocxr import labels
from pneumocxr.cli.main import main
from pneumocxr.config import DataConfig, RunConfig, TrainConfig, apply_overrides, from_dict, task_overrides
from pneumocxr.data.records import ImageRecord
from pneumocxr.data.tasks import label_for_task
from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation import fit_temperature
from pneumocxr.models import create_model, load_checkpoint
from pneumocxr.training.callbacks import read_history
from pneumocxr.training.datamodule import ChestXrayDataModule, class_weights, split_records
from pneumocxr.training.module import ClassifierModule

TASK = labels.TASK_NORMAL_BACTERIAL_VIRAL
SETTINGS = {
    "model": {"name": "custom_cnn", "image_size": 32},
    "train": {"max_epochs": 1, "batch_size": 8, "lr": 3e-4, "precision": "32"},
}


def _record(i: int, label: int, sublabel: str) -> ImageRecord:
    return ImageRecord(Path(f"/x/{i}.jpeg"), label, "train", f"p{i}", sublabel)


# ---- configuration --------------------------------------------------------------------------


def test_config_and_labels_name_the_same_tasks():
    assert config_module.TASKS == labels.TASKS
    for task, k in config_module.TASK_NUM_CLASSES.items():
        assert len(labels.task_class_names(task)) == k
    assert labels.task_class_names(TASK) == ("NORMAL", "BACTERIAL", "VIRAL")


def test_task_sets_labels_and_outputs_together_and_inconsistent_pairs_are_refused():
    config = from_dict(RunConfig, apply_overrides({}, task_overrides(TASK)))
    assert config.data.task == TASK and config.model.num_classes == 3
    with pytest.raises(ConfigError, match=r"model\.num_classes=2.*--task normal-bacterial-viral"):
        from_dict(RunConfig, {"data": {"task": TASK}})
    with pytest.raises(ConfigError, match=r"data\.task='binary' has 2 classes but model\.num_classes=3"):
        from_dict(RunConfig, {"model": {"num_classes": 3}})
    with pytest.raises(ConfigError, match=r"data\.task='three'"):
        DataConfig(task="three")
    with pytest.raises(ConfigError, match="--task 'x'"):
        task_overrides("x")


def test_cli_task_flag_and_cv_refusal(tmp_path, capsys):
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump({"data": {"root": str(tmp_path / "missing")}}))
    # a --set that contradicts --task is a one-line config error, not silently overruled
    argv = ["train", "--config", str(bad), "--out", str(tmp_path / "o"), "--task", TASK]
    assert main([*argv, "--set", "model.num_classes=2"]) == 2
    err = capsys.readouterr().err
    assert "--set model.num_classes=2 contradicts it" in err and len(err.strip().splitlines()) == 1
    assert main(["cv", "--config", str(bad), "--out", str(tmp_path / "cv"), "--task", TASK]) == 2
    err = capsys.readouterr().err
    assert (
        "not supported yet" in err and "pneumocxr train --task" in err and len(err.strip().splitlines()) == 1
    )


# ---- labels and split ----------------------------------------------------------------------


def test_sub_labels_become_three_class_labels_and_binary_records_are_untouched():
    records = [_record(0, 0, "normal"), _record(1, 1, "bacterial"), _record(2, 1, "viral")]
    assert [r.label for r in label_for_task(records, TASK)] == [0, 1, 2]
    assert label_for_task(records, "binary") == records


def test_unknown_cause_is_an_error_naming_files_and_count():
    records = [_record(i, 1, "unknown") for i in range(7)] + [_record(9, 0, "normal")]
    with pytest.raises(DatasetError, match=r"7 of 8 images in here .*/x/0\.jpeg.* and 2 more.*bacteria"):
        label_for_task(records, TASK, where="here")


def test_split_is_patient_level_and_stratified_on_three_classes(tmp_path):
    tree = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=10)
    data = DataConfig(root=str(tree), val_fraction=0.3, task=TASK)
    train, val = split_records(data)
    assert not {r.patient_id for r in train} & {r.patient_id for r in val}
    for part in (train, val):
        assert {r.label for r in part} == {0, 1, 2}
        assert all(r.label == labels.sublabel_class(r.sublabel) for r in part)
    # each class keeps about its share: 30 % of 20 NORMAL, 10 BACTERIAL and 10 VIRAL images
    counts = np.bincount([r.label for r in val], minlength=3)
    assert counts.tolist() == [6, 4, 2] or (abs(counts - [6, 3, 3]) <= 1).all()


def test_unknown_cause_in_the_train_folder_stops_training_data_loading(tmp_path):
    tree = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=4)
    odd = tree / "train" / "PNEUMONIA" / "chest_0001.jpeg"
    odd.write_bytes(next((tree / "train" / "PNEUMONIA").glob("*.jpeg")).read_bytes())
    with pytest.raises(DatasetError, match=r"1 of 17 images in the train split .*chest_0001\.jpeg"):
        split_records(DataConfig(root=str(tree), task=TASK))


# ---- the loss ------------------------------------------------------------------------------


def test_balanced_class_weights_are_n_over_k_times_class_count():
    records = [_record(i, y, "x") for i, y in enumerate([0] * 6 + [1] * 3 + [2] * 1)]
    assert class_weights(records, ("A", "B", "C")) == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    with pytest.raises(DatasetError, match="cannot balance"):
        class_weights(records[:9], ("A", "B", "C"))


def test_loss_is_class_weighted_softmax_cross_entropy():
    torch.manual_seed(0)
    model = create_model("custom_cnn", image_size=32, in_channels=1, num_classes=3)
    weights = [0.5, 1.0, 2.0]
    module = ClassifierModule(model, num_classes=3, class_weights=weights)
    module.log = lambda *args, **kwargs: None  # no trainer here
    logits = torch.randn(6, 3)
    labels_ = torch.tensor([0, 1, 2, 2, 1, 0], dtype=torch.float32)
    per_image = -torch.log_softmax(logits, 1)[torch.arange(6), labels_.long()]
    expected = per_image * torch.tensor(weights)[labels_.long()]
    torch.testing.assert_close(module.loss(logits, labels_), expected)
    torch.testing.assert_close(module.loss(logits, labels_, weighted=False), per_image)
    images = torch.randn(6, 1, 32, 32)
    module.eval()
    with torch.no_grad():
        out = module(images)
        loss = module.training_step((images, labels_), 0)
    assert out.shape == (6, 3)
    torch.testing.assert_close(loss, module.loss(out, labels_).mean())


def test_datamodule_hands_the_module_class_weights_or_none(tmp_path):
    tree = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=6)
    from pneumocxr.config import Preprocess

    pre = Preprocess(image_size=16, channels=1, mean=(0.0,), std=(1.0,))
    data = DataConfig(root=str(tree), val_fraction=0.3, task=TASK)
    dm = ChestXrayDataModule(data, TrainConfig(batch_size=4), pre, tmp_path / "cache")
    settings = dm.loss_settings()
    train, _ = dm.records()
    counts = np.bincount([r.label for r in train], minlength=3)
    assert settings["num_classes"] == 3
    assert settings["class_weights"] == pytest.approx(list(len(train) / (3 * counts)))
    dm = ChestXrayDataModule(data, TrainConfig(batch_size=4, class_balance="sampler"), pre, tmp_path / "c")
    assert dm.loss_settings() == {"num_classes": 3, "class_weights": None}


# ---- one epoch end to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One epoch of `pneumocxr train --task normal-bacterial-viral` on a tiny tree."""
    base = tmp_path_factory.mktemp("nbv")
    root = make_kermany_tree(base / "cx", splits=("train",), patients_per_class=12, size=(36, 36))
    config = base / "run.yaml"
    config.write_text(yaml.safe_dump({**SETTINGS, "data": {"root": str(root), "val_fraction": 0.3}}))
    out = base / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", "--config", str(config), "--out", str(out), "--no-progress", "--task", TASK])
    assert code == 0
    return out, stdout.getvalue()


def test_one_epoch_writes_a_three_class_best_pt(fitted):
    out, printed = fitted
    raw = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert raw["class_names"] == ["NORMAL", "BACTERIAL", "VIRAL"] and raw["task"] == TASK
    model, meta = load_checkpoint(out / "best.pt")
    assert meta.config["data"]["task"] == TASK and meta.model_kwargs["num_classes"] == 3
    assert meta.extra["task"] == TASK and meta.extra["monitor"] == "val_auc"
    split = meta.extra["split"]
    assert split["class_names"] == ["NORMAL", "BACTERIAL", "VIRAL"]
    assert min(split["val_class_counts"]) > 0 and sum(split["val_class_counts"]) == sum(split["val_counts"])
    assert meta.extra["val_images_scored"] == sum(split["val_class_counts"])
    op = meta.extra["operating_point"]
    assert op["decision"].startswith("argmax") and set(op["recall"]) == {"NORMAL", "BACTERIAL", "VIRAL"}
    assert 0.0 <= meta.metrics["val_auc"] <= 1.0 and math.isfinite(meta.metrics["val_loss"])
    with torch.no_grad():
        assert model(torch.zeros(2, meta.preprocess.channels, 32, 32)).shape == (2, 3)
    assert (
        "task normal-bacterial-viral" in printed and "macro AUC" in printed and "recall per class" in printed
    )


def test_validation_metrics_are_macro_auc_argmax_accuracy_and_unweighted_cross_entropy():
    """The module's val_* values for given logits (an identity "model" passes them through)."""
    from sklearn.metrics import recall_score, roc_auc_score

    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(30, 3)), dtype=torch.float32)
    y = np.arange(30) % 3
    module = ClassifierModule(torch.nn.Identity(), num_classes=3, class_weights=[3.0, 1.0, 0.2])
    module.log = lambda *args, **kwargs: None  # no trainer here: only the metric states matter
    module.validation_step((logits, torch.tensor(y, dtype=torch.float32)), 0)
    probs = torch.softmax(logits, 1).numpy()
    assert float(module.val_auc.compute()) == pytest.approx(
        roc_auc_score(y, probs, multi_class="ovr"), abs=1e-6
    )
    assert float(module.val_acc.compute()) == pytest.approx(float(np.mean(probs.argmax(1) == y)))
    assert float(module.val_sensitivity.compute()) == pytest.approx(
        recall_score(y, probs.argmax(1), average="macro")
    )
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor(y))  # unweighted: the yardstick
    assert float(module.val_loss.compute()) == pytest.approx(float(ce), rel=1e-6)


def test_stored_metrics_and_temperature_come_from_the_validation_split(fitted):
    """best.pt's metrics are reproduced from its weights and the recorded validation split."""
    from sklearn.metrics import roc_auc_score

    from pneumocxr.data.cache import PreprocessedCache
    from pneumocxr.models import to_model_input

    out, _ = fitted
    rows = read_history(out / "history.csv")
    assert len(rows) == 1 and all(math.isfinite(rows[0][k]) for k in ("train_loss", "val_loss", "val_auc"))
    model, meta = load_checkpoint(out / "best.pt")
    config = from_dict(RunConfig, meta.config)
    _, val = split_records(config.data)
    pixels = PreprocessedCache(out / "cache", meta.preprocess.image_size).load(val)
    # as training ran it (float32, channels_last): an untrained net's near-tied scores stay tied alike
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        logits = model(to_model_input(torch.from_numpy(pixels), meta.preprocess, channels_last=True)).float()
    y = np.array([r.label for r in val])
    probs = torch.softmax(logits, 1).numpy()
    assert meta.metrics["val_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"), abs=1e-3)
    ce = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
    assert meta.metrics["val_loss"] == pytest.approx(float(ce), rel=1e-4)
    assert meta.temperature == pytest.approx(fit_temperature(logits.double().numpy(), y), rel=1e-2)


def test_frozen_feature_stage_and_fine_tuning_train_three_classes(tmp_path):
    """Phase 1 on cached features of a frozen EfficientNet-Lite0, then one fine-tuning epoch."""
    tree = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=8)
    settings = {
        "data": {"root": str(tree), "val_fraction": 0.3, "cache_dir": str(tmp_path / "cache")},
        "model": {"name": "efficientnet_lite0", "image_size": 32, "pretrained": True},
        "train": {"max_epochs": 2, "batch_size": 8, "lr": 1e-2, "precision": "32", "frozen_features": True},
    }
    from pneumocxr.training import train

    config = from_dict(
        RunConfig, apply_overrides(settings, [*task_overrides(TASK), "train.finetune_epochs=1"])
    )
    result = train(config, tmp_path / "run", progress=False)
    assert result.class_names == ("NORMAL", "BACTERIAL", "VIRAL") and result.task == TASK
    assert [r["phase"] for r in read_history(result.history_csv)] == [1, 1, 2]
    model, meta = load_checkpoint(result.best_checkpoint)
    assert meta.class_names == ("NORMAL", "BACTERIAL", "VIRAL")
    assert model.spec.kwargs["num_classes"] == 3
    assert meta.extra["operating_point"]["temperature"] == pytest.approx(meta.temperature)
