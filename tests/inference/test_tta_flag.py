"""``--tta`` on evaluate, compare and predict: it changes the numbers, and every output says it was on."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import make_kermany_tree
from tests.inference.conftest import write_checkpoint

from pneumocxr.cli.main import main
from pneumocxr.inference import load_predictor
from pneumocxr.workflows import evaluate_checkpoint


def run_cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


def column(path: Path, name: str) -> list[str]:
    with path.open(newline="") as fh:
        return [row[name] for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("tta")
    tree = make_kermany_tree(base / "cx", splits=("test",), patients_per_class=2, size=(40, 40))
    a = write_checkpoint(base / "a" / "best.pt", seed=1, temperature=1.3)
    b = write_checkpoint(base / "b" / "best.pt", seed=2)
    return base, tree, a, b


def evaluate(checkpoint: Path, tree: Path, out: Path, table: Path, *extra: str) -> str:
    return run_cli(
        "evaluate", "--checkpoint", str(checkpoint), "--data", str(tree), "--out", str(out),
        "--results-csv", str(table), "--n-boot", "10", "--device", "cpu", *extra,
    )  # fmt: skip


@pytest.mark.slow
def test_evaluate_with_tta_changes_predictions_and_says_so_everywhere(setup, tmp_path):
    _, tree, a, _ = setup
    table = tmp_path / "performance.csv"
    evaluate(a, tree, tmp_path / "plain", table)
    printed = evaluate(a, tree, tmp_path / "tta", table, "--tta")
    assert "a+tta (custom_cnn)" in printed and "inference: TTA; threshold chosen without them" in printed
    plain = np.array(column(tmp_path / "plain" / "predictions.csv", "logit"), dtype=float)
    tta = np.array(column(tmp_path / "tta" / "predictions.csv", "logit"), dtype=float)
    assert plain.shape == tta.shape and not np.allclose(plain, tta)
    summary = json.loads((tmp_path / "tta" / "metrics.json").read_text())
    assert summary["model"] == "a+tta" and summary["inference"]["tta"] is True
    assert len(summary["inference"]["tta_views"]) == 5
    assert json.loads((tmp_path / "plain" / "metrics.json").read_text())["inference"]["tta"] is False
    assert set(column(table, "model")) == {"a", "a+tta"}  # two models' rows in one table, never merged


@pytest.mark.slow
def test_saved_plain_predictions_are_not_reused_for_a_tta_run(setup, tmp_path):
    _, tree, a, b = setup
    settings = ["--data", str(tree), "--n-boot", "10", "--device", "cpu", "--speed-seconds", "0.01"]
    run_cli("compare", str(a), str(b), "--out", str(tmp_path / "cmp"), *settings)
    printed = run_cli("compare", str(a), str(b), "--out", str(tmp_path / "cmp"), "--tta", *settings)
    assert "a+tta" in printed and "b+tta" in printed
    assert column(tmp_path / "cmp" / "results" / "comparison.csv", "model") == ["a+tta", "b+tta"]
    plain = column(tmp_path / "cmp" / "evaluation" / "a" / "predictions.csv", "logit")
    tta = column(tmp_path / "cmp" / "evaluation" / "a+tta" / "predictions.csv", "logit")
    assert plain != tta
    saved = json.loads((tmp_path / "cmp" / "evaluation" / "a+tta" / "metrics.json").read_text())
    assert saved["reused_predictions"] is False and saved["inference"]["tta"] is True
    # even pointed at the plain run's folder, a TTA evaluation does not take its saved predictions
    tta_predictor = load_predictor(a, device="cpu", tta=True)
    again = evaluate_checkpoint(
        a, tree, out_dir=tmp_path / "cmp" / "evaluation" / "a", n_boot=10, reuse_predictions=True,
        predictor=tta_predictor,
    )  # fmt: skip
    assert not again.reused_predictions and again.model == "a+tta"


@pytest.mark.slow
def test_predict_with_tta_records_it_beside_the_csv(setup, tmp_path):
    _, tree, a, _ = setup
    run_cli("predict", "--checkpoint", str(a), str(tree), "--out", str(tmp_path / "p.csv"), "--device", "cpu")
    run_cli("predict", "--checkpoint", str(a), str(tree), "--out", str(tmp_path / "t.csv"), "--device", "cpu",
            "--tta")  # fmt: skip
    assert column(tmp_path / "p.csv", "path") == column(tmp_path / "t.csv", "path")
    assert column(tmp_path / "p.csv", "logit") != column(tmp_path / "t.csv", "logit")
    assert json.loads((tmp_path / "t.json").read_text())["inference"]["tta"] is True
    assert json.loads((tmp_path / "p.json").read_text())["inference"]["tta"] is False


def test_predict_names_an_undecodable_file_and_predicts_the_rest(setup, tmp_path, capsys):
    _, tree, a, _ = setup
    bad = tmp_path / "in" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a png")
    good = next((tree / "test" / "NORMAL").iterdir())
    argv = ["predict", "--checkpoint", str(a), str(good), str(bad), "--out", str(tmp_path / "p.csv")]
    assert main([*argv, "--device", "cpu"]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert column(tmp_path / "p.csv", "path") == [str(good)]
    failures = json.loads((tmp_path / "p.json").read_text())["failures"]
    assert [f["path"] for f in failures] == [str(bad)]
