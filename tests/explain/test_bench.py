"""``bench/explain.py`` runs end to end on a tiny synthetic dataset and checkpoint."""

from __future__ import annotations

import json

import pytest
from tests.conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("explain")


@pytest.mark.parametrize("split", ["val", "carved-val"])
def test_bench_reports_randomisation_and_faithfulness(
    bench, split, kermany_tree, checkpoint, tmp_path, capsys
):
    out = tmp_path / "bench.json"
    argv = ["--checkpoint", str(checkpoint), "--data", str(kermany_tree), "--split", split, "--images", "4"]
    assert bench.main([*argv, "--methods", "gradcam,eigencam", "--steps", "4", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "randomisation" in printed and "random pixels" in printed and "ROAD" in printed
    data = json.loads(out.read_text())
    assert len(data["images"]) == 4
    assert [r["method"] for r in data["results"]] == ["gradcam", "eigencam"]
    for result in data["results"]:
        assert result["randomization"][0]["stage"] == "classifier"
        assert 0.0 <= result["deletion_auc"] <= 1.0 and 0.0 <= result["insertion_auc"] <= 1.0
    assert set(data["references"]) == {"random pixels", "random smooth", "centre box"}
    for scores in data["per_image"].values():
        assert all(len(v) == 4 for v in scores.values())
        assert min(scores["ROAD MoRF"]) >= -1.0 and max(scores["ROAD comb"]) <= 1.0


def test_bench_without_randomisation_or_road(bench, kermany_tree, checkpoint, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--checkpoint", str(checkpoint), "--data", str(kermany_tree), "--split", "val", "--images", "4"]
    argv += ["--methods", "gradcam", "--steps", "4", "--no-randomization", "--road-maps", "none"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    assert "randomisation" not in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["results"][0]["randomization"] == [] and "ROAD comb" not in data["per_image"]["gradcam"]
