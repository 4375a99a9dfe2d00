"""``pneumocxr train --config configs/X.yaml [--set key=value …] [--task T] --out runs/NAME [--resume]``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pneumocxr.cli.common_args import add_overrides_option
from pneumocxr.config import (
    TASKS,
    RunConfig,
    apply_overrides,
    from_dict,
    load_yaml,
    resolve_recipe,
    task_overrides,
)
from pneumocxr.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model on a patient-level split of the train folder",
        description="Train a classifier. Precedence: defaults < --config YAML < --set overrides. "
        "Writes config.yaml, checkpoints/, history.csv, training_curves.png and best.pt into --out.",
    )
    parser.add_argument("--config", type=Path, help="YAML recipe (see configs/); optional with --resume")
    add_overrides_option(
        parser,
        "override settings, e.g. --set train.lr=3e-4 model.image_size=128 (repeatable)",
    )
    add_task_option(parser)
    parser.add_argument("--out", type=Path, required=True, help="run folder, e.g. runs/vgg16")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoints/last.ckpt"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in batch logs)")
    parser.set_defaults(handler=run)


def add_task_option(parser: argparse.ArgumentParser) -> None:
    """``--task``: shared by train and cv."""
    parser.add_argument(
        "--task",
        choices=TASKS,
        help="what to classify: binary (NORMAL vs PNEUMONIA, the default) or normal-bacterial-viral "
        "(three classes from the file names' sub-labels); sets data.task and model.num_classes together",
    )


def with_task(overrides: list[str], task: str | None) -> list[str]:
    """``--set`` overrides plus those of ``--task``; a ``--set`` of the same key with another value
    is refused rather than silently overruled."""
    if not task:
        return list(overrides)
    implied = task_overrides(task)
    wanted = dict(item.partition("=")[::2] for item in implied)
    for item in overrides:
        key, _, value = item.partition("=")
        if key in wanted and value.strip() != wanted[key]:
            raise ConfigError(
                f"--task {task} sets {key}={wanted[key]} but --set {item} contradicts it; drop one"
            )
    return [*overrides, *implied]


def resolve_config(config: Path | None, overrides: list[str], out: Path, resume: bool) -> RunConfig:
    """The run's RunConfig: from --config, else (resuming) the run folder's saved config.yaml."""
    if config is None:
        saved = out / "config.yaml"
        if not (resume and saved.is_file()):
            raise ConfigError(
                "pass --config configs/NAME.yaml (only --resume of an existing run may omit it)"
            )
        config = saved
    return from_dict(RunConfig, apply_overrides(load_yaml(resolve_recipe(config)), overrides))


def run(args: argparse.Namespace) -> int:
    config = resolve_config(args.config, with_task(args.overrides, args.task), args.out, args.resume)
    from pneumocxr.training import train  # Lightning is slow to import: only when training

    for name in ("lightning.pytorch", "lightning.fabric"):
        # Lightning prints through its own handler; propagating too would print every line twice.
        logging.getLogger(name).propagate = False
    result = train(config, args.out, resume=args.resume, progress=not args.no_progress)
    if result.global_rank != 0:
        return 0  # DDP: the other processes stay quiet
    split = result.split
    n_val = sum(split.get("val_counts", []))
    print(f"best epoch {result.best_epoch} (phase {result.best_phase}) of {result.epochs_run} run")
    if len(result.class_names) > 2:
        _print_multiclass(result, n_val)
    else:
        _print_binary(result, n_val)
    print(f"device {result.accelerator}, precision {result.precision}, {result.wall_s:.1f} s")
    print(f"best model:   {result.best_checkpoint}")
    print(f"history:      {result.history_csv}  ({result.curves_png.name} beside it)")
    print(f"config:       {result.config_yaml}")
    print(f"resume point: {result.out_dir / 'checkpoints' / 'last.ckpt'}")
    return 0


def _print_binary(result, n_val: int) -> None:
    m, split = result.metrics, result.split
    print(
        f"validation ({n_val} images of {len(split.get('val_patients', []))} patients carved from train): "
        f"AUC {m['val_auc']:.4f}  loss {m['val_loss']:.4f}  at 0.5: accuracy {m['val_acc']:.4f}  "
        f"sensitivity {m['val_sensitivity']:.4f}  specificity {m['val_specificity']:.4f}"
    )
    op = result.operating_point
    print(
        f"operating point chosen on validation: threshold {op['threshold']:.4f} on probabilities calibrated "
        f"with temperature {op['temperature']:.3f} (rule {op.get('threshold_rule', 'youden')}): "
        f"sensitivity {op['sensitivity']:.4f}  "
        f"specificity {op['specificity']:.4f}"
    )


def _print_multiclass(result, n_val: int) -> None:
    m, split, op = result.metrics, result.split, result.operating_point
    counts = ", ".join(f"{n} {c}" for c, n in zip(result.class_names, split.get("val_class_counts", [])))
    print(
        f"validation ({n_val} images: {counts}; {len(split.get('val_patients', []))} patients carved from "
        f"train), task {result.task}: macro AUC {m['val_auc']:.4f}  loss {m['val_loss']:.4f}  "
        f"accuracy {m['val_acc']:.4f}  macro recall {m['val_sensitivity']:.4f}  "
        f"macro specificity {m['val_specificity']:.4f}"
    )
    recalls = "  ".join(f"{c} {v:.4f}" for c, v in op["recall"].items())
    print(
        f"calibration on validation: temperature {op['temperature']:.3f}; decision = argmax; "
        f"recall per class: {recalls}"
    )
