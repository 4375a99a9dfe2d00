"""Split-conformal sets keep their coverage promise; risk–coverage curves have the right shape."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation.conformal import (
    calibrate,
    conformal_quantile,
    prediction_sets,
    set_labels,
    set_summary,
)
from pneumocxr.evaluation.uncertainty import (
    ensemble_spread,
    error_probability,
    risk_coverage,
    uncertainty_report,
)


def draw(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, model probabilities): y ~ Bernoulli(q) for a latent q, and a miscalibrated model score.

    The model is deliberately miscalibrated (squashed, shifted): conformal coverage must not care.
    """
    q = rng.beta(0.7, 0.5, size=n)  # about 1:1.4 NORMAL:PNEUMONIA, many confident cases
    y = (rng.uniform(size=n) < q).astype(np.int64)
    logit = np.log(q / (1 - q)) * 0.6 + shift + rng.normal(0, 0.7, size=n)
    return y, 1 / (1 + np.exp(-logit))


def mean_coverage(
    method: str, alpha: float, n_cal: int, *, draws: int = 300, **kwargs
) -> tuple[float, float]:
    """(average empirical coverage, average share of two-class sets) over independent draws."""
    rng = np.random.default_rng(123)
    coverage, two_class = [], []
    for _ in range(draws):
        y_cal, p_cal = draw(rng, n_cal)
        y_test, p_test = draw(rng, 200)
        extra = {"rng": rng} if kwargs.get("randomized") else {}
        cal = calibrate(y_cal, p_cal, alpha, method=method, **kwargs, **extra)
        summary = set_summary(prediction_sets(p_test, cal, **extra), y_test)
        coverage.append(summary["coverage"])
        two_class.append(summary["share_two_class"])
    return float(np.mean(coverage)), float(np.mean(two_class))


@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_lac_coverage_is_at_least_one_minus_alpha_and_not_much_more(alpha):
    n_cal = 120
    coverage, _ = mean_coverage("lac", alpha, n_cal)
    # continuous scores: E[coverage] = ceil((n+1)(1-alpha)) / (n+1), exactly
    expected = math.ceil((n_cal + 1) * (1 - alpha)) / (n_cal + 1)
    assert coverage >= 1 - alpha - 0.01
    assert coverage == pytest.approx(expected, abs=0.01)


def test_randomized_aps_coverage_is_exact_on_average():
    coverage, _ = mean_coverage("aps", 0.1, 100, randomized=True)
    assert coverage == pytest.approx(math.ceil(101 * 0.9) / 101, abs=0.01)


def test_deterministic_aps_is_conservative_and_never_empty():
    coverage, refer = mean_coverage("aps", 0.1, 100, draws=100)
    assert coverage >= 0.9 - 0.01
    _, lac_refer = mean_coverage("lac", 0.1, 100, draws=100)
    assert refer >= lac_refer  # APS pays for its adaptivity with larger sets here
    rng = np.random.default_rng(0)
    y, p = draw(rng, 300)
    sets = prediction_sets(p, calibrate(y, p, 0.1, method="aps"))
    assert sets.sum(axis=1).min() >= 1


def test_class_conditional_sets_cover_each_class():
    rng = np.random.default_rng(5)
    per_class = {0: [], 1: []}
    for _ in range(200):
        y_cal, p_cal = draw(rng, 150, shift=1.0)  # shifted: normals are often called pneumonia
        y_test, p_test = draw(rng, 200, shift=1.0)
        cal = calibrate(y_cal, p_cal, 0.1, class_conditional=True)
        summary = set_summary(prediction_sets(p_test, cal), y_test)
        per_class[0].append(summary["coverage_normal"])
        per_class[1].append(summary["coverage_pneumonia"])
    assert np.mean(per_class[0]) >= 0.9 - 0.01
    assert np.mean(per_class[1]) >= 0.9 - 0.01


