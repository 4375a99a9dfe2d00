"""The steps of ``pneumocxr run``, each ONE library call plus its account (``state.notify``).

A step takes the shared ``RunState`` and returns a status line for the summary ("done", "done on
2 split(s)" …); what it produces goes into files under ``--out`` and into ``state``. A step that
cannot run here raises ``StepNotRun``: never a quiet "skipped" (the run then exits non-zero).
The shift-stress and model-card steps are in ``robustness``.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumocxr.data.check import check_dataset, format_report
from pneumocxr.data.eda import format_summary, run_eda
from pneumocxr.errors import DatasetError, WeightsUnavailableError
from pneumocxr.workflows.run import weights as run_weights
from pneumocxr.workflows.run.state import EvalSplit, Notify, RunState, StepNotRun

HEADLINE = ("roc_auc", "accuracy", "sensitivity", "specificity")


def data_check(state: RunState) -> str:
    """Report (never fail on) unreadable files and duplicates; the full report as JSON."""
    report = check_dataset(state.dataset, workers=state.workers)
    path = report.write_json(state.out / "results" / "data_check.json")
    state.results["data check"] = report
    state.notify(format_report(report, max_listed=5, full=str(path)))
    return "done"


def eda(state: RunState) -> str:
    summary = run_eda(state.dataset, state.out, workers=state.workers, cache_dir=state.cache_dir)
    state.results["eda"] = summary
    state.notify(format_summary(summary))
    return "done"


def train_models(state: RunState) -> str:
    """Train each model, or reuse / resume its run (training.reuse); publish best.pt as ``models/<name>.pt``.

    Pretrained weights that turn out unavailable only now (the pre-flight found them, then they
    went: a deleted cache, a hub hiccup) skip that model here, the same way.
    """
    from pneumocxr.training.reuse import train_or_reuse  # Lightning: only imported when training

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).propagate = False  # Lightning prints through its own handler
    outcomes = state.results.setdefault("train", {})
    for plan in state.trainable:
        for note in plan.notes:
            state.notify(f"   {plan.name}: {note}")
        state.notify(f"   {plan.name}: {plan.recipe}")
        try:
            outcome = train_or_reuse(plan.config, state.out / "runs" / plan.name, progress=state.progress)
        except SystemExit as exc:  # Lightning answers Ctrl-C inside fit with sys.exit(1)
            raise KeyboardInterrupt from exc  # main: "interrupted; finished work is kept", exit 130
        except WeightsUnavailableError as exc:
            if not run_weights.skippable(plan.config):
                raise
            state.skip(run_weights.skipped_model(plan.name, exc, "training"))
            continue
        outcomes[plan.name] = outcome
        _publish(outcome.best_checkpoint, state.model_file(plan.name))
        state.notify(f"   {plan.name}: {_describe(outcome)} -> {state.model_file(plan.name)}")
    if not outcomes:
        raise WeightsUnavailableError(run_weights.nothing_to_train(state.skipped))
    statuses = {**{n: o.status for n, o in outcomes.items()}, **{n: "skipped" for n in state.skipped}}
    return ", ".join(f"{n}: {statuses[n]}" for n in (p.name for p in state.plans) if n in statuses)


def _describe(outcome: Any) -> str:
    nan = float("nan")
    auc = outcome.metrics.get("val_auc", nan)
    threshold = outcome.operating_point.get("threshold", nan)
    temperature = outcome.operating_point.get("temperature", nan)
    return (
        f"{outcome.status} ({outcome.wall_s:.1f} s; {outcome.note}); best epoch {outcome.best_epoch} of "
        f"{outcome.epochs_run}; validation AUC {auc:.4f}; threshold {threshold:.4f}, temperature "
        f"{temperature:.3f} (both chosen on validation)"
    )


def _publish(best: Path, target: Path) -> None:
    """``models/<name>.pt``: a hard link to the run's best.pt (a copy across file systems).

    Replaced atomically, and only when it is not already that file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and os.path.samefile(best, target):
        return
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(best, tmp)
    except OSError:
        import shutil

        shutil.copy2(best, tmp)
    os.replace(tmp, target)


