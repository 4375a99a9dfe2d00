"""Wilson intervals and the patient-level bootstrap: textbook values, reproducibility, clustering."""

import csv

import numpy as np
import pytest

from pneumocxr.errors import ConfigError
from pneumocxr.evaluation.intervals import (
    PatientResampler,
    bootstrap_roc_band,
    metrics_with_ci,
    wilson_interval,
)
from pneumocxr.evaluation.metrics import METRIC_NAMES


def _data(n=120, seed=0, images_per_patient=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.25 * y + rng.uniform(0, 0.75, n), 0, 1)
    y = np.repeat(y, images_per_patient)
    p = np.repeat(p, images_per_patient)
    ids = np.repeat([f"patient{i}" for i in range(n)], images_per_patient)
    return y, p, ids


def test_wilson_matches_textbook_values():
    # 8/10 -> [0.490, 0.943], the usual worked example of the Wilson (1927) score interval
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)
    # 0/10 and 10/10: Wilson never leaves [0, 1] and is not degenerate at the boundary
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert all(np.isnan(wilson_interval(0, 0)))
    with pytest.raises(ConfigError):
        wilson_interval(1, 2, confidence=1.5)


def test_bootstrap_is_reproducible_with_a_seed():
    y, p, ids = _data()
    a = metrics_with_ci(y, p, ids, 0.5, n_boot=200, seed=3)
    b = metrics_with_ci(y, p, ids, 0.5, n_boot=200, seed=3)
    c = metrics_with_ci(y, p, ids, 0.5, n_boot=200, seed=4)
    assert dict(a) == dict(b)
    assert a["roc_auc"] != c["roc_auc"]
    # an injected Generator is used as is (and advanced)
    rng = np.random.default_rng(3)
    assert dict(metrics_with_ci(y, p, ids, 0.5, n_boot=200, seed=rng)) == dict(a)
    assert dict(metrics_with_ci(y, p, ids, 0.5, n_boot=200, seed=rng)) != dict(a)


def test_patient_clustering_widens_the_interval():
    """Five identical copies of every image: resampling images pretends to have 5x the data."""
    y, p, ids = _data(n=80, seed=1, images_per_patient=5)
    by_patient = metrics_with_ci(y, p, ids, 0.5, n_boot=400, seed=0)
    by_image = metrics_with_ci(y, p, None, 0.5, n_boot=400, seed=0)
    for name in ("roc_auc", "f1", "brier"):
        w_patient = by_patient[name][2] - by_patient[name][1]
        w_image = by_image[name][2] - by_image[name][1]
        assert w_patient > 1.5 * w_image, name  # ≈ sqrt(5) in theory
    assert by_patient.estimates["roc_auc"].method == "patient_bootstrap"
    assert by_image.estimates["roc_auc"].method == "image_bootstrap"
    assert by_patient.info["n_patients"] == 80


def test_resampler_takes_whole_patients():
    ids = np.array(["a", "a", "a", "b", "c", "c"])
    sampler = PatientResampler(ids, len(ids))
    rng = np.random.default_rng(0)
    for _ in range(50):
        drawn = ids[sampler.sample(rng)]
        for pid, size in (("a", 3), ("b", 1), ("c", 2)):
            assert np.count_nonzero(drawn == pid) % size == 0


def test_proportions_use_wilson_and_the_rest_the_bootstrap():
    y, p, ids = _data()
    res = metrics_with_ci(y, p, ids, 0.5, n_boot=100, seed=0)
    info = res.info
    assert res["sensitivity"][1:] == pytest.approx(wilson_interval(info["tp"], info["tp"] + info["fn"]))
    assert res["npv"][1:] == pytest.approx(wilson_interval(info["tn"], info["tn"] + info["fn"]))
    assert res.estimates["accuracy"].method == "wilson"
    assert res.estimates["mcc"].method == "patient_bootstrap"
    for name in METRIC_NAMES:
        value, lo, hi = res[name]
        assert lo <= value <= hi, name
    boot = metrics_with_ci(y, p, ids, 0.5, n_boot=100, seed=0, proportion_method="bootstrap")
    assert boot.estimates["sensitivity"].method == "patient_bootstrap"


def test_degenerate_resamples_are_skipped_and_counted():
    # one positive patient among 20: many resamples miss it
    y = np.array([1] + [0] * 19)
    p = np.linspace(0.95, 0.05, 20)
    res = metrics_with_ci(y, p, np.arange(20), 0.5, n_boot=300, seed=0)
    assert res.info["n_degenerate"] > 50
    auc = res.estimates["roc_auc"]
    assert auc.n_valid == 300 - res.info["n_degenerate"]
    assert "skipped" in auc.note
    assert res.estimates["brier"].n_valid == 300  # brier needs no second class


def test_one_class_input_reports_nan_auc_with_reason():
    y = np.ones(30, dtype=int)
    p = np.linspace(0.1, 0.9, 30)
    res = metrics_with_ci(y, p, np.arange(30), 0.5, n_boot=100, seed=0)
    assert all(np.isnan(res["roc_auc"]))
    assert res.estimates["roc_auc"].note == "only one class present"
    assert not np.isnan(res["brier"][1])
    assert not np.isnan(res["sensitivity"][1])


def test_table_rows_and_csv(tmp_path):
    y, p, ids = _data()
    res = metrics_with_ci(y, p, ids, 0.5, n_boot=50, seed=0)
    rows = res.rows(model="m", split="test")
    assert [r["metric"] for r in rows] == list(METRIC_NAMES)
    path = res.to_csv(tmp_path / "ci.csv", model="m", split="test")
    with path.open() as fh:
        read = list(csv.DictReader(fh))
    assert read[0]["model"] == "m" and read[0]["metric"] == "accuracy"
    assert {"value", "low", "high", "method", "n_valid", "note", "label"} <= set(read[0])
    assert float(read[8]["value"]) == pytest.approx(res["roc_auc"][0])


def test_roc_band_brackets_the_curve_and_shares_the_auc_interval():
    y, p, ids = _data()
    band = bootstrap_roc_band(y, p, ids, n_boot=200, seed=5)
    assert np.all(band["tpr_low"] <= band["tpr_median"] + 1e-12)
    assert np.all(band["tpr_median"] <= band["tpr_high"] + 1e-12)
    res = metrics_with_ci(y, p, ids, 0.5, n_boot=200, seed=5)
    assert band["auc_ci"] == pytest.approx(res["roc_auc"][1:])  # same resamples, same AUCs


@pytest.mark.parametrize(
    "kwargs", [{"n_boot": 0}, {"seed": "abc"}, {"confidence": 0}, {"proportion_method": "x"}]
)
def test_bad_settings_are_config_errors(kwargs):
    y, p, ids = _data(n=20)
    with pytest.raises(ConfigError):
        metrics_with_ci(y, p, ids, 0.5, **kwargs)
