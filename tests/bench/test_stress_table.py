"""``bench/stress_table.py``: several models' stress.csv side by side, with a per-model summary."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tests.conftest import load_bench

COLUMNS = [
    "shift",
    "severity",
    "severity_name",
    "level",
    "n",
    "n_patients",
    "auc",
    "sensitivity",
    "specificity",
]


@pytest.fixture(scope="module")
def bench():
    return load_bench("stress_table")


def write(folder: Path, rows: list[tuple], n: int = 200) -> Path:
    folder.mkdir()
    with (folder / "stress.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for shift, severity, auc, sens, spec in rows:
            level = "" if shift == "none" else "0.5"
            writer.writerow(
                [shift, severity, "clean" if shift == "none" else "mild", level, n, 120, auc, sens, spec]
            )
    return folder


def test_summary_and_table_side_by_side(bench, tmp_path, capsys):
    a = write(tmp_path / "a", [("none", 0, 0.99, 0.95, 0.96), ("noise", 1, 0.97, 0.99, 0.5),
                               ("blur", 1, 0.98, 0.92, 0.94), ("invert", 1, 0.1, 0.0, 0.0)])  # fmt: skip
    b = write(tmp_path / "b", [("none", 0, 0.98, 0.95, 0.90), ("noise", 1, 0.96, 0.95, 0.91),
                               ("blur", 1, 0.95, 0.80, 0.99), ("invert", 1, 0.2, 0.0, 0.0)])  # fmt: skip
    summary = bench.summary(bench.read(a), 0.9)
    assert summary["worst AUC"] == 0.97 and summary["worst specificity"] == 0.5  # invert left out
    assert summary["mean shifted AUC"] == pytest.approx(0.975) and summary["conditions"] == 2
    assert summary["conditions with sens and spec >= 0.9"] == 1
    assert bench.main([f"A={a}", f"B={b}"]) == 0
    out = capsys.readouterr().out
    assert "| noise | mild (0.5) | 0.970 / 0.99 / 0.50 | 0.960 / 0.95 / 0.91 |" in out
    assert "invert" not in out and "| worst sensitivity | 0.920 | 0.800 |" in out


def test_models_stressed_on_different_images_are_refused(bench, tmp_path):
    a = write(tmp_path / "a", [("none", 0, 0.99, 0.95, 0.96)])
    b = write(tmp_path / "b", [("none", 0, 0.99, 0.95, 0.96)], n=300)
    with pytest.raises(SystemExit, match="different images"):
        bench.main([f"A={a}", f"B={b}"])
    with pytest.raises(SystemExit, match=r"no stress\.csv"):
        bench.main([f"C={tmp_path / 'missing'}"])
