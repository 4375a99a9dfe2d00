"""Several models' stress results side by side: one row per shift and severity, one column group per model.

Reads the ``stress.csv`` that ``pneumocxr evaluate --stress`` (or ``pneumocxr run``'s stress step)
wrote for each model and prints a Markdown table of AUC / sensitivity / specificity at each model's
stored threshold, then a summary per model: clean, mean and worst shifted AUC, worst sensitivity and
specificity (the inverted-polarity row excluded: the prediction core refuses inverted films), and how
many conditions keep both sensitivity and specificity at or above ``--floor``. The models must have
been stressed on the same images (same split, ``--stress-images`` and ``--stress-seed``): checked
through the image and patient counts.

    python bench/stress_table.py lite0=output/stress/efficientnet_lite0 lite1=runs/ens/stress_lite1 ...
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

SKIPPED = {"invert"}  # refused by the prediction core: not a condition a deployed model scores


def read(folder: Path) -> list[dict[str, str]]:
    path = folder / "stress.csv" if folder.is_dir() else folder
    if not path.is_file():
        sys.exit(f"{path}: no stress.csv; run `pneumocxr evaluate --stress --out {folder}` first")
    with path.open(encoding="utf-8") as fh:
        return [row for row in csv.DictReader(fh) if row["shift"] not in SKIPPED]


def summary(rows: list[dict[str, str]], floor: float) -> dict[str, float]:
    shifted = [r for r in rows if r["shift"] != "none"]
    auc = [float(r["auc"]) for r in shifted]
    return {
        "clean AUC": float(rows[0]["auc"]),
        "mean shifted AUC": statistics.fmean(auc),
        "worst AUC": min(auc),
        "worst sensitivity": min(float(r["sensitivity"]) for r in shifted),
        "worst specificity": min(float(r["specificity"]) for r in shifted),
        f"conditions with sens and spec >= {floor}": sum(
            float(r["sensitivity"]) >= floor and float(r["specificity"]) >= floor for r in shifted
        ),
        "conditions": len(shifted),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", metavar="NAME=FOLDER", help="a label and its stress folder")
    parser.add_argument(
        "--floor", type=float, default=0.9, help="sensitivity/specificity floor (default 0.9)"
    )
    args = parser.parse_args(argv)
    named = [m.split("=", 1) if "=" in m else (Path(m).name, m) for m in args.models]
    results = {name: read(Path(folder)) for name, folder in named}
    counts = {(rows[0]["n"], rows[0]["n_patients"]) for rows in results.values()}
    if len(counts) > 1:
        sys.exit(f"the models were stressed on different images (images, patients: {sorted(counts)})")
    names = list(results)
    print("| shift | severity | " + " | ".join(f"{n} AUC / sens / spec" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    first = results[names[0]]
    for i, row in enumerate(first):
        cells = []
        for name in names:
            other = results[name][i]
            if (other["shift"], other["severity"]) != (row["shift"], row["severity"]):
                sys.exit(f"{name}: its conditions are not in the same order as {names[0]}'s")
            auc, sens, spec = (float(other[k]) for k in ("auc", "sensitivity", "specificity"))
            cells.append(f"{auc:.3f} / {sens:.2f} / {spec:.2f}")
        label = row["severity_name"] + (f" ({row['level']})" if row["level"] else "")
        print(f"| {row['shift']} | {label} | " + " | ".join(cells) + " |")
    print()
    summaries = {name: summary(rows, args.floor) for name, rows in results.items()}
    keys = list(next(iter(summaries.values())))
    print("| summary | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key in keys:
        values = [summaries[n][key] for n in names]
        print(
            f"| {key} | " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in values) + " |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
