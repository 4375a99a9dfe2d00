"""``pneumocxr evaluate --checkpoint C --data ROOT [--split test] --out DIR``: metrics with 95 % CIs."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options ``evaluate`` and ``compare`` share."""
    parser.add_argument("--data", required=True, help="dataset folder, CSV manifest or .npz")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--n-boot",
        type=int,
        default=None,
        help="bootstrap resamples (default: evaluation.DEFAULT_N_BOOT, 2000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument(
        "--cache-dir", type=Path, help="preprocessed-image cache to read/fill (default: none)"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument(
        "--results-csv",
        type=Path,
        help="performance table to update (default: OUT/results/performance_metrics.csv)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on a split: metrics with 95%% CIs, plots, per-image predictions",
        description="Evaluate one checkpoint at its stored threshold and at 0.5. Writes predictions.csv, "
        "metrics.json/csv, classification reports and plots into --out and updates the performance table.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="best.pt of a run (or its run folder)")
    add_common_options(parser)
    parser.set_defaults(handler=run)


def format_metrics_table(result) -> str:
    """Metric | at the checkpoint threshold | at 0.5, as "value (low–high)"; undefined ones with why."""
    from pneumocxr.evaluation import METRIC_LABELS, METRIC_NAMES
    from pneumocxr.inference.compare import format_estimate

    kinds = list(result.metrics)
    heads = [f"threshold {result.metrics[k].info['threshold']:.4g} ({k})" for k in kinds]
    width = max(len(label) for label in METRIC_LABELS.values())
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{h:<26}" for h in heads)]
    reasons: dict[tuple[str, str], list[str]] = {}  # (metric, why) → threshold kinds where undefined
    for name in METRIC_NAMES:
        cells = []
        for kind, head in zip(kinds, heads):
            estimate = result.metrics[kind].estimates[name]
            cells.append(format_estimate(estimate.value, estimate.low, estimate.high, digits=4))
            if estimate.value != estimate.value:  # NaN: undefined on these data
                reasons.setdefault((name, estimate.note), []).append(head)
        lines.append(f"{METRIC_LABELS[name]:<{width}}  " + "  ".join(f"{c:<26}" for c in cells))
    for (name, why), where in reasons.items():
        at = "" if len(where) == len(kinds) else f" at {', '.join(where)}"
        lines.append(f"undefined: {METRIC_LABELS[name]}{at} — {why}")
    return "\n".join(lines)


def print_evaluation(result) -> None:
    """The compact printout of one evaluation."""
    ci = result.metrics["checkpoint"].info
    print(
        f"{result.model} ({result.architecture}) on {result.data} [{result.split}]: {ci['n']} images, "
        f"{ci['n_patients']} patients, {ci['n_positive']} PNEUMONIA; device {result.device}"
        + ("; reused saved predictions" if result.reused_predictions else "")
    )
    for message in result.selection.warnings:
        print(f"WARNING: {message}")
    for note in result.selection.notes:
        print(f"note: {note}")
    print(
        f"scored: calibrated probability (temperature {result.predictions.temperature:.4g}); 95% CIs: "
        f"Wilson for proportions, patient bootstrap (n={ci['n_boot']}) for the rest"
    )
    print(format_metrics_table(result))


def n_boot(args: argparse.Namespace) -> int:
    from pneumocxr.evaluation import DEFAULT_N_BOOT

    return DEFAULT_N_BOOT if args.n_boot is None else args.n_boot


def run(args: argparse.Namespace) -> int:
    from pneumocxr.inference import evaluate_checkpoint, resolve_checkpoint

    result = evaluate_checkpoint(
        resolve_checkpoint(args.checkpoint),
        args.data,
        split=args.split,
        out_dir=args.out,
        n_boot=n_boot(args),
        seed=args.seed,
        cache_dir=args.cache_dir,
        device=args.device,
        batch_size=args.batch_size,
        results_csv=args.results_csv,
    )
    print_evaluation(result)
    print(f"per-image predictions: {result.files['predictions_csv']}")
    print(
        f"metrics:               {result.files['metrics_json']} (and metrics.csv, classification_report.txt)"
    )
    print(f"plots:                 {result.out_dir / 'plots'}")
    print(f"performance table:     {result.files['performance_csv']}")
    return 0
