"""best.pt's operating point: every threshold rule stored, the configured one applied, old files load."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pneumocxr.config import THRESHOLD_RULES, RunConfig, TrainConfig, apply_overrides, from_dict, to_dict
from pneumocxr.errors import ConfigError
from pneumocxr.evaluation import apply_temperature, binary_metrics
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import create_model, load_checkpoint, save_checkpoint
from pneumocxr.training.export import _val_patient_ids, operating_point


def _validation(seed: int = 0, n: int = 240):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    logits = (3.0 * labels - 1.5 + rng.normal(0, 1.2, n)).astype(np.float32).astype(np.float64)
    return logits, labels, [f"train/p{i // 2}" for i in range(n)]


def test_operating_point_stores_every_rule_and_applies_the_configured_one():
    logits, labels, patients = _validation()
    op = operating_point(logits, labels, patients, rule="target_sensitivity", seed=3)
    assert set(op["rules"]) == set(THRESHOLD_RULES) and op["threshold_rule"] == "target_sensitivity"
    assert op["threshold"] == op["rules"]["target_sensitivity"]["threshold"]
    assert op["method"] == "target_sensitivity" and op["chosen_on"].startswith("validation")
    calibrated = apply_temperature(logits, op["temperature"])
    for rule, stored in op["rules"].items():  # each rule's validation numbers are reproducible
        m = binary_metrics(labels, calibrated, stored["threshold"])
        assert (stored["sensitivity"], stored["specificity"]) == (m["sensitivity"], m["specificity"]), rule
    assert op["rules"]["bootstrap_median"]["bootstrap_unit"] == "patient"
    assert operating_point(logits, labels)["rules"]["bootstrap_median"]["bootstrap_unit"] == "image"
    assert operating_point(logits, labels, patients, seed=3)["threshold_rule"] == "youden"  # the default


def test_an_unknown_rule_is_a_config_error():
    logits, labels, _ = _validation()
    with pytest.raises(ConfigError, match="threshold_rule"):
        operating_point(logits, labels, rule="best")


def test_config_checks_the_rule_when_it_is_read():
    assert TrainConfig().threshold_rule == "youden"
    data = apply_overrides(to_dict(RunConfig()), ["train.threshold_rule=bootstrap_median"])
    assert from_dict(RunConfig, data).train.threshold_rule == "bootstrap_median"
    with pytest.raises(ConfigError, match=r"train.threshold_rule='yoden'.*youden, youden_edge"):
        from_dict(RunConfig, apply_overrides(to_dict(RunConfig()), ["train.threshold_rule=yoden"]))


def _datamodule(labels, patients):
    val = [SimpleNamespace(label=int(y), split="train", patient_id=p) for y, p in zip(labels, patients)]
    return SimpleNamespace(records=lambda: ([], val))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_patients_line_up_with_predictions_gathered_from_ddp_ranks(world_size):
    labels = np.array([0, 1, 1, 0, 1, 0, 0])
    patients = [f"p{i}" for i in range(7)]
    order = np.concatenate([np.arange(r, 7, world_size) for r in range(world_size)])  # rank r: val[r::W]
    got = _val_patient_ids(_datamodule(labels, patients), labels[order], world_size)
    assert got == [f"train/p{i}" for i in order]


def test_predictions_that_do_not_line_up_fall_back_to_images():
    labels = np.array([0, 0, 1, 1])
    dm = _datamodule(labels, ["a", "b", "c", "d"])
    assert _val_patient_ids(dm, labels[::-1], 1) is None  # another order
    assert _val_patient_ids(dm, labels[:3], 1) is None  # another length


def _save(path, threshold, extra):
    torch.manual_seed(0)
    model = create_model("custom_cnn", image_size=32, in_channels=1)
    return save_checkpoint(
        path, model, model_name="custom_cnn", model_kwargs={"image_size": 32, "in_channels": 1},
        preprocess=model.spec.preprocess, class_names=CLASS_NAMES, threshold=threshold, temperature=1.3,
        extra=extra,
    )  # fmt: skip


def test_checkpoint_round_trip_keeps_every_rule(tmp_path):
    logits, labels, patients = _validation(1)
    op = operating_point(logits, labels, patients, rule="bootstrap_median", seed=0)
    _, meta = load_checkpoint(_save(tmp_path / "best.pt", op["threshold"], {"operating_point": op}))
    stored = meta.extra["operating_point"]
    assert meta.threshold == op["threshold"] == stored["rules"]["bootstrap_median"]["threshold"]
    assert stored["rules"] == op["rules"] and stored["threshold_rule"] == "bootstrap_median"


def test_an_old_checkpoint_without_the_rules_still_loads(tmp_path):
    old = {"temperature": 1.3, "threshold": 0.31, "method": "youden", "sensitivity": 0.9, "specificity": 0.8}
    _, meta = load_checkpoint(_save(tmp_path / "old.pt", 0.31, {"operating_point": old}))
    assert meta.threshold == 0.31 and "rules" not in meta.extra["operating_point"]
    _, bare = load_checkpoint(_save(tmp_path / "bare.pt", 0.5, None))
    assert bare.threshold == 0.5 and bare.extra == {}
