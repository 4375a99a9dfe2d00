"""``pneumocxr evaluate --checkpoint C --data ROOT [--split test|validation] [--tta] [--mc-dropout N]
--out DIR``: metrics with 95 % CIs."""

from __future__ import annotations

import argparse
from pathlib import Path

from pneumocxr.cli.common_args import add_device_options, add_runtime_options
from pneumocxr.cli.stress_args import add_stress_options, check_stress_options, run_stress_step


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options ``evaluate`` and ``compare`` share."""
    parser.add_argument("--data", required=True, help="dataset folder, CSV manifest or .npz")
    parser.add_argument(
        "--split",
        default="test",
        help="split to evaluate (default: test). 'validation' = the patient-level validation split the "
        "checkpoint records, rebuilt exactly: for a trained checkpoint the split carved from train that "
        "chose it (labelled optimistic); for an ensemble of a cv folder the patients held out of every "
        "fold (labelled held-out). A dataset's own val/ (or validation/) folder is --split val",
    )
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
    add_device_options(parser)
    add_tta_option(parser)
    parser.add_argument(
        "--results-csv",
        type=Path,
        help="performance table to update (default: OUT/results/performance_metrics.csv)",
    )


def add_tta_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="test-time augmentation: the mean logit of 5 small shifts/scales (no flips); the model's name "
        "gets '+tta'. Default: off, or as an ensemble file was created",
    )


def add_mc_dropout_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mc-dropout",
        type=int,
        default=0,
        metavar="N",
        help="MC-dropout: N stochastic passes with the Dropout layers on; reports their mean calibrated "
        "probability and per-image spread (std); the model's name gets '+mcN'. Default 0 = off",
    )
    parser.add_argument("--mc-seed", type=int, default=0, help="seed of the MC-dropout passes (default 0)")


def add_operating_point_options(parser: argparse.ArgumentParser) -> None:
    """``--threshold-rule`` and ``--prevalence`` (binary checkpoints)."""
    parser.add_argument(
        "--threshold-rule",
        metavar="RULE",
        help="decide at another threshold rule the checkpoint stores (youden, youden_edge, "
        "target_sensitivity, bootstrap_median) instead of its own; the model is named NAME@RULE",
    )
    parser.add_argument(
        "--prevalence",
        metavar="P",
        help="also report PPV and NPV at disease prevalence P (0 < P < 1), from sensitivity and "
        "specificity by Bayes' theorem, with patient-bootstrap 95%% CIs",
    )


def load_predictor(checkpoint: Path, args: argparse.Namespace):
    """The checkpoint as ``Predictor``, with --tta and (where the command has them) --mc-dropout,
    --runtime and --threads."""
    from pneumocxr.inference import load_predictor

    predictor = load_predictor(
        checkpoint,
        device=args.device,
        batch_size=args.batch_size,
        tta=args.tta,
        runtime=getattr(args, "runtime", "auto"),
        threads=getattr(args, "threads", None),
    )
    if getattr(args, "mc_dropout", 0):
        from pneumocxr.inference.mc_dropout import with_mc_dropout

        predictor = with_mc_dropout(predictor, args.mc_dropout, seed=args.mc_seed)
    return predictor


def inference_line(settings: dict) -> str | None:
    """One printed line when TTA or MC-dropout changed how the model ran, else None."""
    parts = ["TTA"] if settings["tta"] else []
    if settings["mc_dropout_passes"]:
        parts.append(
            f"MC-dropout {settings['mc_dropout_passes']} passes (seed {settings['mc_dropout_seed']})"
        )
    if not parts:
        return None
    chosen = "" if settings["threshold_chosen_with_these_settings"] else "; threshold chosen without them"
    return "inference: " + " + ".join(parts) + chosen


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on a split: metrics with 95%% CIs, plots, per-image predictions",
        description="Evaluate one checkpoint at its stored threshold and at 0.5. Writes predictions.csv, "
        "metrics.json/csv, classification reports and plots into --out and updates the performance table.",
    )
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="best.pt of a run (or its run folder), or an ensemble"
    )
    add_common_options(parser)
    add_runtime_options(parser)
    add_mc_dropout_options(parser)
    add_operating_point_options(parser)
    add_stress_options(parser)
    parser.set_defaults(handler=run)


def format_metrics_table(result) -> str:
    """Metric | at the checkpoint threshold | at 0.5, as "value (low–high)"; undefined ones with why."""
    from pneumocxr.evaluation import METRIC_LABELS, METRIC_NAMES
    from pneumocxr.workflows.compare import format_estimate

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
    if getattr(result, "task", "binary") != "binary":  # a k-class checkpoint (evaluate_multiclass)
        print_multiclass_evaluation(result)
        return
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
    for line in prevalence_lines(result):
        print(line)


def prevalence_lines(result) -> list[str]:
    """PPV/NPV at the user's prevalence, one line per threshold kind (none without --prevalence)."""
    from pneumocxr.workflows.compare import format_estimate

    adjusted = getattr(result, "prevalence_adjusted", {})
    lines = []
    for kind, pa in adjusted.items():
        ppv, npv = (format_estimate(e.value, e.low, e.high, digits=4) for e in (pa.ppv, pa.npv))
        lines.append(
            f"at prevalence {pa.prevalence:g}, threshold {pa.threshold:.4g} ({kind}): PPV {ppv}  NPV {npv}"
        )
    if adjusted:
        first = next(iter(adjusted.values()))
        lines.append(f"  ({first.method}, n={first.n_boot})")
    return lines


