"""What a search leaves behind: the trials table (CSV + markdown), the best config as a runnable
YAML, and the optimisation-history and parameter-importance plots, each with its data beside it.

Written from the study in storage, so any worker (or a re-run after the search finished) writes the
same complete report.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from pneumocxr.config import RunConfig, from_dict, to_dict

logger = logging.getLogger(__name__)

BASE_COLUMNS = ("number", "state", "val_auc", "epochs", "duration_s")
TAIL_COLUMNS = ("worker", "retry_of", "run_dir", "note")


def write_outputs(
    study: optuna.Study, out_dir: Path, param_names: list[str], base: RunConfig
) -> dict[str, Path]:
    """Write every report file into ``out_dir``; returns them by role."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    rows = [trial_row(t, param_names) for t in trials]
    columns = [*BASE_COLUMNS, *sorted(param_names), *TAIL_COLUMNS]
    files = {"trials_csv": out_dir / "trials.csv", "trials_md": out_dir / "trials.md"}
    _write_csv(files["trials_csv"], columns, rows)
    files["trials_md"].write_text(trials_markdown(rows, columns, study.study_name))
    best = _best(trials)
    if best is not None:
        files["best_config"] = write_best_config(best, out_dir / "best_config.yaml", base, study.study_name)
    files.update(plot_history(study, trials, out_dir))
    files.update(plot_importance(study, out_dir))
    return files


def trial_row(trial: FrozenTrial, param_names: list[str]) -> dict[str, Any]:
    """One table row. A pruned trial's val_auc is its last reported epoch (it never selected a model)."""
    value = trial.value
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    worker = trial.user_attrs.get("worker") or {}
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "val_auc": value,
        "epochs": len(trial.intermediate_values),  # validated epochs (reported to the pruner)
        "duration_s": round(trial.duration.total_seconds(), 1) if trial.duration else None,
        "worker": f"{worker['host']}:{worker['pid']}" if worker else "",
        "retry_of": trial.system_attrs.get("failed_trial", ""),
        "run_dir": trial.user_attrs.get("run_dir", ""),
        "note": trial.user_attrs.get("note", ""),
    }
    row.update({name: trial.params.get(name, "") for name in param_names})
    return row


def trials_markdown(rows: list[dict[str, Any]], columns: list[str], study_name: str) -> str:
    """A markdown table of all trials; the best complete trial in bold."""
    done = [r for r in rows if r["state"] == "COMPLETE" and r["val_auc"] is not None]
    best = max(done, key=lambda r: (r["val_auc"], -r["number"]))["number"] if done else None
    shown = [c for c in columns if c not in ("run_dir",)]
    lines = [
        f"# Trials of study `{study_name}`",
        "",
        "val_auc: validation AUC on the patient-level split carved from train (the test set is never used).",
        "",
        "| " + " | ".join(shown) + " |",
        "|" + "|".join("---" for _ in shown) + "|",
    ]
    for row in rows:
        cells = [_fmt(row[c]) for c in shown]
        if row["number"] == best:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_best_config(trial: FrozenTrial, path: Path, base: RunConfig, study_name: str) -> Path:
    """The best trial's full config, ready for ``pneumocxr train --config``.

    The machine-local data paths are this worker's (the trial may have run elsewhere).
    """
    config = from_dict(RunConfig, trial.user_attrs["config"])
    data = to_dict(config)
    data["data"]["root"], data["data"]["cache_dir"] = base.data.root, base.data.cache_dir
    from_dict(RunConfig, data)  # it must load back: fail here, not in the user's next command
    params = ", ".join(f"{k}={v}" for k, v in sorted(trial.params.items()))
    header = (
        f"# Best trial #{trial.number} of study {study_name!r}: validation AUC {trial.value:.4f}\n"
        f"# (patient-level validation split carved from train; the test set was not used)\n"
        f"# searched: {params}\n"
        f"#   pneumocxr train --config {path.name} --out runs/best\n"
    )
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return path


def plot_history(study: optuna.Study, trials: list[FrozenTrial], out_dir: Path) -> dict[str, Path]:
    """Optuna's optimisation-history plot, and its data (value and best-so-far per trial)."""
    data_path = out_dir / "optimization_history.csv"
    best_so_far = -math.inf
    rows = []
    for t in trials:
        if t.state == TrialState.COMPLETE and t.value is not None:
            best_so_far = max(best_so_far, t.value)
        finite = best_so_far > -math.inf
        rows.append({"number": t.number, "state": t.state.name, "value": t.value,
                     "best_so_far": best_so_far if finite else None})  # fmt: skip
    _write_csv(data_path, ["number", "state", "value", "best_so_far"], rows)
    png = out_dir / "optimization_history.png"
    try:
        ax = optuna.visualization.matplotlib.plot_optimization_history(study, target_name="validation AUC")
        _save(ax.figure, png)
    except Exception as exc:  # e.g. no finished trial yet: say so in the figure, keep the search's result
        logger.warning("optimisation-history plot not drawn: %s", exc)
        _note_figure(png, "Optimisation history", f"not available: {exc}")
    return {"history_png": png, "history_csv": data_path}


def plot_importance(study: optuna.Study, out_dir: Path) -> dict[str, Path]:
    """fANOVA parameter importances (plot + JSON); too few or too uniform trials: a figure saying why."""
    png, data_path = out_dir / "param_importances.png", out_dir / "param_importances.json"
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    record: dict[str, Any] = {"evaluator": "fanova", "complete_trials": complete}
    try:
        if complete < 2:
            raise ValueError(f"needs at least 2 complete trials, the study has {complete}")
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # seeded: same study, same numbers
        record["importances"] = dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
        ax = optuna.visualization.matplotlib.plot_param_importances(
            study, evaluator=evaluator, target_name="validation AUC"
        )
        _save(ax.figure, png)
    except Exception as exc:  # fANOVA fails on too few trials or a parameter that never varied
        record["note"] = f"parameter importance not available: {exc}"
        logger.warning("%s", record["note"])
        _note_figure(png, "Parameter importance", record["note"])
    data_path.write_text(json.dumps(record, indent=1))
    return {"importance_png": png, "importance_json": data_path}


def _best(trials: list[FrozenTrial]) -> FrozenTrial | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and "config" in t.user_attrs]
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.set_size_inches(8, 5)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)  # Optuna draws through pyplot: release the figure


def _note_figure(path: Path, title: str, note: str) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3))
    ax = figure.subplots()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, note, ha="center", va="center", wrap=True)
    figure.savefig(path, dpi=100)


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])
    tmp.replace(path)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-2 and value != 0 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)
