"""compare_models: table with CIs, params and speed, paired p-values, comparison figures with data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import make_kermany_tree
from tests.inference.conftest import write_checkpoint

from pneumocxr.errors import CheckpointError, ConfigError
from pneumocxr.evaluation import delong_test
from pneumocxr.models import count_parameters, load_checkpoint
from pneumocxr.workflows import compare_models, resolve_checkpoint
from pneumocxr.workflows.compare import unique_labels


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    base = tmp_path_factory.mktemp("cmp")
    tree = make_kermany_tree(base / "cx", splits=("test",), patients_per_class=4)
    write_checkpoint(base / "runs" / "alpha" / "best.pt", seed=1, temperature=0.02)
    beta = write_checkpoint(base / "beta.pt", seed=2, threshold=0.3, temperature=0.05)
    result = compare_models(
        [base / "runs" / "alpha", beta], tree, out_dir=base / "out", n_boot=30, speed_seconds=0.0
    )
    return base, tree, result


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_table_has_metrics_with_cis_params_speed_and_p_values(comparison):
    base, _, result = comparison
    rows = read_csv(result.files["comparison_csv"])
    assert [r["model"] for r in rows] == ["alpha", "beta"]
    model, _ = load_checkpoint(base / "beta.pt")
    assert int(rows[1]["parameters"]) == count_parameters(model)[0]
    for row in rows:
        assert float(row["images_per_s"]) > 0 and row["speed_device"].startswith("cpu")
        assert float(row["roc_auc_lo"]) <= float(row["roc_auc"]) <= float(row["roc_auc_hi"])
    assert rows[0]["delong_p_vs_reference"] == "nan"  # the reference itself
    for key in ("delong_p_vs_reference", "mcnemar_p_vs_reference"):
        assert 0.0 <= float(rows[1][key]) <= 1.0
    assert float(rows[1]["threshold"]) == 0.3


def test_p_values_are_the_paired_tests_on_the_saved_predictions(comparison):
    _, _, result = comparison
    alpha, beta = result.evaluations["alpha"], result.evaluations["beta"]
    expected = delong_test(
        alpha.labels, alpha.predictions.calibrated_probability, beta.predictions.calibrated_probability
    )
    (pair,) = read_csv(result.files["pairwise_csv"])
    assert float(pair["delong_p"]) == pytest.approx(expected.p_value)
    assert 0.0 <= float(pair["mcnemar_p"]) <= 1.0 and pair["mcnemar_method"] in ("exact", "chi2_cc")


def test_comparison_figures_and_markdown_are_written(comparison):
    base, _, result = comparison
    for name in ("roc_comparison", "confusion_matrix_comparison"):
        png = base / "out" / "plots" / f"{name}.png"
        assert png.stat().st_size > 1000
        assert {r["model"] for r in read_csv(png.with_suffix(".csv"))} == {"alpha", "beta"}
    markdown = result.files["comparison_md"].read_text()
    assert "| alpha |" in markdown and "DeLong" in markdown and "McNemar" in markdown
    per_model = read_csv(base / "out" / "results" / "performance_metrics.csv")
    assert len(per_model) == 4  # two models × two threshold kinds


def test_second_compare_reuses_the_per_image_predictions(comparison):
    base, tree, first = comparison
    again = compare_models(
        [base / "runs" / "alpha", base / "beta.pt"], tree, out_dir=base / "out", n_boot=30, speed_seconds=0.0
    )
    assert all(ev.reused_predictions for ev in again.evaluations.values())
    np.testing.assert_array_equal(
        again.evaluations["beta"].predictions.logits, first.evaluations["beta"].predictions.logits
    )


def test_run_folder_without_best_pt_and_single_model_are_refused(tmp_path):
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match=r"has no best\.pt"):
        resolve_checkpoint(tmp_path / "empty_run")
    with pytest.raises(ConfigError, match="at least two"):
        compare_models([tmp_path / "x.pt"], tmp_path, out_dir=tmp_path / "o")


def test_model_names_are_made_unique():
    paths = [
        Path("a/run1/best.pt"),
        Path("b/run1/best.pt"),
        Path("c/model.pt"),
        Path("d/m.pt"),
        Path("d/m.pt"),
    ]
    assert unique_labels(paths) == ["a/run1", "b/run1", "model", "d/m#1", "d/m#2"]
