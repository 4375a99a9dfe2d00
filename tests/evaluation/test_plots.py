"""Every evaluation figure writes a PNG and the CSV of what it draws, and never crashes on one class."""

import csv

import numpy as np
import pytest
from matplotlib.figure import Figure

from pneumocxr.evaluation import plots
from pneumocxr.evaluation.metrics import confusion_matrix

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 160)
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, 160), 0, 1)
    ids = np.repeat(np.arange(80), 2)
    return y, p, ids


def _check_outputs(fig, path, columns):
    assert isinstance(fig, Figure)
    png, data = path.with_suffix(".png"), path.with_suffix(".csv")
    assert png.read_bytes()[:8] == PNG_MAGIC
    with data.open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows, f"{data.name} is empty"
    assert set(columns) <= set(rows[0]), rows[0].keys()
    for row in rows:  # every numeric cell reads back as a number (no numpy reprs, no blanks)
        for key in columns:
            if key not in ("series", "model", "true", "predicted", "true_class") and row[key] != "":
                float(row[key])
    return rows


def test_roc_plot_with_band_and_operating_point(tmp_path, data):
    y, p, ids = data
    fig = plots.plot_roc(y, p, tmp_path / "roc.png", patient_ids=ids, threshold=0.5, n_boot=60)
    rows = _check_outputs(fig, tmp_path / "roc.png", ["series", "fpr", "tpr", "threshold"])
    series = {r["series"] for r in rows}
    assert series == {"roc", "ci_band", "operating_point"}


def test_precision_recall_plot(tmp_path, data):
    y, p, _ = data
    fig = plots.plot_precision_recall(y, p, tmp_path / "pr.png", threshold=0.5)
    _check_outputs(fig, tmp_path / "pr.png", ["series", "recall", "precision", "threshold"])


def test_confusion_matrix_plot_has_counts_and_row_percent(tmp_path, data):
    y, p, _ = data
    cm = confusion_matrix(y, (p >= 0.5).astype(int))
    fig = plots.plot_confusion_matrix(cm, tmp_path / "cm.png")
    rows = _check_outputs(fig, tmp_path / "cm.png", ["true", "predicted", "count", "row_percent"])
    assert sum(int(r["count"]) for r in rows) == len(y)
    tp_row = next(r for r in rows if r["true"] == "PNEUMONIA" and r["predicted"] == "PNEUMONIA")
    assert float(tp_row["row_percent"]) == pytest.approx(100 * cm[1, 1] / cm[1].sum())


def test_reliability_plot_overlays_several_series(tmp_path, data):
    y, p, _ = data
    fig = plots.plot_reliability(y, {"raw": p, "sharpened": p**2}, tmp_path / "rel.png", n_bins=10)
    rows = _check_outputs(fig, tmp_path / "rel.png", ["series", "bin_low", "observed_rate", "count", "ece"])
    assert len(rows) == 20


def test_probability_histogram(tmp_path, data):
    y, p, _ = data
    fig = plots.plot_probability_histogram(y, p, tmp_path / "hist.png", threshold=0.5, bins=10)
    rows = _check_outputs(fig, tmp_path / "hist.png", ["true_class", "bin_low", "bin_high", "count"])
    assert sum(int(r["count"]) for r in rows) == len(y)


def test_comparison_plots(tmp_path, data):
    y, p, _ = data
    probs = {"model_a": p, "model_b": np.sqrt(p) * 0.9}
    fig = plots.plot_roc_comparison(y, probs, tmp_path / "roc_comparison.png")
    rows = _check_outputs(fig, tmp_path / "roc_comparison.png", ["model", "fpr", "tpr"])
    assert {r["model"] for r in rows} == set(probs)
    mats = {k: confusion_matrix(y, (v >= 0.5).astype(int)) for k, v in probs.items()}
    fig = plots.plot_confusion_matrix_grid(mats, tmp_path / "confusion_matrix_comparison.png")
    rows = _check_outputs(fig, tmp_path / "confusion_matrix_comparison.png", ["model", "true", "count"])
    assert len(rows) == 8


def test_single_class_data_still_draws(tmp_path):
    y = np.ones(12, dtype=int)
    p = np.linspace(0.2, 0.9, 12)
    plots.plot_roc(y, p, tmp_path / "roc.png", n_boot=20)
    assert (tmp_path / "roc.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "roc.csv").exists()
    plots.plot_precision_recall(np.zeros(12, dtype=int), p, tmp_path / "pr.png")
    assert (tmp_path / "pr.png").exists()


def test_long_titles_are_wrapped_to_the_figure_not_clipped(tmp_path, data):
    y, p, _ = data
    cm = confusion_matrix(y, (p >= 0.5).astype(int))
    title = "a_model_name on validation (used for model selection: optimistic) (n=784), at threshold 0.4325"
    fig = plots.plot_confusion_matrix(cm, tmp_path / "cm.png", title=title)
    lines = fig.axes[0].get_title().split("\n")
    assert len(lines) >= 3  # the title wrapped, plus the "count (% of true class)" line
    assert " ".join(lines).startswith(title[:40]) and max(map(len, lines)) < len(title)
