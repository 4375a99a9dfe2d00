"""PPV/NPV at a user's prevalence: Bayes' theorem against hand computation, bootstrap intervals."""

import numpy as np
import pytest

from pneumocxr.errors import ConfigError
from pneumocxr.evaluation import binary_metrics, check_prevalence, predictive_values, prevalence_adjusted


def test_predictive_values_match_a_hand_computation():
    # sens .9, spec .8, P .1: PPV = .09 / (.09 + .18) = 1/3; NPV = .72 / (.72 + .01) = 72/73
    ppv, npv = predictive_values(0.9, 0.8, 0.1)
    assert float(ppv) == pytest.approx(1 / 3) and float(npv) == pytest.approx(72 / 73)
    # the Kermany-like screening case: sens .98, spec .62 at 5 % prevalence
    ppv, npv = predictive_values(0.98, 0.62, 0.05)
    assert float(ppv) == pytest.approx(0.049 / (0.049 + 0.38 * 0.95))
    assert float(npv) == pytest.approx(0.62 * 0.95 / (0.62 * 0.95 + 0.02 * 0.05))


def test_predictive_values_work_elementwise_and_say_nan_when_undefined():
    ppv, npv = predictive_values(np.array([0.0, 1.0]), np.array([1.0, 0.0]), 0.3)
    assert np.isnan(ppv[0]) and npv[0] == pytest.approx(0.7)  # nothing called positive: PPV undefined
    assert ppv[1] == pytest.approx(0.3) and np.isnan(npv[1])


def _data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, n), 0, 1)
    return y, p, np.arange(n) // 2


def test_at_the_samples_own_prevalence_bayes_gives_back_the_sample_ppv_and_npv():
    y, p, ids = _data()
    m = binary_metrics(y, p, 0.5)
    adjusted = prevalence_adjusted(y, p, ids, 0.5, float(y.mean()), n_boot=50)
    assert adjusted.ppv.value == pytest.approx(m["ppv"]) and adjusted.npv.value == pytest.approx(m["npv"])
    assert (adjusted.sensitivity, adjusted.specificity) == pytest.approx((m["sensitivity"], m["specificity"]))


def test_intervals_are_a_seeded_patient_bootstrap_around_the_value():
    y, p, ids = _data(1)
    a = prevalence_adjusted(y, p, ids, 0.45, 0.1, n_boot=200, seed=3)
    b = prevalence_adjusted(y, p, ids, 0.45, 0.1, n_boot=200, seed=3)
    assert a == b
    for e in (a.ppv, a.npv):
        assert e.low <= e.value <= e.high and e.method == "patient_bootstrap" and e.n_valid == 200
    assert "patient bootstrap" in a.method and a.to_dict()["ppv"]["value"] == a.ppv.value
    assert prevalence_adjusted(y, p, None, 0.45, 0.1, n_boot=20).ppv.method == "image_bootstrap"
    # rarer disease: fewer of the positive calls are right, more of the negative ones are
    rare = prevalence_adjusted(y, p, ids, 0.45, 0.02, n_boot=20)
    assert rare.ppv.value < a.ppv.value and rare.npv.value > a.npv.value


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, float("nan"), "abc", None])
def test_prevalence_outside_zero_one_is_a_config_error_naming_the_value(bad):
    with pytest.raises(ConfigError, match=r"prevalence=.*strictly between 0 and 1"):
        check_prevalence(bad)


def test_good_prevalence_is_returned_as_a_float():
    assert check_prevalence("0.25") == 0.25
