"""The robustness steps of ``pneumocxr run``: the shift-stress suite and a model card per model.

Why in the one-command pipeline: the carved validation split cannot see the drop on another
hospital's films (issue 10: validation AUC 0.997, withheld test 0.966 with specificity 0.62); the
stress suite is the proxy a user gets without that test, and the model card says what the model
is for and where it is known to fail. Both read the models ``train`` published under models/.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from pneumocxr.workflows.run.state import RunState

# Validation images per shift in the pipeline: 200 keeps the suite to ~3 min per Lite0-sized model
# on 2 CPU cores (every shift, 3 severities); `pneumocxr evaluate --stress` defaults to 300.
RUN_STRESS_IMAGES = 200
SUMMARY_COLUMNS = (
    "model",
    "n_images",
    "clean_auc",
    "mean_shifted_auc",
    "worst_auc",
    "worst_auc_shift",
    "clean_specificity",
    "worst_specificity",
    "worst_specificity_shift",
    "blind_worst_specificity",
    "blind_worst_specificity_shift",
)


def stress(state: RunState) -> str:
    """Each trained model on its recorded validation split under every shift → ``stress/<model>/``."""
    from pneumocxr.config import to_dict
    from pneumocxr.training.stress_augmentation import recorded_augmentation
    from pneumocxr.workflows.stress import run_stress

    configs = {plan.name: to_dict(plan.config) for plan in state.plans}
    rows = []
    for name in state.results["train"]:
        checkpoint = state.model_file(name)
        result = run_stress(
            checkpoint,
            state.dataset,
            split="validation",
            n_images=RUN_STRESS_IMAGES,
            out_dir=state.out / "stress" / name,
            augmentation=recorded_augmentation(configs[name]),
            n_boot=state.n_boot,
            device=state.device,
        )
        rows.append(summary_row(name, result))
        where = state.out / "stress" / name
        state.notify(f"   {name}: {_describe(rows[-1])} ({result.seconds:.0f} s) -> {where}")
    path = write_summary(rows, state.out / "results" / "stress_summary.csv")
    state.summary["stress"] = {"summary": str(path), "images_per_shift": RUN_STRESS_IMAGES}
    return f"done ({len(rows)} model(s)) -> {path}"


def summary_row(name: str, result: Any) -> dict[str, Any]:
    """One model's headline of the suite: clean vs shifted AUC and specificity, worst cases."""
    shifted = result.rows[1:]
    worst = result.worst()
    blind = result.worst(exclude=[r["shift"] for r in shifted if r["in_training_augmentation"]])
    aucs = [r["auc"] for r in shifted if math.isfinite(r["auc"])]
    return {
        "model": name,
        "n_images": result.n_images,
        "clean_auc": result.clean["auc"],
        "mean_shifted_auc": sum(aucs) / len(aucs) if aucs else math.nan,
        "worst_auc": worst.get("auc", {}).get("value", math.nan),
        "worst_auc_shift": _where(worst.get("auc")),
        "clean_specificity": result.clean["specificity"],
        "worst_specificity": worst.get("specificity", {}).get("value", math.nan),
        "worst_specificity_shift": _where(worst.get("specificity")),
        "blind_worst_specificity": blind.get("specificity", {}).get("value", math.nan),
        "blind_worst_specificity_shift": _where(blind.get("specificity")),
    }


def write_summary(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(SUMMARY_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path


def model_cards(state: RunState) -> str:
    """``model_cards/<model>.md`` for each trained model, with its evaluations and stress results."""
    from pneumocxr.training.model_card import write_model_card

    written = []
    for name in state.results["train"]:
        evaluations = [
            ev.out_dir / "evaluation" / name
            for ev, _ in state.results.get("evaluate", [])
            if (ev.out_dir / "evaluation" / name).is_dir()
        ]
        stress_dir = state.out / "stress" / name
        out = state.out / "model_cards" / f"{name}.md"
        write_model_card(
            state.model_file(name),
            out,
            evaluation_dir=evaluations or None,
            stress=stress_dir if (stress_dir / "stress.json").is_file() else None,
        )
        written.append(out)
        state.notify(f"   {name} -> {out}")
    state.summary["model_cards"] = [str(p) for p in written]
    return f"done ({len(written)} card(s))"


def _where(worst: dict[str, Any] | None) -> str:
    return f"{worst['shift']} {worst['severity_name']}" if worst else ""


def _describe(row: dict[str, Any]) -> str:
    return (
        f"AUC {row['clean_auc']:.3f} clean, {row['mean_shifted_auc']:.3f} mean shifted, worst "
        f"{row['worst_auc']:.3f} ({row['worst_auc_shift']}); specificity "
        f"{row['clean_specificity']:.3f} clean, worst {row['worst_specificity']:.3f} "
        f"({row['worst_specificity_shift']})"
    )
