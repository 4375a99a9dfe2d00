"""``pneumocxr evaluate --stress``: the options of the shift-stress suite and its printout.

Kept out of ``evaluate_cmd`` so that command stays one evaluation; ``evaluate`` calls
``check_stress_options`` before loading anything (a bad shift name is one line, exit 2) and
``run_stress_step`` after its own evaluation, on the same split and the same loaded model.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from pneumocxr.data.stress_shifts import SHIFTS, resolve_shifts

DEFAULT_IMAGES = 300  # = inference.stress.DEFAULT_STRESS_IMAGES (not imported: keeps --help cheap)


def add_stress_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("shift-stress suite")
    group.add_argument(
        "--stress",
        action="store_true",
        help="also re-render the split's images under realistic acquisition shifts (JPEG, resolution, "
        "gamma, contrast, brightness, noise, blur, sharpening, borders, rotation, burned-in text, field of "
        "view, top/bottom crops, inverted polarity) at 3 severities and report AUC, sensitivity and "
        "specificity at the stored threshold with 95%% CIs per shift: stress.csv/.json/.md/.png in --out. "
        "Meant for --split validation",
    )
    group.add_argument(
        "--stress-shifts",
        metavar="A,B,…",
        help=f"comma-separated subset of the shifts (default: all): {', '.join(SHIFTS)}",
    )
    group.add_argument(
        "--stress-images",
        type=int,
        default=DEFAULT_IMAGES,
        metavar="N",
        help=f"a seeded, class-stratified subsample of N images, whole patients (default {DEFAULT_IMAGES}: "
        "~5 min on 2 CPU cores for every shift with EfficientNet-Lite0; 0 = every image)",
    )
    group.add_argument(
        "--stress-seed",
        type=int,
        default=0,
        help="seed of the subsample and of every shifted image (default 0)",
    )


def check_stress_options(args: argparse.Namespace) -> None:
    """Fail on bad stress options before any model or image is loaded (PneumoCXRError: exit 2)."""
    from pneumocxr.errors import ConfigError

    if not args.stress:
        if args.stress_shifts is not None:
            raise ConfigError("--stress-shifts needs --stress; add --stress to run the shift-stress suite")
        return
    resolve_shifts(args.stress_shifts)
    if args.stress_images < 0:
        raise ConfigError(f"--stress-images {args.stress_images}; use a whole number >= 0 (0 = every image)")


def run_stress_step(args: argparse.Namespace, checkpoint: Path, data, split: str, predictor) -> None:
    """Run the suite on the evaluated split with the loaded predictor and print its table."""
    from pneumocxr.evaluation import DEFAULT_N_BOOT
    from pneumocxr.training.stress_augmentation import recorded_augmentation
    from pneumocxr.workflows.stress import run_stress

    result = run_stress(
        checkpoint,
        data,
        split=split,
        shifts=args.stress_shifts,
        seed=args.stress_seed,
        n_images=args.stress_images,
        out_dir=args.out,
        augmentation=recorded_augmentation(predictor.meta.config),
        n_boot=DEFAULT_N_BOOT if args.n_boot is None else args.n_boot,
        predictor=predictor,
    )
    print_stress(result)


def _cell(value: float, low: float, high: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isnan(low) or math.isnan(high):
        return f"{value:.3f}"
    return f"{value:.3f} ({low:.3f}–{high:.3f})"


def print_stress(result) -> None:
    """The stress table (one line per condition) and the worst case."""
    counts = ", ".join(f"{n} {name}" for name, n in result.class_counts.items())
    print(
        f"\nshift-stress suite: {result.model} on {result.split}: {result.n_images} images ({counts}), "
        f"threshold {result.threshold:.4g}, seed {result.seed}, {result.seconds:.0f} s"
    )
    head = f"{'shift':<12} {'severity':<9} {'trained':<8}"
    print(f"{head} {'AUC':<22} {'sensitivity':<22} {'specificity':<22} median P(NORMAL imgs)")
    for row in result.rows:
        trained = {True: "yes", False: "NO", None: "?"}[row["in_training_augmentation"]]
        trained = "" if row["severity"] == 0 else trained
        cells = [_cell(row[c], row[f"{c}_lo"], row[f"{c}_hi"]) for c in ("auc", "sensitivity", "specificity")]
        print(
            f"{row['shift']:<12} {row['severity_name']:<9} {trained:<8} "
            + " ".join(f"{c:<22}" for c in cells)
            + f" {row['median_p_normal']:.3f}"
        )
    for column, worst in result.worst().items():
        print(
            f"worst {column}: {worst['value']:.3f} under {worst['shift']} {worst['severity_name']} "
            f"({worst['change_from_clean']:+.3f} from clean)"
        )
    print(f"stress table: {result.files.get('stress_csv', '(not written)')} (and stress.json/.md/.png)")
