"""``compare_models``: several checkpoints on the same images, side by side, with paired tests.

Each model is evaluated with ``evaluate_checkpoint`` into ``out_dir/evaluation/<model>/`` (per-image
predictions already there for the same checkpoint and images are reused, not recomputed). Then:

- ``results/comparison.{csv,md,json}``: one row per model — metrics at its checkpoint threshold with
  95 % CIs, parameter count, inference speed (images/s of the model step on this machine, the
  device named), and p-values against the reference (the FIRST model): DeLong for ROC AUC,
  McNemar for accuracy;
- ``results/comparison_pairwise.csv``: the same two tests for every pair;
- ``plots/roc_comparison.{png,csv}`` and ``plots/confusion_matrix_comparison.{png,csv}``.

``split="validation"`` compares on the validation split the models RECORD (``validation.
shared_validation``): they must record the same patients. Each model's evaluation is labelled for
what that split was to it: optimistic for a model selected on it, held out for a CV fold ensemble.
``tta`` runs every model with test-time augmentation; the names say so (``NAME+tta``).

The tests are paired (same images) and, like every test here, treat images as independent: with
several images per child the p-values are somewhat optimistic; the patient-bootstrap intervals
are the honest companion.
"""

from __future__ import annotations

import csv
import gc
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pneumocxr.data.discovery import Dataset
from pneumocxr.errors import CheckpointError, ConfigError, DatasetError
from pneumocxr.evaluation import (
    DEFAULT_N_BOOT,
    METRIC_LABELS,
    METRIC_NAMES,
    confusion_matrix,
    pairwise_comparisons,
)
from pneumocxr.inference import load_predictor
from pneumocxr.inference.predictor import DEFAULT_BATCH_SIZE
from pneumocxr.workflows import outputs
from pneumocxr.workflows.evaluate import EvaluationResult, evaluate_checkpoint, model_label
from pneumocxr.workflows.provenance import inference_settings, inference_suffix
from pneumocxr.workflows.results_table import csv_cell, performance_csv_path
from pneumocxr.workflows.validation import VALIDATION, shared_validation

logger = logging.getLogger(__name__)

TABLE_METRICS = (
    "roc_auc",
    "accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "pr_auc",
    "brier",
    "ece",
)


@dataclass(frozen=True)
class ComparisonResult:
    """What ``compare_models`` produced."""

    out_dir: Path
    reference: str  # the first model: p-values in ``table`` are against it
    evaluations: dict[str, EvaluationResult]  # model name → its evaluation, in the given order
    table: list[dict[str, Any]]  # one row per model (comparison.csv)
    pairwise: list[dict[str, Any]]  # one row per pair (comparison_pairwise.csv)
    files: dict[str, Path] = field(default_factory=dict)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder means its ``best.pt``; a file is itself."""
    path = Path(path).expanduser()
    if path.is_dir():
        best = path / "best.pt"
        if not best.is_file():
            raise CheckpointError(
                f"run folder {path} has no best.pt; finish training it or pass a checkpoint file"
            )
        return best
    if not path.is_file():
        raise CheckpointError(f"{path} is neither a checkpoint file nor a run folder holding best.pt")
    return path


def unique_labels(checkpoints: Sequence[Path]) -> list[str]:
    """Display names, made unique: NAME, else folder/NAME, else NAME#k."""
    labels = [model_label(c) for c in checkpoints]
    clashing = {label for label in labels if labels.count(label) > 1}
    for i, c in enumerate(checkpoints):
        if labels[i] in clashing:
            folder = c.parent.parent if c.name == "best.pt" else c.parent
            labels[i] = f"{folder.name}/{labels[i]}"
    counts: dict[str, int] = {}
    snapshot = list(labels)
    for i, label in enumerate(snapshot):
        if snapshot.count(label) > 1:
            counts[label] = counts.get(label, 0) + 1
            labels[i] = f"{label}#{counts[label]}"
    return labels


