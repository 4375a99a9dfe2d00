"""Each threshold rule's spread across cross-validation folds (cv.json ``threshold_rules``, cv_metrics.md)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from pneumocxr.config import THRESHOLD_RULES
from pneumocxr.evaluation import all_rules
from pneumocxr.training.cv_rules import spread_markdown, threshold_rule_spread


def _rows(k: int = 3, n: int = 80) -> list[dict[str, str]]:
    """OOF rows as ``read_oof`` gives them back: strings, every fold a little shifted."""
    rng = np.random.default_rng(0)
    rows = []
    for fold in range(k):
        y = rng.integers(0, 2, n)
        z = 3 * y - 1.5 + 0.3 * fold + rng.normal(0, 1, n)
        for i in range(n):
            rows.append(
                {
                    "fold": str(fold),
                    "label": str(y[i]),
                    "calibrated_probability": repr(float(expit(z[i]))),
                    "patient_id": f"p{fold}_{i // 2}",
                }
            )
    return rows


def test_every_rule_per_fold_and_its_spread_over_folds():
    rows = _rows()
    spread = threshold_rule_spread(rows, seed=1)
    assert [f["fold"] for f in spread["per_fold"]] == [0, 1, 2]
    assert set(spread["summary"]) == set(THRESHOLD_RULES)
    fold1 = [r for r in rows if r["fold"] == "1"]
    expected = all_rules(
        np.array([int(r["label"]) for r in fold1]),
        np.array([float(r["calibrated_probability"]) for r in fold1]),
        [r["patient_id"] for r in fold1],
        seed=1,
    )
    for rule, choice in expected.items():
        assert spread["per_fold"][1]["rules"][rule]["threshold"] == choice.threshold
    for rule, stats in spread["summary"].items():
        thresholds = [f["rules"][rule]["threshold"] for f in spread["per_fold"]]
        assert stats["threshold"]["mean"] == pytest.approx(np.mean(thresholds))
        assert stats["threshold"]["sd"] == pytest.approx(np.std(thresholds, ddof=1))
        assert (stats["threshold"]["min"], stats["threshold"]["max"]) == (min(thresholds), max(thresholds))
        assert 0 <= stats["sensitivity"]["min"] <= stats["sensitivity"]["max"] <= 1


def test_markdown_has_one_row_per_rule():
    lines = spread_markdown(threshold_rule_spread(_rows(k=2)))
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| rule")]
    assert [r.split(" | ")[0][2:] for r in rows] == list(THRESHOLD_RULES)
    assert all("±" in r and "–" in r for r in rows)
