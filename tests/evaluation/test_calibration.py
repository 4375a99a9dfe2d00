"""Temperature scaling and reliability data."""

import numpy as np
import pytest
from scipy.special import expit, softmax

from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    probability_to_logit,
    reliability_curve,
)


@pytest.mark.parametrize("true_t", [2.5, 0.5])
def test_temperature_scaling_recovers_a_known_temperature_binary(true_t):
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, 20000)  # calibrated logits
    y = (rng.uniform(size=z.size) < expit(z)).astype(int)
    t = fit_temperature(z * true_t, y)  # the model's logits are z scaled by T
    assert t == pytest.approx(true_t, rel=0.05)
    calibrated = apply_temperature(z * true_t, t)
    raw = expit(z * true_t)
    assert expected_calibration_error(y, calibrated) < expected_calibration_error(y, raw)
    assert np.array_equal(np.argsort(calibrated, kind="stable"), np.argsort(raw, kind="stable"))


def test_temperature_scaling_recovers_a_known_temperature_multiclass():
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 1.5, (15000, 3))
    probs = softmax(z, axis=1)
    y = (rng.uniform(size=(15000, 1)) > probs.cumsum(axis=1)).sum(axis=1)  # one categorical draw per row
    assert fit_temperature(z * 3.0, y) == pytest.approx(3.0, rel=0.05)
    out = apply_temperature(z, 1.0)
    assert out.shape == (15000, 3) and np.allclose(out.sum(axis=1), 1.0)


def test_one_logit_column_is_accepted():
    z = np.array([[-2.0], [0.0], [3.0], [1.0]])
    assert apply_temperature(z, 1.0) == pytest.approx(expit(z[:, 0]))
    assert fit_temperature(z, [0, 0, 1, 1]) > 0


def test_probability_to_logit_round_trips_and_stays_finite():
    p = np.array([0.0, 0.2, 0.5, 0.9, 1.0])
    z = probability_to_logit(p)
    assert np.all(np.isfinite(z))
    assert apply_temperature(z, 1.0)[1:4] == pytest.approx(p[1:4])


def test_reliability_curve_on_a_hand_case():
    y = np.array([0, 0, 1, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.4, 0.3, 0.6, 0.7, 0.8, 1.0])
    rel = reliability_curve(y, p, n_bins=4)
    assert rel.counts.tolist() == [2, 2, 2, 2]  # 1.0 belongs to the last (closed) bin
    assert rel.mean_predicted == pytest.approx([0.15, 0.35, 0.65, 0.9])
    assert rel.observed == pytest.approx([0.0, 0.5, 0.5, 1.0])
    assert rel.ece == pytest.approx((0.15 + 0.15 + 0.15 + 0.1) * 2 / 8)
    assert rel.edges == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    sparse = reliability_curve(y, p, n_bins=10)
    assert sparse.counts[5] == 0 and np.isnan(sparse.mean_predicted[5]) and np.isnan(sparse.observed[5])
    assert len(sparse.rows()) == 10 and sparse.rows()[9]["count"] == 1


def test_bad_inputs():
    with pytest.raises(ConfigError):
        apply_temperature([0.1], 0.0)
    with pytest.raises(ConfigError):
        reliability_curve([0, 1], [0.1, 0.9], n_bins=0)
    with pytest.raises(DatasetError):
        fit_temperature(np.zeros((4, 3)), [0, 1, 3, 0])  # label 3 with 3 classes
    with pytest.raises(DatasetError):
        fit_temperature([0.1, np.inf], [0, 1])
    with pytest.raises(DatasetError):
        fit_temperature([0.1, 0.2, 0.3], [0, 1])
