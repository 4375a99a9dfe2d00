"""Stored threshold rules at inference: same decisions for a batch of 1 and of 64 and in float32 vs
float64, ``evaluate`` at another stored rule and at a user's prevalence, clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.conftest import make_kermany_tree
from tests.inference.conftest import IMAGE_SIZE, write_checkpoint

from pneumocxr.config import THRESHOLD_RULES
from pneumocxr.errors import CheckpointError, ConfigError
from pneumocxr.evaluation import all_rules, apply_temperature, fit_temperature
from pneumocxr.inference import load_predictor
from pneumocxr.models import load_checkpoint
from pneumocxr.workflows import evaluate_checkpoint
from pneumocxr.workflows.operating_rules import rule_summary, rule_threshold, with_threshold_rule

N = 64


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (N, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)


def rules_checkpoint(path, pixels, rule="youden"):
    """The seed-0 tiny model's checkpoint with every rule chosen on its own logits for ``pixels``
    (labels: above/below the median logit, a few flipped, so the rules have work to do)."""
    logits = load_predictor(write_checkpoint(path), device="cpu").predict_arrays(pixels).logits
    labels = (logits > np.median(logits)).astype(np.int64)
    labels[::9] ^= 1
    temperature = fit_temperature(logits, labels)
    rules = all_rules(labels, apply_temperature(logits, temperature), seed=0)
    op = {
        "temperature": temperature,
        **rules[rule].to_dict(),
        "threshold_rule": rule,
        "rules": {name: c.to_dict() for name, c in rules.items()},
    }
    extra = {"operating_point": op}
    return write_checkpoint(path, threshold=rules[rule].threshold, temperature=temperature, extra=extra)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, pixels):
    return rules_checkpoint(tmp_path_factory.mktemp("rules") / "best.pt", pixels)


@pytest.mark.parametrize("rule", THRESHOLD_RULES)
def test_a_batch_of_one_and_a_batch_of_64_decide_alike_at_every_rule(checkpoint, pixels, rule):
    one = with_threshold_rule(load_predictor(checkpoint, device="cpu", batch_size=1), rule)
    many = with_threshold_rule(load_predictor(checkpoint, device="cpu", batch_size=64), rule)
    singly = [one.predict_arrays(image)[0] for image in pixels]  # one image per call
    batch = many.predict_arrays(pixels)
    assert [p.prediction for p in singly] == batch.prediction.tolist()
    assert one.threshold == many.threshold == rule_threshold(one.meta, rule)
    if rule != "youden_edge":  # midpoint rules: no validation image is on the cut
        calibrated = batch.calibrated_probability
        assert not np.any(calibrated == one.threshold)
        margin = np.min(
            np.abs(np.log(calibrated / (1 - calibrated)) - np.log(one.threshold / (1 - one.threshold)))
        )
        drift = max(abs(p.logit - z) for p, z in zip(singly, batch.logits)) / one.temperature
        # farther from every image than the batch size moves any logit (this untrained model's logits
        # span only 4e-5, so the factor is modest here; bench/threshold_rules.py measures a real one)
        assert margin > drift


def test_float32_and_float64_validation_probabilities_decide_alike_at_the_stored_threshold(
    checkpoint, pixels
):
    predictor = load_predictor(checkpoint, device="cpu")
    batch = predictor.predict_arrays(pixels)  # float64 sigmoid(z / T) of the float32 logits
    z32 = torch.from_numpy(batch.logits.astype(np.float32))
    p32 = torch.sigmoid(z32 / torch.tensor(predictor.temperature, dtype=torch.float32)).numpy()
    for rule in THRESHOLD_RULES:
        t = rule_threshold(predictor.meta, rule)
        if rule != "youden_edge":
            assert np.array_equal(batch.calibrated_probability >= t, p32 >= np.float32(t)), rule
    assert np.array_equal(batch.prediction, (p32 >= np.float32(predictor.threshold)).astype(np.int64))


def test_rule_summary_names_the_applied_and_the_stored_rules(checkpoint):
    predictor = load_predictor(checkpoint, device="cpu")
    own = rule_summary(predictor.meta)
    assert own["rule"] == own["checkpoint_rule"] == "youden" and set(own["stored_rules"]) == set(
        THRESHOLD_RULES
    )
    other = rule_summary(with_threshold_rule(predictor, "youden_edge").meta)
    assert other["rule"] == "youden_edge" and other["checkpoint_threshold"] == predictor.threshold
    assert predictor.meta.threshold == own["threshold"]  # the original predictor is left alone


def test_an_old_checkpoint_is_refused_a_rule_and_named(tmp_path):
    old = write_checkpoint(
        tmp_path / "old.pt", threshold=0.3, extra={"operating_point": {"method": "youden"}}
    )
    predictor = load_predictor(old, device="cpu")
    with pytest.raises(CheckpointError, match=r"old\.pt stores no threshold rules \(it was written before"):
        with_threshold_rule(predictor, "youden")
    assert rule_summary(predictor.meta)["checkpoint_rule"] == "youden_edge"  # what the old rule was
    with pytest.raises(ConfigError, match="not a threshold rule"):
        with_threshold_rule(predictor, "median")


def test_evaluate_at_another_rule_and_prevalence_writes_both_into_metrics_json(checkpoint, tmp_path):
    tree = make_kermany_tree(tmp_path / "cx", splits=("test",), patients_per_class=3, size=(40, 40))
    rule = "target_sensitivity"
    result = evaluate_checkpoint(
        checkpoint, tree, out_dir=tmp_path / "o", n_boot=40, device="cpu", threshold_rule=rule, prevalence=0.1
    )
    stored = rule_threshold(load_checkpoint(checkpoint)[1], "target_sensitivity")
    assert result.model == f"{checkpoint.parent.name}@target_sensitivity"
    assert result.predictions.threshold == stored == result.metrics["checkpoint"].info["threshold"]
    summary = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert summary["threshold_rule"]["rule"] == "target_sensitivity"
    assert summary["threshold_rule"]["checkpoint_rule"] == "youden"
    assert summary["checkpoint_meta"]["threshold"] == summary["threshold_rule"]["checkpoint_threshold"]
    adjusted = summary["prevalence_adjusted"]
    assert set(adjusted) == {"checkpoint", "fixed_0.5"} and adjusted["checkpoint"]["prevalence"] == 0.1
    assert adjusted["checkpoint"]["threshold"] == stored and "ppv" in adjusted["fixed_0.5"]
