"""Multi-class metrics: pinned to sklearn, NaN-with-a-reason when undefined, patient bootstrap, figures."""

import csv
import json
import math

import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn import metrics as skm

from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation import (
    OVERALL_METRICS,
    PER_CLASS_METRICS,
    MulticlassMetrics,
    multiclass_metrics,
    wilson_interval,
)
from pneumocxr.evaluation.multiclass_plots import plot_multiclass_confusion, plot_multiclass_roc

NAMES = ("NORMAL", "BACTERIAL", "VIRAL")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_BOOT = 200  # enough for percentile intervals in tests, fast on two cores


def _noisy(n=150, seed=0, signal=1.5):
    """Labels and softmax probabilities that carry some signal; several classes are confused."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += signal
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def _probs_for(pred, k=3, seed=1):
    """Probability rows whose argmax is ``pred`` (random, so AUCs are not trivial)."""
    rng = np.random.default_rng(seed)
    raw = rng.uniform(0.0, 1.0, (len(pred), k))
    raw[np.arange(len(pred)), pred] += 1.0  # the predicted class always wins
    return raw / raw.sum(axis=1, keepdims=True)


def _from_confusion(cm):
    """(y_true, y_pred) realising a given confusion matrix."""
    pairs = [(i, j) for i in range(len(cm)) for j in range(len(cm)) for _ in range(cm[i][j])]
    y, pred = (np.array(v) for v in zip(*pairs))
    return y, pred


def test_perfect_predictions_score_one_everywhere():
    y = np.array([0, 0, 1, 1, 1, 2, 2, 0, 2, 1])
    p = np.eye(3)[y] * 0.8 + 0.2 / 3
    m = multiclass_metrics(y, p, NAMES, n_boot=N_BOOT)
    assert isinstance(m, MulticlassMetrics)
    np.testing.assert_array_equal(m.confusion, np.diag([3, 4, 3]))
    for name in OVERALL_METRICS:
        assert m.overall[name].value == pytest.approx(1.0), name
    for c in NAMES:
        assert all(m.per_class[c][k].value == pytest.approx(1.0) for k in PER_CLASS_METRICS)
    assert m.support == {"NORMAL": 3, "BACTERIAL": 4, "VIRAL": 3} and m.n == 10


def test_known_confusion_matrix_matches_hand_counts_and_sklearn():
    cm = [[50, 5, 5], [4, 40, 16], [2, 18, 20]]
    y, pred = _from_confusion(cm)
    p = _probs_for(pred)
    m = multiclass_metrics(y, p, NAMES, n_boot=N_BOOT)
    np.testing.assert_array_equal(m.confusion, cm)
    assert m.confusion.dtype.kind == "i" and not m.confusion.flags.writeable
    # by hand, VIRAL one-vs-rest: tp 20, fp 21, fn 20, tn 99
    viral = m.per_class["VIRAL"]
    assert viral["precision"].value == pytest.approx(20 / 41)
    assert viral["recall"].value == pytest.approx(20 / 40)
    assert viral["specificity"].value == pytest.approx(99 / 120)
    assert viral["f1"].value == pytest.approx(40 / 81)
    # sklearn on the same data
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=[0, 1, 2])
    for c, name in enumerate(NAMES):
        assert m.per_class[name]["precision"].value == pytest.approx(prec[c])
        assert m.per_class[name]["recall"].value == pytest.approx(rec[c])
        assert m.per_class[name]["f1"].value == pytest.approx(f1[c])
        assert m.per_class[name]["auc_ovr"].value == pytest.approx(skm.roc_auc_score(y == c, p[:, c]))
        assert m.support[name] == sup[c]
    o = m.overall
    assert o["accuracy"].value == pytest.approx(skm.accuracy_score(y, pred))
    assert o["balanced_accuracy"].value == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert o["macro_precision"].value == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert o["macro_recall"].value == pytest.approx(skm.recall_score(y, pred, average="macro"))
    assert o["macro_f1"].value == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert o["weighted_f1"].value == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert o["macro_auc"].value == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert o["cohen_kappa"].value == pytest.approx(skm.cohen_kappa_score(y, pred))
    # accuracy's interval is Wilson on (correct, n)
    assert (o["accuracy"].low, o["accuracy"].high) == pytest.approx(wilson_interval(110, 160))
    assert o["accuracy"].method == "wilson" and o["macro_auc"].method == "image_bootstrap"


def test_tied_scores_and_argmax_ties_follow_sklearn():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    p = np.full((8, 3), 1 / 3)  # every row tied: argmax picks class 0, every AUC is 0.5
    p[:2] = [[0.5, 0.5, 0.0], [0.2, 0.4, 0.4]]
    m = multiclass_metrics(y, p, NAMES, n_boot=N_BOOT)
    pred = p.argmax(axis=1)
    assert m.confusion[:, 0].sum() == np.count_nonzero(pred == 0)
    assert m.overall["cohen_kappa"].value == pytest.approx(skm.cohen_kappa_score(y, pred))
    assert m.overall["macro_auc"].value == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"))


def test_class_never_predicted_is_nan_with_reason_not_zero():
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 0])  # VIRAL never predicted
    m = multiclass_metrics(y, _probs_for(pred), NAMES, n_boot=N_BOOT)
    viral = m.per_class["VIRAL"]
    assert math.isnan(viral["precision"].value) and "never predicted" in viral["precision"].note
    assert viral["recall"].value == 0.0 and viral["f1"].value == 0.0  # present but never found
    assert math.isnan(m.overall["macro_precision"].value)
    assert "VIRAL" in m.overall["macro_precision"].note
    assert not math.isnan(m.overall["macro_f1"].value)  # F1 stays defined (0 for VIRAL)
    assert m.overall["macro_f1"].value == pytest.approx(
        skm.f1_score(y, pred, labels=[0, 1, 2], average="macro", zero_division=0)
    )
    assert m.predicted["VIRAL"] == 0
    text = m.classification_report()
    assert "VIRAL" in text and "nan" in text and "never predicted" in text
    json.dumps(m.to_dict(), allow_nan=False)  # NaN became None: strict JSON works


def test_class_absent_from_labels_leaves_recall_and_auc_undefined():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])  # no VIRAL cases
    p = _probs_for(np.array([0, 2, 1, 1, 0, 0, 0, 1]))
    m = multiclass_metrics(y, p, NAMES, n_boot=N_BOOT)
    viral = m.per_class["VIRAL"]
    assert math.isnan(viral["recall"].value) and "no true VIRAL" in viral["recall"].note
    assert math.isnan(viral["auc_ovr"].value)
    assert math.isnan(m.overall["macro_auc"].value) and "VIRAL" in m.overall["macro_auc"].note
    assert math.isnan(m.overall["balanced_accuracy"].value)
    assert viral["f1"].value == 0.0  # predicted once, never right
    assert not math.isnan(m.overall["weighted_f1"].value)  # support weights drop the empty class
    assert m.overall["weighted_f1"].value == pytest.approx(
        skm.f1_score(y, p.argmax(axis=1), labels=[0, 1, 2], average="weighted", zero_division=0)
    )


def test_one_class_everywhere_has_undefined_kappa():
    y = np.zeros(6, dtype=int)
    m = multiclass_metrics(y, _probs_for(y), NAMES, n_boot=N_BOOT)
    assert math.isnan(m.overall["cohen_kappa"].value) and "same class" in m.overall["cohen_kappa"].note
    assert m.overall["accuracy"].value == 1.0


def test_bootstrap_intervals_contain_the_point_and_are_reproducible():
    y, p = _noisy()
    a = multiclass_metrics(y, p, NAMES, n_boot=N_BOOT, seed=3)
    b = multiclass_metrics(y, p, NAMES, n_boot=N_BOOT, seed=3)
    c = multiclass_metrics(y, p, NAMES, n_boot=N_BOOT, seed=4)
    estimates = [*a.overall.values(), *(e for d in a.per_class.values() for e in d.values())]
    assert len(estimates) == len(OVERALL_METRICS) + 3 * len(PER_CLASS_METRICS)
    for e in estimates:
        assert e.low <= e.value <= e.high, e
        assert e.high > e.low  # a real interval, not a point
    assert a.to_dict() == b.to_dict()
    assert a.overall["macro_auc"] != c.overall["macro_auc"]


def test_patient_groups_are_resampled_whole():
    y, p = _noisy(n=60, seed=2)
    reps = 5  # five identical images per patient: no new information
    yy, pp = np.repeat(y, reps), np.repeat(p, reps, axis=0)
    ids = np.repeat([f"patient{i:03d}" for i in range(60)], reps)  # sorted ids = index order
    grouped = multiclass_metrics(yy, pp, NAMES, groups=ids, n_boot=N_BOOT, seed=0)
    naive = multiclass_metrics(yy, pp, NAMES, n_boot=N_BOOT, seed=0)
    per_patient = multiclass_metrics(y, p, NAMES, n_boot=N_BOOT, seed=0)
    assert grouped.info["n_patients"] == 60 and naive.info["n_patients"] == 300
    assert grouped.overall["macro_f1"].method == "patient_bootstrap"
    for name in ("macro_f1", "macro_auc", "cohen_kappa"):
        width = {k: m.overall[name].high - m.overall[name].low for k, m in [("g", grouped), ("n", naive)]}
        assert width["g"] > 1.5 * width["n"], name  # ignoring the clusters would be far too narrow
        # resampling whole patients draws exactly the per-patient resamples, each image repeated
        assert grouped.overall[name].low == pytest.approx(per_patient.overall[name].low)
        assert grouped.overall[name].high == pytest.approx(per_patient.overall[name].high)


def test_proportion_method_bootstrap_puts_proportions_on_the_patient_bootstrap():
    y, p = _noisy(n=80)
    m = multiclass_metrics(
        y, p, NAMES, groups=np.arange(80) // 2, n_boot=N_BOOT, proportion_method="bootstrap"
    )
    assert m.overall["accuracy"].method == "patient_bootstrap"
    assert {e.method for d in m.per_class.values() for e in d.values()} == {"patient_bootstrap"}
    w = multiclass_metrics(y, p, NAMES, n_boot=N_BOOT)
    assert w.per_class["NORMAL"]["recall"].method == "wilson"
    assert w.per_class["NORMAL"]["f1"].method == "image_bootstrap"


def test_report_dict_and_rows(tmp_path):
    y, p = _noisy(n=90)
    m = multiclass_metrics(y, p, NAMES, n_boot=N_BOOT)
    text = m.classification_report()
    for word in (*NAMES, "accuracy", "macro avg", "weighted avg", "Cohen's kappa"):
        assert word in text
    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert d["class_names"] == list(NAMES) and d["confusion"] == m.confusion.tolist()
    assert d["overall"]["macro_auc"]["value"] == pytest.approx(m.overall["macro_auc"].value)
    rows = m.rows(model="cnn")
    assert [r["class"] for r in rows] == [*NAMES, "overall"]
    assert rows[0]["model"] == "cnn" and rows[-1]["support"] == 90
    path = m.to_csv(tmp_path / "mc.csv", model="cnn")
    with path.open() as fh:
        read = list(csv.DictReader(fh))
    assert float(read[1]["f1_low"]) == pytest.approx(m.per_class["BACTERIAL"]["f1"].low)
    assert float(read[-1]["cohen_kappa"]) == pytest.approx(m.overall["cohen_kappa"].value)


BAD_INPUTS = {
    "length mismatch": ([0, 1, 2], np.full((2, 3), 1 / 3), NAMES, DatasetError, "shape"),
    "1-D probabilities": ([0, 1], [0.5, 0.5], NAMES, DatasetError, "shape"),
    "empty": ([], np.zeros((0, 3)), NAMES, DatasetError, "no images"),
    "label out of range": ([0, 3], np.full((2, 3), 1 / 3), NAMES, DatasetError, "found [3]"),
    "negative label": ([0, -1], np.full((2, 3), 1 / 3), NAMES, DatasetError, "found [-1]"),
    "fractional label": ([0.5, 1.0], np.full((2, 3), 1 / 3), NAMES, DatasetError, "integer"),
    "k mismatch": ([0, 1], np.full((2, 4), 1 / 4), NAMES, DatasetError, "4 columns"),
    "rows not summing to 1": ([0, 1], [[0.9, 0.9, 0.2], [0.2, 0.3, 0.5]], NAMES, DatasetError, "sum to 1"),
    "logits": ([0, 1], [[2.0, -1.0, 0.0], [0.1, 0.2, 0.7]], NAMES, DatasetError, "not logits"),
    "NaN": ([0, 1], [[np.nan, 0.5, 0.5], [0.2, 0.3, 0.5]], NAMES, DatasetError, "NaN"),
    "duplicate names": ([0, 1], np.full((2, 3), 1 / 3), ("A", "A", "B"), ConfigError, "distinct"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_inputs_raise_specific_errors(case):
    y, p, names, error, words = BAD_INPUTS[case]
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        multiclass_metrics(y, p, names, n_boot=N_BOOT)


def test_bad_settings_raise_config_errors():
    y, p = _noisy(n=20)
    with pytest.raises(DatasetError, match="patient_ids"):
        multiclass_metrics(y, p, NAMES, groups=np.arange(19), n_boot=N_BOOT)
    for kwargs in ({"n_boot": 0}, {"proportion_method": "wald"}, {"confidence": 95}, {"seed": "x"}):
        with pytest.raises(ConfigError):
            multiclass_metrics(y, p, NAMES, **{"n_boot": N_BOOT, **kwargs})


def _read_csv(path):
    with path.with_suffix(".csv").open() as fh:
        return list(csv.DictReader(fh))


def test_confusion_plot_writes_png_and_cells(tmp_path):
    y, p = _noisy(n=90)
    m = multiclass_metrics(y, p, NAMES, n_boot=N_BOOT)
    fig = plot_multiclass_confusion(m.confusion, m.class_names, tmp_path / "cm.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / "cm.png").read_bytes()[:8] == PNG_MAGIC
    rows = _read_csv(tmp_path / "cm.png")
    assert len(rows) == 9 and sum(int(r["count"]) for r in rows) == 90
    cell = next(r for r in rows if r["true"] == "VIRAL" and r["predicted"] == "VIRAL")
    assert float(cell["row_percent"]) == pytest.approx(100 * m.per_class["VIRAL"]["recall"].value)
    with pytest.raises(DatasetError, match="shape"):
        plot_multiclass_confusion(np.eye(2), NAMES, tmp_path / "bad.png")


def test_roc_plot_has_one_curve_per_class(tmp_path):
    y, p = _noisy(n=90)
    fig = plot_multiclass_roc(y, p, NAMES, tmp_path / "roc")
    assert isinstance(fig, Figure)
    assert (tmp_path / "roc.png").read_bytes()[:8] == PNG_MAGIC
    rows = _read_csv(tmp_path / "roc")
    assert {r["class"] for r in rows} == set(NAMES)
    for c, name in enumerate(NAMES):
        aucs = [float(r["auc"]) for r in rows if r["class"] == name]
        assert aucs == [pytest.approx(skm.roc_auc_score(y == c, p[:, c]))] * len(aucs)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("VIRAL vs rest (AUC" in t for t in legend)


def test_roc_plot_survives_an_absent_class(tmp_path):
    y = np.array([0, 0, 1, 1, 0, 1])
    p = _probs_for(np.array([0, 1, 1, 2, 0, 0]))
    fig = plot_multiclass_roc(y, p, NAMES, tmp_path / "roc.png")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "VIRAL: undefined (no cases)" in legend
    assert {r["class"] for r in _read_csv(tmp_path / "roc.png")} == {"NORMAL", "BACTERIAL"}
