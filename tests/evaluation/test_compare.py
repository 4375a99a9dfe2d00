"""Paired tests: DeLong against pROC's published aSAH results, against the bootstrap; McNemar by hand.

The aSAH data (Turck et al. 2010, Intensive Care Med 36:107; shipped with the pROC R package, 113
patients: 41 "Poor" outcomes = cases, 72 "Good" = controls) is the worked example of pROC's
``roc.test``. The expected values below are pROC's own published results, from its test suite
(github.com/xrobin/pROC, tests/testthat/test-roc.test.R and test-var.R):

    roc.test(r.wfns, r.s100b): Z = 2.20898359144091, p = 0.0271757822291882,
                                95% CI of the AUC difference [0.0104061769564846, 0.174214419249478]
    roc.test(r.wfns, r.ndka):  Z = 2.79777591868904, p = 0.00514557970691098,
                                CI [0.0634011709339876, 0.3600405634833566]
    roc.test(r.ndka, r.s100b): Z = -1.39077002573558, p = 0.164295175223054,
                                CI [-0.2876917446341914, 0.0488706064228094]
    var(r.wfns) = 0.00146991470882363, var(r.ndka) = 0.0031908105493913,
    var(r.s100b) = 0.00266868245717244 (DeLong variance of each AUC)
    AUCs: s100b 0.731368563685637, wfns 0.823678861788618, ndka 0.611957994579946

The scores: WFNS is the real grade (1–5). For s100b and ndka the vectors below are rank-equivalent
integer codes rebuilt from pROC's published DeLong placement values for these data
(tests/testthat/helper-deLongPlacementsCpp-expected.R, "forward" direction, patients in dataset
order): each case's code sits between / on the control codes exactly where its placement says,
and recomputing the placements from these codes reproduces pROC's to 1e-15. DeLong's test depends
on the scores only through their joint ranks, so these codes give exactly pROC's statistics, and
the pairing (same patient across markers) is preserved.
"""

import numpy as np
import pytest
from scipy.stats import binom, chi2

from pneumocxr.evaluation.compare import (
    MCNEMAR_EXACT_BELOW,
    delong_auc_ci,
    delong_covariance,
    delong_test,
    mcnemar_test,
    pairwise_comparisons,
)
from pneumocxr.evaluation.metrics import roc_auc

# fmt: off
# 41 cases (Poor outcome) then 72 controls (Good), each in dataset order.
WFNS_CASES = (
    3, 2, 4, 5, 5, 5, 5, 2, 5, 2, 1, 2, 5, 4, 4, 2, 5, 5, 5, 2, 5, 2, 5, 2, 4, 5, 4, 4, 1, 4, 4, 2, 2,
    5, 5, 2, 2, 5, 5, 5, 5
)
WFNS_CONTROLS = (
    1, 1, 1, 1, 5, 1, 2, 2, 1, 2, 2, 1, 1, 1, 2, 1, 2, 1, 1, 3, 4, 1, 4, 1, 5, 5, 1, 1, 2, 4, 1, 1, 2,
    2, 1, 2, 1, 2, 2, 1, 1, 1, 1, 2, 1, 2, 1, 1, 3, 2, 4, 2, 1, 4, 1, 1, 5, 4, 2, 2, 1, 1, 1, 3, 1, 2,
    2, 4, 4, 1, 1, 1
)
S100B_CASES = (
    13, 9, 19, 12, 36, 42, 40, 3, 29, 7, 3, 34, 32, 39, 42, 24, 42, 42, 42, 3, 42, 26, 0, 7, 22, 42, 24,
    42, 5, 24, 13, 9, 11, 22, 42, 15, 42, 27, 42, 42, 36
)
S100B_CONTROLS = (
    13, 15, 9, 1, 37, 21, 9, 9, 1, 5, 1, 7, 11, 3, 21, 3, 11, 13, 21, 1, 19, 15, 31, 7, 41, 37, 19, 3,
    35, 37, 11, 5, 7, 5, 1, 13, 9, 15, 17, 1, 1, 7, 1, 7, 5, 19, 7, 5, 29, 11, 25, 3, 9, 27, 3, 1, 23,
    33, 9, 17, 5, 15, 9, 3, 1, 21, 17, 37, 21, 17, 41, 39
)
NDKA_CASES = (
    42, 26, 32, 40, 4, 10, 20, 48, 52, 48, 48, 16, 36, 44, 6, 8, 34, 2, 56, 44, 18, 20, 24, 34, 46, 29,
    44, 8, 54, 39, 4, 13, 44, 4, 12, 48, 22, 36, 50, 20, 40
)
NDKA_CONTROLS = (
    1, 9, 7, 19, 5, 39, 5, 43, 33, 43, 41, 51, 11, 5, 25, 5, 5, 55, 27, 15, 15, 43, 3, 7, 5, 13, 31, 7,
    37, 49, 7, 5, 25, 11, 7, 31, 47, 45, 17, 23, 53, 5, 41, 15, 19, 19, 37, 3, 41, 25, 11, 19, 43, 19,
    23, 7, 15, 19, 47, 9, 25, 29, 49, 21, 25, 11, 47, 17, 35, 45, 5, 33
)
# fmt: on