def print_multiclass_evaluation(result) -> None:
    """Header, the classification report with every CI, and the confusion matrix (rows = true class)."""
    m, names = result.metrics, result.class_names
    counts = ", ".join(f"{m.support[c]} {c}" for c in names)
    print(
        f"{result.model} ({result.architecture}, task {result.task}) on {result.data} [{result.split}]: "
        f"{m.n} images ({counts}), {m.info['n_patients']} patients; device {result.device}"
    )
    for message in result.selection.warnings:
        print(f"WARNING: {message}")
    for note in result.selection.notes:
        print(f"note: {note}")
    print(
        f"scored: softmax(logits / {result.predictions.temperature:.4g}), prediction = argmax; 95% CIs: "
        f"Wilson for proportions, patient bootstrap (n={m.info['n_boot']}) for the rest"
    )
    print(m.classification_report())
    corner = "true / predicted"
    width = max(len(corner), *(len(c) for c in names))
    print("confusion matrix (rows = true class, columns = predicted):")
    print(f"{corner:<{width}}  " + "  ".join(f"{c:>10}" for c in names))
    for name, row in zip(names, m.confusion):
        print(f"{name:<{width}}  " + "  ".join(f"{int(v):>10}" for v in row))


def n_boot(args: argparse.Namespace) -> int:
    from pneumocxr.evaluation import DEFAULT_N_BOOT

    return DEFAULT_N_BOOT if args.n_boot is None else args.n_boot


def run(args: argparse.Namespace) -> int:
    from pneumocxr.workflows import evaluate_checkpoint, resolve_checkpoint
    from pneumocxr.workflows.provenance import inference_settings
    from pneumocxr.workflows.validation import VALIDATION, recorded_validation

    prevalence = None
    if args.prevalence is not None:  # fail before any loading, in one line (not argparse's usage)
        from pneumocxr.evaluation import check_prevalence

        prevalence = check_prevalence(args.prevalence)
    if args.threshold_rule is not None:
        from pneumocxr.workflows.operating_rules import check_rule_name

        check_rule_name(args.threshold_rule)
    check_stress_options(args)  # a bad --stress-shifts fails here, before any loading
    checkpoint = resolve_checkpoint(args.checkpoint)
    data, split = args.data, args.split
    if split == VALIDATION:  # the split the checkpoint records, named by what it is (optimistic or held out)
        data = recorded_validation(checkpoint, args.data)
        split = data.splits()[0]
    predictor = load_predictor(checkpoint, args)
    result = evaluate_checkpoint(
        checkpoint,
        data,
        split=split,
        out_dir=args.out,
        n_boot=n_boot(args),
        seed=args.seed,
        cache_dir=args.cache_dir,
        device=args.device,
        batch_size=args.batch_size,
        results_csv=args.results_csv,
        predictor=predictor,
        threshold_rule=args.threshold_rule,
        prevalence=prevalence,
    )
    print_evaluation(result)
    if args.threshold_rule is not None:
        print(
            f"threshold rule: {args.threshold_rule}, threshold {result.predictions.threshold:.4g} as the "
            "checkpoint stores it (chosen on its validation split)"
        )
    if line := inference_line(inference_settings(predictor)):
        print(line)
    print(f"per-image predictions: {result.files['predictions_csv']}")
    print(
        f"metrics:               {result.files['metrics_json']} (and metrics.csv, classification_report.txt)"
    )
    print(f"plots:                 {result.out_dir / 'plots'}")
    print(f"performance table:     {result.files['performance_csv']}")
    if args.stress:  # the same split and loaded model, re-rendered under acquisition shifts
        run_stress_step(args, checkpoint, data, split, predictor)
    return 0