def evaluation_splits(state: RunState) -> list[EvalSplit]:
    """``test`` when the data has one; else the carved validation split and the official ``val``."""
    from pneumocxr.workflows.validation import CARVED_VALIDATION_SPLIT, carved_validation, relabelled_split

    dataset = state.dataset
    if dataset.in_split("test"):
        return [EvalSplit("test", "test", dataset, state.out, False)]
    outcomes = state.results["train"]
    first = next(iter(outcomes.values()))
    for name, outcome in outcomes.items():
        if outcome.split.get("val_patients_sha256") != first.split.get("val_patients_sha256"):
            raise DatasetError(
                f"{name} and {first.model} were selected on different validation splits, so they cannot be "
                f"compared on one; retrain them with the same data.* settings (remove {state.out / 'runs'})"
            )
    carved = carved_validation(first.split, dataset)
    splits = [EvalSplit(CARVED_VALIDATION_SPLIT, "carved_validation", carved, state.out, True)]
    if dataset.in_split("val"):
        official = relabelled_split(dataset, "val")
        splits.append(
            EvalSplit(official.splits()[0], "official_val", official, state.out / "official_val", False)
        )
    return splits


def evaluate_and_compare(state: RunState) -> str:
    """Every trained model on every evaluation split (saved predictions reused), compared pairwise.

    With one trained model (the others skipped) it is evaluated alone: there is nothing to compare.
    """
    from pneumocxr.workflows import compare_models

    trained = [state.model_file(p.name) for p in state.plans if p.name in state.results["train"]]
    records = []
    for ev in evaluation_splits(state):
        n = len(ev.dataset.in_split(ev.split))
        state.notify(f"   on {ev.split}" + ("" if ev.kind == "official_val" else f": {n} images"))
        settings = {"cache_dir": state.cache_dir, "device": state.device, "n_boot": state.n_boot}
        settings["results_csv"] = state.performance_csv
        if len(trained) > 1:
            result: Any = compare_models(
                trained, ev.dataset, split=ev.split, out_dir=ev.out_dir, speed_seconds=state.speed_seconds,
                **settings,
            )  # fmt: skip
            _label_comparison(result.files, ev.split)
        else:
            result = _evaluate_alone(trained[0], ev, settings, state.notify)
        state.notify(_headline_table(result.table, ev.split))
        state.results.setdefault("evaluate", []).append((ev, result))
        records.append(_split_summary(ev, n, result))
    state.summary["evaluations"] = records
    # the report's labels: these split names already say what they are (test keeps the report's own)
    state.summary["split_labels"] = {r["split"]: r["split"] for r in records if r["kind"] != "test"}
    return f"done on {len(records)} split(s): " + "; ".join(r["split"] for r in records)


@dataclass(frozen=True)
class SingleEvaluation:
    """What the steps after evaluation read of a comparison, for a run with one trained model."""

    evaluations: dict[str, Any]  # model → EvaluationResult
    table: list[dict[str, Any]]  # one row, the comparison table's columns the account uses
    files: dict[str, Path] = field(default_factory=dict)


# A comparison of the models of an EARLIER run of this folder: wrong beside a one-model run.
COMPARISON_FILES = (
    "results/comparison.csv",
    "results/comparison.md",
    "results/comparison.json",
    "results/comparison_pairwise.csv",
    "plots/roc_comparison.png",
    "plots/roc_comparison.csv",
    "plots/confusion_matrix_comparison.png",
    "plots/confusion_matrix_comparison.csv",
)


