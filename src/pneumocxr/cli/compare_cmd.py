"""``pneumocxr compare RUN_OR_CHECKPOINT… --data ROOT [--split test|validation] [--tta] --out DIR``:
models side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from pneumocxr.cli.evaluate_cmd import add_common_options, n_boot


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare checkpoints on the same split: metrics with CIs, speed, DeLong and McNemar tests",
        description="Evaluate every model (reusing saved per-image predictions in OUT/evaluation/) and "
        "write results/comparison.{csv,md,json}, results/comparison_pairwise.csv and "
        "plots/{roc_comparison,confusion_matrix_comparison}.png. p-values are against the first model. "
        "With --split validation every model must record the same validation patients.",
    )
    parser.add_argument(
        "models", nargs="+", type=Path, metavar="RUN_OR_CHECKPOINT", help="run folders or .pt files"
    )
    add_common_options(parser)
    parser.add_argument(
        "--speed-seconds", type=float, default=2.0, help="time spent measuring images/s per model (default 2)"
    )
    parser.set_defaults(handler=run)


def format_comparison(result) -> str:
    """Compact table: model, params, images/s, AUC/accuracy/sensitivity/specificity with CIs, p-values."""
    from pneumocxr.workflows.compare import format_estimate, format_p

    metrics = ("roc_auc", "accuracy", "sensitivity", "specificity")
    heads = [
        "model",
        "params",
        "img/s",
        "ROC AUC",
        "accuracy",
        "sensitivity",
        "specificity",
        "p DeLong",
        "p McNemar",
    ]
    rows = []
    for r in result.table:
        cells = [r["model"], f"{r['parameters'] / 1e6:.2f}M", f"{r['images_per_s']:.1f}"]
        cells += [format_estimate(r[m], r[f"{m}_lo"], r[f"{m}_hi"]) for m in metrics]
        cells += [format_p(r["delong_p_vs_reference"]), format_p(r["mcnemar_p_vs_reference"])]
        rows.append(cells)
    widths = [max(len(str(x)) for x in column) for column in zip(heads, *rows)]
    lines = ["  ".join(f"{c:<{w}}" for c, w in zip(line, widths)) for line in (heads, *rows)]
    first = result.table[0]
    lines.append(
        f"threshold: each model's stored one; p-values vs {result.reference}; "
        f"speed on {first['speed_device']}, batch {first['speed_batch_size']} (decoding excluded)"
    )
    lines += [f"{r['model']}: undefined — {r['undefined']}" for r in result.table if r["undefined"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pneumocxr.workflows import compare_models

    result = compare_models(
        args.models,
        args.data,
        split=args.split,
        out_dir=args.out,
        n_boot=n_boot(args),
        seed=args.seed,
        cache_dir=args.cache_dir,
        device=args.device,
        batch_size=args.batch_size,
        results_csv=args.results_csv,
        speed_seconds=args.speed_seconds,
        tta=args.tta,
    )
    for ev in result.evaluations.values():
        for message in ev.selection.warnings:
            print(f"WARNING ({ev.model}): {message}")
    print(format_comparison(result))
    splits = {name: ev.split for name, ev in result.evaluations.items()}
    if len(set(splits.values())) > 1:  # the same images, optimistic for one model and held out for another
        print("split: the same images, which were")
        for name, split in splits.items():
            print(f"  for {name}: {split}")
    else:
        print(f"split:   {next(iter(splits.values()))}")
    print(f"table:   {result.files['comparison_csv']} (and comparison.md, comparison_pairwise.csv)")
    print(f"plots:   {result.files['roc_comparison_png']}, {result.files['confusion_matrix_comparison_png']}")
    print(f"per-model evaluations: {result.out_dir / 'evaluation'}")
    return 0
