"""Operating-threshold choice on validation data: Youden, target sensitivity, fixed."""

import numpy as np
import pytest

from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation.metrics import binary_metrics
from pneumocxr.evaluation.thresholds import choose_threshold

# Thresholds (>= t positive): t=.8 sens .25/spec 1; .7 .5/1; .6 .75/1; .5 .75/.75; .4 1/.75; .3 1/.5 …
Y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
P = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])


def test_youden_on_a_constructed_case_breaks_ties_to_the_higher_threshold():
    c = choose_threshold(Y, P)
    # J = 0.75 at both t = 0.6 (sens .75, spec 1) and t = 0.4 (sens 1, spec .75): take 0.6
    assert c.method == "youden"
    assert c.threshold == 0.6
    assert (c.sensitivity, c.specificity) == (0.75, 1.0)
    assert c.youden_j == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("target", "expected"), [(0.95, 0.4), (1.0, 0.4), (0.75, 0.6), (0.7, 0.6), (0.5, 0.7)]
)
def test_target_sensitivity_takes_the_highest_threshold_meeting_it(target, expected):
    c = choose_threshold(Y, P, "target_sensitivity", target_sensitivity=target)
    assert c.threshold == expected
    assert c.sensitivity >= target
    assert c.target_sensitivity == target


def test_fixed_threshold_reports_validation_sens_spec():
    c = choose_threshold(Y, P, "fixed")
    assert (c.threshold, c.sensitivity, c.specificity) == (0.5, 0.75, 0.75)
    assert choose_threshold(Y, P, "fixed", fixed=0.65).sensitivity == 0.5


@pytest.mark.parametrize("seed", range(3))
def test_choice_matches_brute_force_and_binary_metrics(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    p = np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1), 2)
    c = choose_threshold(y, p)
    candidates = np.unique(p)
    j = [np.mean(p[y == 1] >= t) + np.mean(p[y == 0] < t) - 1 for t in candidates]
    best = candidates[np.flatnonzero(np.isclose(j, max(j)))].max()
    assert c.threshold == best
    m = binary_metrics(y, p, c.threshold)
    assert (c.sensitivity, c.specificity) == pytest.approx((m["sensitivity"], m["specificity"]))
    t = choose_threshold(y, p, "target_sensitivity", target_sensitivity=0.9)
    higher = candidates[candidates > t.threshold]
    assert np.mean(p[y == 1] >= t.threshold) >= 0.9
    assert all(np.mean(p[y == 1] >= h) < 0.9 for h in higher)


def test_one_class_validation_split_is_refused_with_a_reason():
    with pytest.raises(DatasetError, match="only one class"):
        choose_threshold([1, 1, 1], [0.2, 0.5, 0.9])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "best"},
        {"method": "target_sensitivity", "target_sensitivity": 0.0},
        {"method": "fixed", "fixed": 2},
    ],
)
def test_bad_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        choose_threshold(Y, P, **kwargs)


def test_to_dict_is_serialisable():
    d = choose_threshold(Y, P).to_dict()
    assert d == {
        "threshold": 0.6,
        "method": "youden",
        "sensitivity": 0.75,
        "specificity": 1.0,
        "target_sensitivity": None,
        "youden_j": 0.75,
    }