def test_lac_sets_by_hand():
    # calibration scores 1 - p_y: 0.1, 0.2, 0.3, 0.4, 0.6 (n = 5); alpha = 0.2 -> rank ceil(6 * 0.8) = 5
    y = np.array([1, 1, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.3, 0.4, 0.4])
    cal = calibrate(y, p, 0.2)
    assert cal.qhat == (pytest.approx(0.6), pytest.approx(0.6))
    sets = prediction_sets(np.array([0.95, 0.5, 0.2, 0.41]), cal)
    # keep a class when its probability >= 1 - 0.6 = 0.4
    assert set_labels(sets) == ["PNEUMONIA", "NORMAL|PNEUMONIA", "NORMAL", "NORMAL|PNEUMONIA"]
    summary = set_summary(sets, np.array([1, 0, 1, 1]))
    assert summary["coverage"] == 0.75 and summary["share_uncertain_refer"] == 0.5
    assert summary["share_two_class"] == 0.5 and summary["share_empty"] == 0.0
    assert summary["singleton_accuracy"] == 0.5 and summary["mean_set_size"] == 1.5


def test_empty_lac_sets_below_the_models_accuracy_are_referrals_too(tmp_path):
    # a 100 %-accurate calibration set: scores 1 - p_y = 0.01 … 0.10; alpha = 0.2 -> rank
    # ceil(11 * 0.8) = 9 -> q̂ = 0.09 < 0.5: a class is kept only when its probability >= 0.91
    y = np.ones(10, dtype=np.int64)
    p = 1.0 - np.arange(1, 11) / 100
    cal = calibrate(y, p, 0.2)
    assert cal.qhat[0] == pytest.approx(0.09)
    test_p, test_y = np.array([0.95, 0.5, 0.03, 0.2]), np.array([1, 0, 0, 0])
    sets = prediction_sets(test_p, cal)
    assert set_labels(sets) == ["PNEUMONIA", "", "NORMAL", ""]  # no class plausible: empty, no two-class
    summary = set_summary(sets, test_y)
    assert summary["share_empty"] == 0.5 and summary["share_two_class"] == 0.0
    assert summary["share_uncertain_refer"] == 0.5  # empty sets are referred, not hidden
    assert summary["share_normal_only"] + summary["share_pneumonia_only"] + 0.5 == 1.0
    report = uncertainty_report(tmp_path, test_y, test_p, 0.5, calibration=cal)
    rows = (tmp_path / "uncertainty.csv").read_text().splitlines()
    refer = [line.split(",")[rows[0].split(",").index("refer")] for line in rows[1:]]
    assert refer == ["False", "True", "False", "True"]
    assert report.summary["conformal"]["share_uncertain_refer"] == 0.5
    point = [
        line for line in (tmp_path / "risk_coverage.csv").read_text().splitlines() if "conformal" in line
    ]
    assert point and point[0].split(",")[1] == "0.5"  # decided = 1 - refer


def test_too_few_calibration_images_give_full_sets(caplog):
    assert math.isinf(conformal_quantile(np.array([0.1, 0.2, 0.3]), 0.05))
    assert "cannot certify" in caplog.text
    cal = calibrate(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.9]), 0.05)
    assert prediction_sets(np.array([0.01, 0.99]), cal).all()
    assert cal.to_dict()["qhat"] == [None, None]  # JSON-safe


@pytest.mark.parametrize(
    "kwargs",
    [{"alpha": 0.0}, {"alpha": 1.5}, {"method": "raps"}, {"method": "lac", "randomized": True}],
)
def test_bad_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        calibrate(np.array([0, 1]), np.array([0.2, 0.8]), **{"alpha": 0.1, **kwargs})


def test_randomized_aps_needs_an_injected_generator():
    with pytest.raises(ConfigError, match="Generator"):
        calibrate(np.array([0, 1]), np.array([0.2, 0.8]), 0.1, method="aps", randomized=True)


# ---- risk–coverage ----------------------------------------------------------------------------


