"""The files of a stress run (``stress.run_stress``): stress.csv, stress.json, stress.md and stress.png.

- ``stress.csv``: one row per model × shift × severity (the clean reference is shift ``none``,
  severity 0): n, AUC / sensitivity / specificity at the stored threshold each with its 95 % CI
  and change from clean, the median P(PNEUMONIA) of the NORMAL and of the PNEUMONIA images, the
  share predicted PNEUMONIA, the counts, and ``in_training_augmentation``.
- ``stress.json``: the same rows, the worst case per metric (with and without polarity inversion,
  which a model should refuse rather than score), the seed, the shift definitions, what was
  evaluated (checkpoint sha256, data, split) and the training augmentation the flags come from.
- ``stress.md``: a short table for a report; ``stress.png``: ``evaluation.stress_plots``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pneumocxr.evaluation._csv import write_rows
from pneumocxr.evaluation.stress_plots import plot_stress
from pneumocxr.workflows.evaluation_files import CONFIDENCE
from pneumocxr.workflows.outputs import write_json

__all__ = ["stress_markdown", "write_stress_files"]

POLARITY = "invert"  # left out of the second worst case: a model should flag such a film, not score it
COLUMN_NOTES = {
    "auc": "ROC AUC (95% CI: patient bootstrap)",
    "sensitivity": "at the checkpoint's threshold (95% CI: Wilson)",
    "specificity": "at the checkpoint's threshold (95% CI: Wilson)",
    "*_change": "value minus the clean reference's",
    "median_p_normal": "median calibrated P(PNEUMONIA) of the NORMAL images",
    "median_p_pneumonia": "median calibrated P(PNEUMONIA) of the PNEUMONIA images",
    "predicted_pneumonia": "share of images at or above the threshold",
    "in_training_augmentation": "the training augmentation covers this kind of shift (empty: unknown)",
}


def write_stress_files(result: Any, out_dir: Path, *, n_boot: int) -> dict[str, Path]:
    """Write the four files into ``out_dir``; returns name → path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"stress_csv": write_rows(out_dir / "stress.csv", result.rows)}
    title = f"{result.model} on {result.split}: {result.n_images} images, threshold {result.threshold:.3g}"
    plot_stress(result.rows, out_dir / "stress.png", title=title, write_data=False)  # data: stress.csv
    files["stress_png"] = out_dir / "stress.png"
    md = out_dir / "stress.md"
    md.write_text(stress_markdown(result), encoding="utf-8")
    files["stress_md"] = md
    files["stress_json"] = out_dir / "stress.json"
    write_json(files["stress_json"], _summary(result, n_boot, {k: str(v) for k, v in files.items()}))
    return files


def _summary(result: Any, n_boot: int, files: Mapping[str, str]) -> dict[str, Any]:
    return {
        "model": result.model,
        "checkpoint": str(result.checkpoint),
        "checkpoint_sha256": result.checkpoint_sha256,
        "data": result.data,
        "split": result.split,
        "n_images": result.n_images,
        "n_patients": result.n_patients,
        "class_counts": result.class_counts,
        "threshold": result.threshold,
        "threshold_applies_to": "calibrated_probability",
        "seed": result.seed,
        "confidence": CONFIDENCE,
        "n_boot": n_boot,
        "inference": result.inference,
        "training_augmentation": result.augmentation,
        "worst": result.worst(),
        f"worst_excluding_{POLARITY}": result.worst(exclude=(POLARITY,)),
        "shifts": [s.to_dict() for s in result.shifts],
        "columns": COLUMN_NOTES,
        "rows": result.rows,
        "seconds": round(result.seconds, 1),
        "files": dict(files),
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _ci(row: Mapping[str, Any], column: str) -> str:
    value, low, high = (row[k] for k in (column, f"{column}_lo", f"{column}_hi"))
    if value is None or math.isnan(value):
        return "n/a"
    if low is None or math.isnan(low) or high is None or math.isnan(high):
        return f"{value:.3f}"
    return f"{value:.3f} ({low:.3f}–{high:.3f})"


def _flag(value: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "?"}[value]


def stress_markdown(result: Any) -> str:
    """A short Markdown report: what was measured, the table, and the worst case per metric."""
    counts = ", ".join(f"{n} {name}" for name, n in result.class_counts.items())
    lines = [
        f"### Stress suite: {result.model} on {result.split}",
        "",
        f"{result.n_images} images ({counts}) of {result.n_patients} patients; threshold "
        f"{result.threshold:.4g} on the calibrated probability (the checkpoint's); seed {result.seed}; "
        "95% CIs: patient bootstrap (AUC), Wilson (sensitivity, specificity). "
        "*trained* = the recipe's training augmentation covers this kind of shift.",
        "",
        "| shift | severity | level | trained | AUC | sensitivity | specificity | median P NORMAL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result.rows:
        level = "" if row["level"] is None else f"{row['level']:g}"
        trained = "" if row["shift"] == "none" else _flag(row["in_training_augmentation"])
        lines.append(
            f"| {row['shift']} | {row['severity_name']} | {level} | {trained} | {_ci(row, 'auc')} | "
            f"{_ci(row, 'sensitivity')} | {_ci(row, 'specificity')} | {row['median_p_normal']:.3f} |"
        )
    lines.append("")
    for heading, worst in (
        ("Worst case", result.worst()),
        (f"Worst case without {POLARITY}", result.worst(exclude=(POLARITY,))),
    ):
        parts = [
            f"{column} {w['value']:.3f} ({w['shift']} {w['severity_name']}, {w['change_from_clean']:+.3f})"
            for column, w in worst.items()
        ]
        lines.append(f"**{heading}:** " + "; ".join(parts) + ".")
        lines.append("")
    return "\n".join(lines)
