"""Operating-threshold rules on validation data: Youden centre and edge, target sensitivity, bootstrap."""

import numpy as np
import pytest
import torch
from scipy.special import expit, logit

from pneumocxr.config import THRESHOLD_RULES
from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation.metrics import binary_metrics
from pneumocxr.evaluation.thresholds import (
    MIN_MARGIN_LOGIT,
    RULES,
    all_rules,
    choose_threshold,
    gap_midpoint,
)

# Thresholds (>= t positive): t=.8 sens .25/spec 1; .7 .5/1; .6 .75/1; .5 .75/.75; .4 1/.75; .3 1/.5 …
Y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
P = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
MIDPOINT_RULES = ("youden", "target_sensitivity", "bootstrap_median")


def logit_mid(a: float, b: float) -> float:
    return float(expit((logit(a) + logit(b)) / 2))


def test_the_rules_a_checkpoint_stores_are_the_configurable_ones():
    assert RULES == THRESHOLD_RULES == ("youden", "youden_edge", "target_sensitivity", "bootstrap_median")


def test_youden_edge_keeps_the_old_rule_first_maximum_on_the_score():
    c = choose_threshold(Y, P, "youden_edge")
    # J = 0.75 at both t = 0.6 (sens .75, spec 1) and t = 0.4 (sens 1, spec .75): the higher, ON the score
    assert (c.threshold, c.sensitivity, c.specificity) == (0.6, 0.75, 1.0)
    assert c.youden_j == pytest.approx(0.75) and c.margin_logit == 0.0


def test_youden_centre_in_a_wide_perfect_separation_is_the_middle_not_the_edge():
    # 10 NORMAL at logits -10..-1, 10 PNEUMONIA at 1..10: J = 1 for every t in (-1, 1]; one film
    # (tolerance 1/10) also admits t in (-2, -1] and (1, 2]: the optimal interval is (-2, 2], centre 0
    z = np.r_[np.arange(-10, 0), np.arange(1, 11)].astype(float)
    y = np.r_[np.zeros(10), np.ones(10)].astype(int)
    c = choose_threshold(y, expit(z), "youden")
    assert c.threshold == pytest.approx(0.5, abs=1e-12)
    assert (c.sensitivity, c.specificity, c.tolerance) == (1.0, 1.0, 0.1)
    assert c.margin_logit == pytest.approx(1.0)  # halfway between the films at -1 and +1
    assert (c.range_low, c.range_high) == pytest.approx((expit(-2), expit(2)))
    assert choose_threshold(y, expit(z), "youden_edge").threshold == pytest.approx(expit(1))  # the edge


def test_youden_centre_of_an_asymmetric_interval_is_its_logit_midpoint():
    # NORMAL -10..-1, PNEUMONIA 3..12: optimal (-2, 4] with the one-film tolerance: centre logit 1
    z = np.r_[np.arange(-10, 0), np.arange(3, 13)].astype(float)
    y = np.r_[np.zeros(10), np.ones(10)].astype(int)
    c = choose_threshold(y, expit(z), "youden")
    assert logit(c.threshold) == pytest.approx(1.0)
    assert c.margin_logit == pytest.approx(2.0)


def test_youden_centre_counts_a_point_one_film_below_the_maximum_as_optimal():
    # J: .25 .5 .75 .5 .75 .5 .25 0 at t = .8 … .1; tolerance 1/4: the run t in (.2, .7] is optimal,
    # its logit centre lies in the gap (.4, .5] (J = .5 = max - one film)
    c = choose_threshold(Y, P, "youden")
    assert c.threshold == pytest.approx(logit_mid(0.2, 0.7))
    assert (c.sensitivity, c.specificity) == (0.75, 0.75)
    assert c.youden_j >= 0.75 - c.tolerance - 1e-12


def test_ties_are_one_operating_point_and_the_centre_is_never_on_a_score():
    y = np.array([0, 0, 1, 0, 1, 1, 0, 1, 1, 1])
    p = np.array([0.1, 0.3, 0.3, 0.3, 0.5, 0.5, 0.6, 0.6, 0.9, 0.9])
    for rule in RULES:
        c = choose_threshold(y, p, rule)
        m = binary_metrics(y, p, c.threshold)
        assert (c.sensitivity, c.specificity) == (m["sensitivity"], m["specificity"])
        if rule != "youden_edge":
            assert c.threshold not in set(p) and c.margin_logit > 0


@pytest.mark.parametrize(
    ("target", "point", "below"), [(0.95, 0.4, 0.3), (1.0, 0.4, 0.3), (0.75, 0.6, 0.5), (0.5, 0.7, 0.6)]
)
def test_target_sensitivity_takes_the_highest_point_meeting_it_cut_midway_below(target, point, below):
    c = choose_threshold(Y, P, "target_sensitivity", target_sensitivity=target)
    assert c.threshold == pytest.approx(logit_mid(below, point))
    assert below < c.threshold < point
    assert c.sensitivity >= target and c.target_sensitivity == target


def test_target_sensitivity_defaults_to_95_percent():
    assert choose_threshold(Y, P, "target_sensitivity").target_sensitivity == 0.95


def test_fixed_threshold_reports_validation_sens_spec():
    c = choose_threshold(Y, P, "fixed")
    assert (c.threshold, c.sensitivity, c.specificity) == (0.5, 0.75, 0.75)
    assert choose_threshold(Y, P, "fixed", fixed=0.65).sensitivity == 0.5