def test_risk_coverage_endpoints_and_ties():
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array(
        [0.9, 0.6, 0.4, 0.1, 0.3, 0.7]
    )  # at t = 0.5: correct, correct, correct, correct, wrong, wrong
    u = np.array([0.1, 0.4, 0.4, 0.05, 0.3, 0.2])
    curve = risk_coverage(y, p, 0.5, u)
    # ties (0.4, 0.4) are decided together: 5 distinct cutoffs for 6 images
    np.testing.assert_allclose(curve.coverage, [1 / 6, 2 / 6, 3 / 6, 4 / 6, 1.0])
    np.testing.assert_allclose(curve.selective_accuracy, [1.0, 1.0, 2 / 3, 2 / 4, 4 / 6])
    assert curve.selective_accuracy[-1] == np.mean((p >= 0.5) == y)  # full coverage = plain accuracy
    # AURC: risks weighted by group size (1, 1, 1, 1, 2 images) over 6
    assert curve.aurc == pytest.approx((0 + 0 + 1 / 3 + 1 / 2 + 2 * (2 / 6)) / 6)
    assert curve.accuracy_at(0.5) == pytest.approx(2 / 3)


def test_oracle_uncertainty_is_perfect_until_the_errors_and_random_is_flat():
    rng = np.random.default_rng(0)
    y, p = draw(rng, 4000)
    wrong = ((p >= 0.5) != y).astype(float)
    oracle = risk_coverage(y, p, 0.5, wrong)
    accuracy = 1 - wrong.mean()
    # the oracle's uncertainty is 0/1: all correct images are decided first, together
    assert oracle.coverage[0] == pytest.approx(accuracy) and oracle.selective_accuracy[0] == 1.0
    assert oracle.accuracy_at(accuracy) == 1.0
    informed = risk_coverage(y, p, 0.5, error_probability(p, 0.5))
    shuffled = risk_coverage(y, p, 0.5, rng.permutation(error_probability(p, 0.5)))
    assert oracle.aurc < informed.aurc < shuffled.aurc
    # monotone-ish: deciding fewer, more certain images is more accurate
    acc = [informed.accuracy_at(c) for c in (0.2, 0.5, 0.8, 1.0)]
    assert acc == sorted(acc, reverse=True)
    assert abs(shuffled.accuracy_at(0.5) - accuracy) < 0.05


def test_error_probability_respects_the_threshold():
    np.testing.assert_allclose(error_probability(np.array([0.2, 0.35, 0.9]), 0.3), [0.2, 0.65, 0.1])


def test_ensemble_spread_is_population_std_over_members():
    members = np.array([[0.2, 0.9], [0.4, 0.9]])
    np.testing.assert_allclose(ensemble_spread(members), [0.1, 0.0])
    with pytest.raises(DatasetError):
        ensemble_spread(np.array([0.1, 0.2]))


def test_uncertainty_report_writes_plot_csvs_and_conformal_summary(tmp_path):
    rng = np.random.default_rng(1)
    y_cal, p_cal = draw(rng, 300)
    y, p = draw(rng, 200)
    members = np.clip(p[None, :] + rng.normal(0, 0.05, size=(3, len(p))), 0, 1)
    report = uncertainty_report(
        tmp_path, y, p, 0.5, member_probabilities=members, calibration=calibrate(y_cal, p_cal, 0.1)
    )
    assert (tmp_path / "risk_coverage.png").stat().st_size > 0
    assert (tmp_path / "risk_coverage.csv").read_text().startswith("score,coverage")
    lines = (tmp_path / "uncertainty.csv").read_text().splitlines()
    assert len(lines) == 201 and "conformal_set" in lines[0] and "ensemble_spread" in lines[0]
    assert set(report.curves) == {"error_probability", "ensemble_spread"}
    conformal = report.summary["conformal"]
    assert 0.8 < conformal["coverage"] <= 1.0 and 0 <= conformal["share_uncertain_refer"] <= 1
    json.dumps(report.summary)  # JSON-ready for metrics.json
