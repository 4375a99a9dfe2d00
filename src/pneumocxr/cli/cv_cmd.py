"""``pneumocxr cv --config C [--folds 5] [--task T] --out DIR [--set key=value …]``: patient k-fold CV."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pneumocxr.cli.common_args import add_overrides_option
from pneumocxr.cli.train_cmd import add_task_option, with_task
from pneumocxr.config import RunConfig, apply_overrides, from_dict, load_yaml, resolve_recipe
from pneumocxr.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cv",
        help="patient-level k-fold cross-validation: per-fold and mean ± std metrics, OOF predictions",
        description="Train one model per fold of a patient-grouped, class-stratified k-fold of the train "
        "folder. Writes fold<i>/ run folders, oof_predictions.csv (every training image once, predicted by "
        "the model that never saw its patient), cv_metrics.csv/md and cv.json into --out. Re-run the same "
        "command to resume: finished folds are skipped, an interrupted fold continues from last.ckpt.",
    )
    parser.add_argument("--config", type=Path, help="YAML recipe (see configs/); optional when resuming")
    parser.add_argument("--folds", type=int, default=5, help="number of folds k (default 5)")
    add_overrides_option(
        parser,
        "override settings, e.g. --set train.max_epochs=5 model.image_size=64 (repeatable)",
    )
    add_task_option(parser)
    parser.add_argument("--out", type=Path, required=True, help="cross-validation folder, e.g. runs/cv5")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in batch logs)")
    parser.set_defaults(handler=run)


def resolve_config(config: Path | None, overrides: list[str], out: Path) -> RunConfig:
    """--config (+ --set), else the config a started cross-validation in --out recorded."""
    if config is not None:
        return from_dict(RunConfig, apply_overrides(load_yaml(resolve_recipe(config)), overrides))
    saved = out / "cv.json"
    if not saved.is_file():
        raise ConfigError("pass --config configs/NAME.yaml (only resuming a cross-validation may omit it)")
    data = json.loads(saved.read_text(encoding="utf-8"))
    return from_dict(RunConfig, apply_overrides(data["config"], overrides))


def run(args: argparse.Namespace) -> int:
    config = resolve_config(args.config, with_task(args.overrides, args.task), args.out)
    from pneumocxr.training.cv import SUMMARY_METRICS, run_cv  # Lightning: only when this command runs

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).propagate = False  # Lightning prints through its own handler
    result = run_cv(config, args.out, folds=args.folds, progress=not args.no_progress)
    if not result.summary:
        return 0  # DDP rank other than 0
    for fold in result.folds:
        m = fold.metrics
        state = " (finished earlier)" if fold.reused else ""
        print(
            f"fold {fold.fold}: {fold.n_images} images  AUC {m['roc_auc']:.4f}  "
            f"accuracy {m['accuracy']:.4f}  sensitivity {m['sensitivity']:.4f}  "
            f"specificity {m['specificity']:.4f}  (threshold {fold.threshold:.3f}){state}"
        )
    print(f"mean ± std over {result.k} folds:")
    for name in SUMMARY_METRICS:
        s = result.summary[name]
        print(f"  {name:<12} {s['mean']:.4f} ± {s['std']:.4f}")
    pooled, pm = result.pooled, result.pooled["metrics"]
    print(
        f"pooled out-of-fold ({pooled['n_images']} images, threshold {pooled['threshold']['threshold']:.4f} "
        f"chosen on them): AUC {pm['roc_auc']:.4f}  sensitivity {pm['sensitivity']:.4f}  "
        f"specificity {pm['specificity']:.4f}"
    )
    print(f"out-of-fold predictions: {result.files['oof_csv']}")
    print(f"metrics:                 {result.files['metrics_csv']} and {result.files['metrics_md'].name}")
    print(f"ensemble of the folds:   pneumocxr ensemble create ENSEMBLE.pt {result.out_dir}")
    return 0
