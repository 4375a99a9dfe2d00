"""How much each threshold rule's threshold moves between cross-validation folds.

A rule that travels should pick similar thresholds on different patients: its spread over the k
folds (each fold model on its own out-of-fold validation patients, calibrated with its own
temperature, exactly what ``operating_point`` saw when it exported the fold's best.pt) is a
cheap proxy for how far it would move on another hospital's films. Computed from the folds'
out-of-fold predictions, so it works for folds exported before every rule was stored too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pneumocxr.evaluation import THRESHOLD_RULES, all_rules

STATS = ("threshold", "sensitivity", "specificity")
NOTE = (
    "each fold's rules on its own out-of-fold validation patients (calibrated probabilities); "
    "sd = sample standard deviation (ddof = 1) over folds"
)


def threshold_rule_spread(rows: Sequence[dict[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """Every rule per fold, and each rule's mean/sd/min/max of threshold, sensitivity, specificity.

    ``rows``: out-of-fold prediction rows (``cv.OOF_COLUMNS``; values may be strings as read back).
    """
    folds: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        folds.setdefault(int(row["fold"]), []).append(row)
    per_fold = []
    for fold, fold_rows in sorted(folds.items()):
        y = np.array([int(r["label"]) for r in fold_rows], dtype=np.int64)
        p = np.array([float(r["calibrated_probability"]) for r in fold_rows])
        patients = [str(r["patient_id"]) for r in fold_rows]
        rules = all_rules(y, p, patients, seed=seed)
        per_fold.append(
            {
                "fold": fold,
                "n_images": len(fold_rows),
                "rules": {
                    name: {k: c.to_dict()[k] for k in (*STATS, "margin_logit")} for name, c in rules.items()
                },
            }
        )
    summary = {
        rule: {stat: _describe([f["rules"][rule][stat] for f in per_fold]) for stat in STATS}
        for rule in THRESHOLD_RULES
    }
    return {"per_fold": per_fold, "summary": summary, "note": NOTE}


def _describe(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    sd = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "sd": sd, "min": float(v.min()), "max": float(v.max())}


def spread_markdown(spread: dict[str, Any]) -> list[str]:
    """Markdown lines: one row per rule, threshold mean ± sd [min, max] and validation sens/spec."""
    lines = [
        "",
        "Threshold rules across folds (each fold on its own validation patients):",
        "",
        "| rule | threshold mean ± sd | threshold min–max | sensitivity mean ± sd | specificity mean ± sd |",
        "|---|---|---|---|---|",
    ]
    for rule, stats in spread["summary"].items():
        t, se, sp = (stats[k] for k in STATS)
        lines.append(
            f"| {rule} | {t['mean']:.4f} ± {t['sd']:.4f} | {t['min']:.4f}–{t['max']:.4f} | "
            f"{se['mean']:.4f} ± {se['sd']:.4f} | {sp['mean']:.4f} ± {sp['sd']:.4f} |"
        )
    return lines