def compare_models(
    checkpoints_or_run_dirs: Sequence[str | os.PathLike],
    data_root: str | os.PathLike | Dataset,
    *,
    split: str = "test",
    out_dir: str | os.PathLike,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    results_csv: str | os.PathLike | None = None,
    speed_seconds: float = 2.0,
    tta: bool | None = None,
) -> ComparisonResult:
    """Evaluate and compare two or more models on ``split`` of ``data_root`` (module docstring)."""
    if len(checkpoints_or_run_dirs) < 2:
        raise ConfigError("compare needs at least two checkpoints or run folders; use evaluate for one")
    checkpoints = [resolve_checkpoint(p) for p in checkpoints_or_run_dirs]
    labels = unique_labels(checkpoints)
    if split == VALIDATION and not isinstance(data_root, Dataset):
        sources = [(d, d.splits()[0]) for d in shared_validation(checkpoints, data_root)]
    else:
        sources = [(data_root, split)] * len(checkpoints)
    out_dir = Path(out_dir)
    table_csv = performance_csv_path(out_dir, results_csv)  # one table for every model
    evaluations: dict[str, EvaluationResult] = {}
    speeds: dict[str, dict[str, Any]] = {}
    params: dict[str, tuple[int, int]] = {}
    for i, (checkpoint, (data, model_split)) in enumerate(zip(checkpoints, sources)):
        predictor = load_predictor(checkpoint, device=device, batch_size=batch_size, tta=tta)
        if predictor.num_classes != 2:  # DeLong/McNemar and the paired table are binary tests
            raise ConfigError(
                f"{checkpoint}: a {predictor.num_classes}-class model ({', '.join(predictor.class_names)}); "
                "compare takes binary models only — evaluate each k-class model with `pneumocxr evaluate`"
            )
        label = labels[i] = labels[i] + inference_suffix(inference_settings(predictor))
        evaluations[label] = evaluate_checkpoint(
            checkpoint,
            data,
            split=model_split,
            out_dir=out_dir / "evaluation" / label,
            n_boot=n_boot,
            seed=seed,
            cache_dir=cache_dir,
            results_csv=table_csv,
            reuse_predictions=True,
            predictor=predictor,
        )
        speeds[label] = predictor.measure_throughput(seconds=speed_seconds)
        params[label] = predictor.num_parameters
        del predictor  # one model in memory at a time (VGG16 is 0.5 GB)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    _check_same_images(evaluations)
    return _tabulate(out_dir, labels, evaluations, speeds, params)


def _check_same_images(evaluations: dict[str, EvaluationResult]) -> None:
    first_name, first = next(iter(evaluations.items()))
    for name, ev in evaluations.items():
        if ev.paths != first.paths or not np.array_equal(ev.labels, first.labels):
            raise DatasetError(
                f"{name} and {first_name} were scored on different images; paired tests need the same"
            )


def _tabulate(
    out_dir: Path,
    labels: list[str],
    evaluations: dict[str, EvaluationResult],
    speeds: dict[str, dict[str, Any]],
    params: dict[str, tuple[int, int]],
) -> ComparisonResult:
    y = evaluations[labels[0]].labels
    probs = {k: ev.predictions.calibrated_probability for k, ev in evaluations.items()}
    thresholds = {k: ev.predictions.threshold for k, ev in evaluations.items()}
    pairwise = pairwise_comparisons(y, probs, thresholds)
    vs_ref = {row["model_b"]: row for row in pairwise if row["model_a"] == labels[0]}
    table = [_row(k, evaluations[k], speeds[k], params[k], vs_ref.get(k)) for k in labels]
    results, plots_dir = out_dir / "results", out_dir / "plots"
    results.mkdir(parents=True, exist_ok=True)
    files = {
        "comparison_csv": _write_csv(results / "comparison.csv", table),
        "pairwise_csv": _write_csv(results / "comparison_pairwise.csv", pairwise),
    }
    splits = {k: ev.split for k, ev in evaluations.items()}
    markdown = comparison_markdown(table, pairwise, labels[0], splits=splits)
    (results / "comparison.md").write_text(markdown, encoding="utf-8")
    files["comparison_md"] = results / "comparison.md"
    files["comparison_json"] = outputs.write_json(
        results / "comparison.json",
        {"reference": labels[0], "splits": splits, "models": table, "pairwise": pairwise},
    )
    from pneumocxr.evaluation import plots  # Matplotlib: only when figures are drawn

    split = " / ".join(dict.fromkeys(splits.values()))  # one name, or each label of the same images
    fig = plots.plot_roc_comparison(
        y, probs, plots_dir / "roc_comparison.png", title=f"ROC comparison ({split})"
    )
    fig.clear()
    matrices = {k: confusion_matrix(y, ev.predictions.prediction) for k, ev in evaluations.items()}
    plots.plot_confusion_matrix_grid(matrices, plots_dir / "confusion_matrix_comparison.png").clear()
    files["roc_comparison_png"] = plots_dir / "roc_comparison.png"
    files["confusion_matrix_comparison_png"] = plots_dir / "confusion_matrix_comparison.png"
    return ComparisonResult(out_dir, labels[0], evaluations, table, pairwise, files)


