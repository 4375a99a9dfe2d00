"""``bench/explain.py`` runs end to end on a tiny synthetic dataset and checkpoint."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "explain.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_explain", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("split", ["val", "carved-val"])
def test_bench_reports_randomisation_and_faithfulness(
    bench, split, kermany_tree, checkpoint, tmp_path, capsys
):
    out = tmp_path / "bench.json"
    argv = ["--checkpoint", str(checkpoint), "--data", str(kermany_tree), "--split", split, "--images", "4"]
    assert bench.main([*argv, "--methods", "gradcam,eigencam", "--steps", "4", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "randomisation" in printed and "random map" in printed
    data = json.loads(out.read_text())
    assert len(data["images"]) == 4
    assert [r["method"] for r in data["results"]] == ["gradcam", "eigencam"]
    for result in data["results"]:
        assert result["randomization"][0]["stage"] == "classifier"
        assert 0.0 <= result["deletion_auc"] <= 1.0 and 0.0 <= result["insertion_auc"] <= 1.0