@pytest.mark.parametrize("seed", range(3))
def test_choices_match_brute_force_and_binary_metrics(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    p = np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1), 2)  # many ties
    candidates = np.unique(p)
    j = np.array([np.mean(p[y == 1] >= t) + np.mean(p[y == 0] < t) - 1 for t in candidates])
    edge = choose_threshold(y, p, "youden_edge")
    assert edge.threshold == candidates[np.flatnonzero(np.isclose(j, j.max()))].max()
    centre = choose_threshold(y, p, "youden")
    assert centre.youden_j >= j.max() - centre.tolerance - 1e-12
    for c in all_rules(y, p).values():
        m = binary_metrics(y, p, c.threshold)
        assert (c.sensitivity, c.specificity) == (m["sensitivity"], m["specificity"])
    t = choose_threshold(y, p, "target_sensitivity", target_sensitivity=0.9)
    point = candidates[candidates > t.threshold].min()  # the lowest score above the cut: same decisions
    assert np.mean(p[y == 1] >= point) >= 0.9 and not np.any((p > t.threshold) & (p < point))
    assert all(np.mean(p[y == 1] >= h) < 0.9 for h in candidates[candidates > point])


@pytest.mark.parametrize("seed", range(5))
def test_midpoint_rules_keep_clear_of_every_validation_score(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    z = (2.5 * y - 1.2 + rng.normal(0, 1.0, 300)).astype(np.float32)  # float32 logits, as a network gives
    p = expit(z.astype(np.float64) / 1.3)
    zs = np.sort(logit(p))
    for rule in MIDPOINT_RULES:
        c = choose_threshold(y, p, rule, patient_ids=np.arange(300) // 2)
        gap = np.searchsorted(zs, logit(c.threshold))
        half_gap = (zs[gap] - zs[gap - 1]) / 2
        assert c.margin_logit >= min(MIN_MARGIN_LOGIT, half_gap) - 1e-9
        assert c.margin_logit == pytest.approx(np.min(np.abs(zs - logit(c.threshold))), abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_float32_and_float64_probabilities_decide_alike_at_every_rule(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 500)
    z32 = (4 * y - 2 + rng.normal(0, 1.5, 500)).astype(np.float32)
    temperature = 1.7
    p64 = expit(z32.astype(np.float64) / temperature)  # the Predictor path
    p32 = torch.sigmoid(torch.from_numpy(z32) / temperature).numpy()  # a float32 consumer
    assert p32.dtype == np.float32 and not np.array_equal(p32.astype(np.float64), p64)
    for rule, c in all_rules(y, p64).items():
        if rule == "youden_edge":
            continue  # ON a score by design: the one rule without this guarantee
        assert np.array_equal(p64 >= c.threshold, p32 >= np.float32(c.threshold)), rule
        assert np.array_equal(p64 >= c.threshold, p32.astype(np.float64) >= c.threshold), rule


def test_saturated_probabilities_still_get_a_threshold_strictly_between():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.0, 0.0, 1e-9, 0.999, 1.0, 1.0])
    for rule in MIDPOINT_RULES:
        c = choose_threshold(y, p, rule)
        assert 1e-9 < c.threshold < 0.999 and (c.sensitivity, c.specificity) == (1.0, 1.0)
    assert 0.999 < gap_midpoint(0.999, 1.0) < 1.0 and 0.0 < gap_midpoint(0.0, 1e-9) < 1e-9


def test_bootstrap_median_is_seeded_and_resamples_patients_when_it_has_them():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    p = expit(2 * y - 1 + rng.normal(0, 1, 120))
    patients = np.arange(120) // 3
    a = choose_threshold(y, p, "bootstrap_median", patient_ids=patients, seed=7)
    b = choose_threshold(y, p, "bootstrap_median", patient_ids=patients, seed=7)
    assert a == b
    assert a.bootstrap_unit == "patient" and a.n_boot == 200 and a.n_valid_resamples == 200
    assert a.range_low < a.threshold < a.range_high
    images = choose_threshold(y, p, "bootstrap_median", seed=7, n_boot=50)
    assert images.bootstrap_unit == "image" and images.n_boot == 50
    # the seed matters (the resampled range moves); the median itself is one of few gap centres
    other = [choose_threshold(y, p, "bootstrap_median", patient_ids=patients, seed=s) for s in (1, 2)]
    assert len({(c.range_low, c.range_high) for c in (a, *other)}) > 1


def test_bootstrap_median_of_a_perfect_separation_lies_inside_the_optimal_gap():
    z = np.r_[np.arange(-10, 0), np.arange(1, 11)].astype(float)
    y = np.r_[np.zeros(10), np.ones(10)].astype(int)
    c = choose_threshold(y, expit(z), "bootstrap_median", seed=0)
    assert expit(-1) < c.threshold < expit(1) and (c.sensitivity, c.specificity) == (1.0, 1.0)


def test_one_class_validation_split_is_refused_with_a_reason():
    with pytest.raises(DatasetError, match="only one class"):
        choose_threshold([1, 1, 1], [0.2, 0.5, 0.9])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "best"},
        {"method": "target_sensitivity", "target_sensitivity": 0.0},
        {"method": "fixed", "fixed": 2},
        {"method": "bootstrap_median", "n_boot": 3},
    ],
)
def test_bad_settings_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        choose_threshold(Y, P, **kwargs)


def test_to_dict_is_serialisable():
    d = choose_threshold(Y, P, "youden_edge").to_dict()
    assert d == {
        "threshold": 0.6,
        "method": "youden_edge",
        "sensitivity": 0.75,
        "specificity": 1.0,
        "target_sensitivity": None,
        "margin_logit": 0.0,
        "tolerance": None,
        "range_low": None,
        "range_high": None,
        "n_boot": None,
        "n_valid_resamples": None,
        "bootstrap_unit": None,
        "youden_j": 0.75,
    }