Y_ASAH = np.r_[np.ones(41, dtype=int), np.zeros(72, dtype=int)]
WFNS = np.r_[WFNS_CASES, WFNS_CONTROLS].astype(float)
S100B = np.r_[S100B_CASES, S100B_CONTROLS].astype(float)
NDKA = np.r_[NDKA_CASES, NDKA_CONTROLS].astype(float)


def test_asah_aucs_and_delong_variances_match_proc():
    aucs, cov = delong_covariance(Y_ASAH, WFNS, NDKA, S100B)
    assert aucs == pytest.approx([0.823678861788618, 0.611957994579946, 0.731368563685637], abs=1e-12)
    assert np.diag(cov) == pytest.approx(
        [0.00146991470882363, 0.0031908105493913, 0.00266868245717244], rel=1e-9
    )


@pytest.mark.parametrize(
    ("a", "b", "z", "p", "ci"),
    [
        (WFNS, S100B, 2.20898359144091, 0.0271757822291882, (0.0104061769564846, 0.174214419249478)),
        (WFNS, NDKA, 2.79777591868904, 0.00514557970691098, (0.0634011709339876, 0.3600405634833566)),
        (NDKA, S100B, -1.39077002573558, 0.164295175223054, (-0.2876917446341914, 0.0488706064228094)),
    ],
)
def test_delong_reproduces_proc_roc_test_on_asah(a, b, z, p, ci):
    r = delong_test(Y_ASAH, a, b)
    assert r.z == pytest.approx(z, rel=1e-9)
    assert r.p_value == pytest.approx(p, rel=1e-9)
    assert (r.ci_low, r.ci_high) == pytest.approx(ci, rel=1e-9)
    assert r.difference == pytest.approx(r.auc_a - r.auc_b)
    flipped = delong_test(Y_ASAH, b, a)
    assert flipped.z == pytest.approx(-r.z) and flipped.p_value == pytest.approx(r.p_value)


def test_single_auc_delong_interval_matches_proc():
    # pROC: ci.auc(r.s100b) = 0.7314 (95% CI 0.6301–0.8326, DeLong)
    auc, lo, hi = delong_auc_ci(Y_ASAH, S100B)
    assert (round(auc, 4), round(lo, 4), round(hi, 4)) == (0.7314, 0.6301, 0.8326)


def test_delong_standard_error_agrees_with_the_bootstrap():
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 2, n)
    shared = rng.normal(size=n)  # correlated scores: the paired covariance matters
    a = y * 1.0 + shared + 0.5 * rng.normal(size=n)
    b = y * 0.7 + shared + 0.8 * rng.normal(size=n)
    r = delong_test(y, a, b)
    diffs = []
    for _ in range(2000):
        idx = rng.integers(0, n, n)
        if y[idx].min() != y[idx].max():
            diffs.append(roc_auc(y[idx], a[idx]) - roc_auc(y[idx], b[idx]))
    assert r.se == pytest.approx(np.std(diffs, ddof=1), rel=0.12)
    _, cov = delong_covariance(y, a)
    single = [roc_auc(y[i], a[i]) for i in (rng.integers(0, n, n) for _ in range(2000))]
    assert np.sqrt(cov[0, 0]) == pytest.approx(np.std(single, ddof=1), rel=0.12)


