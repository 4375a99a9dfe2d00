""" "Uncertain — refer" in the API's answer: near the threshold, outside the intended use, or a
conformal set that is not a single class."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from pneumocxr.inference import InputSummary, InputWarning, ModelIdentity, PredictionResult
from pneumocxr.serving.referral import BAND, Referral

NAMES = ("NORMAL", "PNEUMONIA")


def result(
    p: float, threshold: float | None = 0.5, warnings=(), names=NAMES, probabilities=None
) -> PredictionResult:
    probabilities = probabilities or {names[0]: 1 - p, names[1]: p}
    label = max(probabilities, key=probabilities.get) if threshold is None else names[int(p >= threshold)]
    return PredictionResult(
        label=label,
        decision=names.index(label),
        class_names=names,
        probabilities=probabilities,
        raw_probabilities=probabilities,
        threshold=threshold,
        threshold_rule="youden" if threshold is not None else "argmax",
        model=ModelIdentity("m", "0" * 64, None, "binary"),
        input=InputSummary("PNG", 512, 512, 100, "1" * 64),
        warnings=tuple(warnings),
    )


def predictor(extra=None, k=2):
    return SimpleNamespace(num_classes=k, meta=SimpleNamespace(extra=extra or {}, path="m.pt"))


def test_near_the_threshold_or_out_of_scope_is_referred_with_the_reason():
    referral = Referral(predictor())
    assert referral.assess(result(0.9))["refer"] is False
    near = referral.assess(result(0.5 + BAND / 2))
    assert near["refer"] and "within 0.10 of the threshold" in near["reasons"][0]
    assert near["band"] == [0.4, 0.6]
    lateral = referral.assess(result(0.95, warnings=[InputWarning("lateral_view", "lateral")]))
    assert lateral["refer"] and "lateral_view" in lateral["reasons"][0]


def test_three_classes_are_referred_when_the_top_two_are_close():
    names = ("NORMAL", "BACTERIAL", "VIRAL")
    referral = Referral(predictor(k=3))
    close = result(0, None, names=names, probabilities={"NORMAL": 0.1, "BACTERIAL": 0.46, "VIRAL": 0.44})
    clear = result(0, None, names=names, probabilities={"NORMAL": 0.1, "BACTERIAL": 0.8, "VIRAL": 0.1})
    assert referral.assess(close)["refer"] and not referral.assess(clear)["refer"]


def test_a_stored_conformal_calibration_gives_each_answer_its_set():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    probabilities = np.clip(labels * 0.7 + rng.normal(0.15, 0.3, 400), 0, 1)  # overlapping classes
    extra = {"conformal": {"labels": labels.tolist(), "probabilities": probabilities.tolist(), "alpha": 0.05}}
    referral = Referral(predictor(extra))
    confident = referral.assess(result(0.99))
    assert confident["conformal"]["set"] == ["PNEUMONIA"] and not confident["refer"]
    unsure = referral.assess(result(0.5, threshold=0.2))
    assert unsure["conformal"]["set"] == ["NORMAL", "PNEUMONIA"] and unsure["refer"]
    assert any("conformal set" in r for r in unsure["reasons"])