def _evaluate_alone(
    checkpoint: Path, ev: EvalSplit, settings: dict[str, Any], notify: Notify
) -> SingleEvaluation:
    from pneumocxr.workflows import evaluate_checkpoint, model_label

    name = model_label(checkpoint)
    notify(f"   {name} is the only trained model: evaluated alone, no comparison")
    evaluation = evaluate_checkpoint(
        checkpoint, ev.dataset, split=ev.split, out_dir=ev.out_dir / "evaluation" / name,
        reuse_predictions=True, **settings,
    )  # fmt: skip
    for stale in (ev.out_dir / f for f in COMPARISON_FILES):
        if stale.is_file():
            stale.unlink()
            notify(f"   removed {stale} (a comparison from an earlier run with other models)")
    ci = evaluation.metrics["checkpoint"]
    row: dict[str, Any] = {"model": name, "threshold": ci.info["threshold"], "delong_p_vs_reference": np.nan}
    for metric in (*HEADLINE, "f1", "ppv", "npv"):
        row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = ci[metric]
    return SingleEvaluation({name: evaluation}, [row])


def _label_comparison(files: dict[str, Path], split: str) -> None:
    """Name the split in comparison.md (a heading) and comparison.csv (a first column)."""
    md = files["comparison_md"]
    md.write_text(f"# Model comparison on: {split}\n\n" + md.read_text(encoding="utf-8"), encoding="utf-8")
    path = files["comparison_csv"]
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["split", *(rows[0] if rows else {})])
        writer.writeheader()
        writer.writerows({"split": split, **row} for row in rows)


def _headline_table(table: list[dict[str, Any]], split: str) -> str:
    from pneumocxr.workflows.compare import format_estimate, format_p

    lines = [f"   {split}: at each model's validation-chosen threshold, 95% CI"]
    width = max(len(row["model"]) for row in table)
    for row in table:
        cells = [f"{m} {format_estimate(row[m], row[m + '_lo'], row[m + '_hi'])}" for m in HEADLINE]
        p = format_p(row["delong_p_vs_reference"])
        lines.append(
            f"   {row['model']:>{width}}: " + "  ".join(cells) + (f"  (DeLong p {p})" if p != "–" else "")
        )
    return "\n".join(lines)


def _split_summary(ev: EvalSplit, n: int, result: Any) -> dict[str, Any]:
    models = {}
    for row in result.table:
        models[row["model"]] = {
            m: [row[m], row[f"{m}_lo"], row[f"{m}_hi"]] for m in (*HEADLINE, "f1", "ppv", "npv")
        }
        models[row["model"]]["threshold"] = row["threshold"]
    return {
        "split": ev.split,
        "kind": ev.kind,
        "n_images": n,
        "used_for_model_selection": ev.used_for_selection,
        "out_dir": str(ev.out_dir),
        "files": {k: str(v) for k, v in result.files.items()},
        "models": models,
    }


def gradcam(state: RunState) -> str:
    """gradcam_visualizations.png for the best model (ROC AUC) on the first evaluation split."""
    try:
        from pneumocxr.explain import gradcam_grid_for
    except ModuleNotFoundError as exc:
        raise StepNotRun(f"Grad-CAM is not available ({exc})") from exc

    ev, result = state.results["evaluate"][0]
    aucs = {name: e.metrics["checkpoint"]["roc_auc"][0] for name, e in result.evaluations.items()}
    best = max(aucs, key=lambda k: -np.inf if np.isnan(aucs[k]) else aucs[k])
    evaluation = result.evaluations[best]
    # gradcam_grid_for opens a checkpoint or an ensemble file (members' maps averaged) alike
    out = gradcam_grid_for(
        evaluation.checkpoint,
        ev.dataset.in_split(ev.split),
        evaluation.predictions.calibrated_probability,
        state.out / "plots" / "gradcam_visualizations.png",
        threshold=evaluation.predictions.threshold,
    )
    state.summary["gradcam"] = {"model": best, "split": ev.split, "figure": str(out), "chosen_by": "ROC AUC"}
    state.notify(f"   {best} (highest ROC AUC) on {ev.split} -> {out}")
    return f"done ({best})"


def report(state: RunState) -> str:
    """output/report.html from the files above (evaluation.report)."""
    try:
        from pneumocxr.evaluation.report import build_report
    except ModuleNotFoundError as exc:
        raise StepNotRun(f"the HTML report builder is not available ({exc})") from exc
    path = build_report(state.out)
    state.summary["report"] = str(path)
    state.notify(f"   -> {path}")
    return "done"