def test_delong_uses_ranks_only_and_handles_identical_and_one_class_inputs():
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.2, 0.9, 0.5])
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    q = np.array([0.3, 0.1, 0.6, 0.7, 0.2, 0.5, 0.4, 0.9])
    r1, r2 = delong_test(y, p, q), delong_test(y, np.log(p / (1 - p)), q * 10)
    assert r1.z == pytest.approx(r2.z) and r1.p_value == pytest.approx(r2.p_value)
    same = delong_test(y, p, p)
    assert (same.z, same.p_value, same.difference) == (0.0, 1.0, 0.0)
    one = delong_test(np.ones(8, dtype=int), p, q)
    assert np.isnan(one.p_value) and "at least 2" in one.note


def test_mcnemar_exact_small_case_by_hand():
    # b = 10 (A right, B wrong), c = 2: exact two-sided p = 2 * P(Bin(12, 1/2) <= 2) = 2 * 79 / 4096
    y = np.zeros(20, dtype=int)
    a = np.r_[np.zeros(10), np.ones(2), np.zeros(8)].astype(int)  # right on 0-9 and 12-19
    b = np.r_[np.ones(10), np.zeros(2), np.zeros(8)].astype(int)  # right on 10-19
    r = mcnemar_test(y, a, b)
    assert (r.b, r.c, r.method) == (10, 2, "exact")
    assert r.p_value == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert r.p_value == pytest.approx(2 * binom.cdf(2, 12, 0.5))
    assert (r.accuracy_a, r.accuracy_b) == (18 / 20, 10 / 20)


def _paired(n_b, n_c, n_both=5):
    y = np.ones(n_b + n_c + n_both, dtype=int)
    a = np.r_[np.ones(n_b), np.zeros(n_c), np.ones(n_both)].astype(int)
    b = np.r_[np.zeros(n_b), np.ones(n_c), np.ones(n_both)].astype(int)
    return y, a, b


def test_mcnemar_chi_square_with_continuity_correction_by_hand():
    r = mcnemar_test(*_paired(30, 12))
    assert r.method == "chi2_cc"
    assert r.statistic == pytest.approx((18 - 1) ** 2 / 42)
    assert r.p_value == pytest.approx(chi2.sf(289 / 42, 1))
    assert r.p_value == pytest.approx(0.008711, abs=1e-5)


def test_mcnemar_switches_method_at_25_discordant_pairs_and_edge_cases():
    assert mcnemar_test(*_paired(12, MCNEMAR_EXACT_BELOW - 1 - 12)).method == "exact"
    assert mcnemar_test(*_paired(12, MCNEMAR_EXACT_BELOW - 12)).method == "chi2_cc"
    equal = mcnemar_test(*_paired(3, 3))
    assert equal.p_value == 1.0
    none = mcnemar_test(*_paired(0, 0))
    assert (none.b, none.c, none.p_value) == (0, 0, 1.0)


def test_pairwise_comparisons_give_one_row_per_pair():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 100)
    probs = {
        name: np.clip(s * y + rng.uniform(0, 1 - s, 100), 0, 1)
        for name, s in [("a", 0.4), ("b", 0.2), ("c", 0.3)]
    }
    rows = pairwise_comparisons(y, probs, {"a": 0.5, "b": 0.5, "c": 0.4})
    assert [(r["model_a"], r["model_b"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert rows[0]["delong_p"] == pytest.approx(delong_test(y, probs["a"], probs["b"]).p_value)
    assert rows[1]["mcnemar_p"] == pytest.approx(
        mcnemar_test(y, (probs["a"] >= 0.5).astype(int), (probs["c"] >= 0.4).astype(int)).p_value
    )
