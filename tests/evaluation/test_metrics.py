"""Metric definitions: hand-computed tiny cases, agreement with sklearn, NaN-with-reason when undefined."""

import numpy as np
import pytest
from sklearn import metrics as skm

from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation.metrics import (
    METRIC_NAMES,
    average_precision,
    binary_metrics,
    classification_report,
    confusion_matrix,
    roc_auc,
)

# 4 positives, 4 negatives; at 0.5: tp=3 (0.9, 0.8, 0.7), fn=1 (0.4), fp=1 (0.6), tn=3.
Y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
P = np.array([0.9, 0.8, 0.4, 0.3, 0.6, 0.2, 0.1, 0.7])


def test_tiny_case_matches_hand_computation():
    m = binary_metrics(Y, P, 0.5, n_bins=4)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 1, 3, 1)
    for key in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "balanced_accuracy"):
        assert m[key] == pytest.approx(0.75), key
    assert m["mcc"] == pytest.approx((3 * 3 - 1 * 1) / np.sqrt(4 * 4 * 4 * 4))  # 0.5
    # 16 positive/negative pairs, only 0.4 < 0.6 is mis-ordered
    assert m["roc_auc"] == pytest.approx(15 / 16)
    # ranked: + + + − + − − − → precisions at each positive 1, 1, 1, 4/5
    assert m["pr_auc"] == pytest.approx((1 + 1 + 1 + 0.8) / 4)
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.36 + 0.09 + 0.36 + 0.04 + 0.01 + 0.09) / 8)
    # 4 bins, two images each; every bin's |mean predicted − observed| is 0.15
    assert m["ece"] == pytest.approx(0.15)
    assert m["undefined"] == {}
    assert (m["n"], m["n_positive"], m["threshold"]) == (8, 4, 0.5)


def test_threshold_is_inclusive():
    assert binary_metrics(Y, P, 0.6)["fp"] == 1  # 0.6 >= 0.6 is predicted positive
    assert binary_metrics(Y, P, 0.61)["fp"] == 0


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p = np.round(np.clip(0.3 * y + rng.uniform(0, 0.7, 300), 0, 1), 2)  # rounded: plenty of ties
    t = 0.5
    pred = (p >= t).astype(int)
    m = binary_metrics(y, p, t)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert m["ppv"] == pytest.approx(skm.precision_score(y, pred))
    assert m["npv"] == pytest.approx(skm.precision_score(y, pred, pos_label=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))


def test_one_class_gives_nan_with_reason_not_a_crash():
    y = np.ones(5, dtype=int)
    m = binary_metrics(y, [0.9, 0.2, 0.7, 0.6, 0.8], 0.5)
    assert np.isnan(m["roc_auc"]) and m["undefined"]["roc_auc"] == "only one class present"
    assert np.isnan(m["specificity"]) and "no negative cases" in m["undefined"]["specificity"]
    assert np.isnan(m["balanced_accuracy"]) and np.isnan(m["mcc"])
    assert m["sensitivity"] == pytest.approx(0.8)
    assert m["pr_auc"] == pytest.approx(1.0)  # all positives: precision is 1 everywhere
    assert not np.isnan(m["brier"]) and not np.isnan(m["ece"])

    m0 = binary_metrics(np.zeros(4, dtype=int), [0.1, 0.2, 0.3, 0.4], 0.5)
    assert np.isnan(m0["sensitivity"]) and np.isnan(m0["pr_auc"]) and np.isnan(m0["ppv"])
    assert m0["undefined"]["pr_auc"] == "no positive cases"
    assert "no positive predictions" in m0["undefined"]["ppv"]
    assert np.isnan(m0["f1"])  # no positives and no positive predictions
    assert m0["specificity"] == 1.0


def test_no_positive_predictions_is_nan_ppv_not_zero():
    m = binary_metrics(Y, P, 0.95)  # nothing reaches 0.95
    assert np.isnan(m["ppv"]) and "no positive predictions" in m["undefined"]["ppv"]
    assert np.isnan(m["mcc"]) and m["undefined"]["mcc"] == "all predictions are in one class"
    assert m["f1"] == 0.0  # defined: recall is 0
    assert m["sensitivity"] == 0.0 and m["specificity"] == 1.0


def test_result_has_every_metric_name():
    m = binary_metrics(Y, P)
    assert set(METRIC_NAMES) <= set(m)
    assert all(isinstance(m[k], float) for k in METRIC_NAMES)


@pytest.mark.parametrize(
    ("y", "p", "error"),
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], DatasetError),  # label not binary
        ([0, 1], [0.1, 1.5], DatasetError),  # not a probability (a logit?)
        ([0, 1], [0.1, np.nan], DatasetError),
        ([0, 1, 1], [0.1, 0.2], DatasetError),  # length mismatch
        ([], [], DatasetError),
    ],
)
def test_bad_inputs_raise_specific_errors(y, p, error):
    with pytest.raises(error):
        binary_metrics(y, p)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_bad_threshold_is_a_config_error(threshold):
    with pytest.raises(ConfigError, match="threshold"):
        binary_metrics(Y, P, threshold)


def test_fast_auc_and_ap_match_sklearn_with_ties():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 1000)
    p = rng.integers(0, 5, 1000) / 4.0  # five distinct scores: heavy ties
    assert roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p))
    assert average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p))


def test_confusion_matrix_layout_matches_sklearn():
    pred = (P >= 0.5).astype(int)
    cm = confusion_matrix(Y, pred)
    assert cm.tolist() == [[3, 1], [1, 3]]  # [[tn, fp], [fn, tp]]
    rng = np.random.default_rng(1)
    y3, p3 = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    assert np.array_equal(confusion_matrix(y3, p3, 3), skm.confusion_matrix(y3, p3, labels=[0, 1, 2]))
    with pytest.raises(DatasetError):
        confusion_matrix([0, 1], [0, 2])


def test_classification_report_text_and_dict():
    pred = (P >= 0.5).astype(int)
    text, table = classification_report(Y, pred)
    assert "NORMAL" in text and "PNEUMONIA" in text and "macro avg" in text
    assert table["PNEUMONIA"]["recall"] == pytest.approx(0.75)
    assert table["NORMAL"]["support"] == 4
    # a class never predicted: precision undefined -> NaN, not 0
    _, table2 = classification_report([0, 1, 1], [0, 0, 0])
    assert np.isnan(table2["PNEUMONIA"]["precision"])