def _row(
    name: str, ev: EvaluationResult, speed: dict[str, Any], params: tuple[int, int], ref: dict | None
) -> dict[str, Any]:
    ci = ev.metrics["checkpoint"]
    row: dict[str, Any] = {
        "model": name,
        "architecture": ev.architecture,
        "checkpoint": str(ev.checkpoint),
        "parameters": params[0],
        "trainable_parameters": params[1],
        "images_per_s": speed["images_per_s"],
        "speed_device": speed["device"],
        "speed_batch_size": speed["batch_size"],
        "threshold": ci.info["threshold"],
        "temperature": ev.predictions.temperature,
        "n": ci.info["n"],
    }
    for metric in METRIC_NAMES:
        value, low, high = ci[metric]
        row.update({metric: value, f"{metric}_lo": low, f"{metric}_hi": high})
    nan = float("nan")
    row["auc_difference_vs_reference"] = ref["auc_difference"] if ref else nan
    row["delong_p_vs_reference"] = ref["delong_p"] if ref else nan
    row["mcnemar_p_vs_reference"] = ref["mcnemar_p"] if ref else nan
    row["undefined"] = "; ".join(f"{k}: {why}" for k, why in ev.undefined().items())
    return row


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["model"])
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in r.items()} for r in rows)
    return path


def format_estimate(value: float, low: float, high: float, digits: int = 3) -> str:
    """``0.912 (0.880–0.940)``; ``n/a`` for NaN; the value alone when it has no interval."""
    if np.isnan(value):
        return "n/a"
    if np.isnan(low) or np.isnan(high):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def format_p(p: float) -> str:
    if np.isnan(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def comparison_markdown(
    table: list[dict[str, Any]],
    pairwise: list[dict[str, Any]],
    reference: str,
    splits: dict[str, str] | None = None,
) -> str:
    """The comparison as Markdown: models table, pairwise tests, and how to read them.

    ``splits``: model → the evaluated split's name (its label, e.g. optimistic or held out)."""
    head = ["Model", "Params", "Images/s", *(METRIC_LABELS[m] for m in TABLE_METRICS)]
    head += [f"p AUC vs {reference} (DeLong)", f"p accuracy vs {reference} (McNemar)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        cells = [r["model"], f"{r['parameters'] / 1e6:.2f}M", f"{r['images_per_s']:.1f}"]
        cells += [format_estimate(r[m], r[f"{m}_lo"], r[f"{m}_hi"]) for m in TABLE_METRICS]
        cells += [format_p(r["delong_p_vs_reference"]), format_p(r["mcnemar_p_vs_reference"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| Model A | Model B | AUC A − B (95% CI) | p (DeLong) | discordant b/c | p (McNemar) |"]
    lines.append("|---|---|---|---|---|---|")
    for p in pairwise:
        diff = format_estimate(p["auc_difference"], p["auc_diff_ci_low"], p["auc_diff_ci_high"])
        lines.append(
            f"| {p['model_a']} | {p['model_b']} | {diff} | {format_p(p['delong_p'])} | "
            f"{p['mcnemar_b']}/{p['mcnemar_c']} | {format_p(p['mcnemar_p'])} ({p['mcnemar_method']}) |"
        )
    first = table[0]
    notes = [
        "",
        f"Metrics at each model's stored threshold on its calibrated probability, n = {first['n']} images; "
        "95% CIs: Wilson for proportions, patient-level bootstrap for the rest.",
        f"Speed: model step from preprocessed pixels (decoding excluded) on {first['speed_device']}, "
        f"batch {first['speed_batch_size']}.",
        "DeLong and McNemar are paired tests that treat images as independent (several images per "
        "patient make them somewhat optimistic).",
    ]
    notes += [f"{r['model']}: undefined — {r['undefined']}" for r in table if r["undefined"]]
    if splits and len(set(splits.values())) > 1:
        notes.append("The same images, which were a different split to each model:")
        notes += [f"- {model}: {name}" for model, name in splits.items()]
    elif splits:
        notes.append(f"Split: {next(iter(splits.values()))}.")
    return "\n".join(lines + notes) + "\n"
