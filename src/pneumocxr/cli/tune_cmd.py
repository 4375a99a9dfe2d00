"""``pneumocxr tune --config C --space S --out DIR [--storage URL] [--n-trials N] [--study-name NAME]
[--set key=value …]``: an Optuna hyperparameter search, resumable, shareable between workers."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pneumocxr.cli.common_args import add_overrides_option
from pneumocxr.config import load_yaml, resolve_recipe


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="hyperparameter search (Optuna grid or TPE) on the patient-level validation split",
        description="Search hyperparameters with Optuna. Each trial trains into OUT/trials/<number>/ and is "
        "scored by validation AUC on the patient-level split carved from train (never test). Kill it and "
        "run the same command again to continue; give several workers the same --storage URL "
        "(postgresql://…) and --study-name to share one search. Precedence: --config < the search's "
        "'fixed' section < --set; the searched parameters override all three.",
    )
    parser.add_argument(
        "--config", required=True, help="base recipe: a YAML path or a shipped name (cpu_fast)"
    )
    parser.add_argument(
        "--space", required=True, help="search YAML: a path or a shipped name (search_grid, search_tpe)"
    )
    parser.add_argument("--out", type=Path, required=True, help="search folder: trials, tables, plots")
    parser.add_argument(
        "--storage",
        help="Optuna storage URL, e.g. postgresql://user:pw@host/db (default: OUT/study.db)",
    )
    parser.add_argument(
        "--n-trials",
        type=int,
        help="finished trials the study should reach, all workers together (default: the search YAML's)",
    )
    parser.add_argument("--study-name", default="pneumocxr-search", help="study name inside the storage")
    add_overrides_option(
        parser,
        "override base settings, e.g. --set data.root=PATH train.max_epochs=2 (repeatable)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pneumocxr.training.tune import tune  # Lightning and Optuna are slow to import: only when tuning
    from pneumocxr.training.tune_space import compose_base, load_search_space

    space = load_search_space(resolve_recipe(args.space))
    config = compose_base(load_yaml(resolve_recipe(args.config)), space, args.overrides)
    for name in ("lightning.pytorch", "lightning.fabric"):
        # One line per trial from Optuna is the progress report; Lightning's per-run banners are noise.
        logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger(name).propagate = False
    logging.getLogger("pneumocxr.training.progress").setLevel(logging.WARNING)  # per-epoch lines too
    result = tune(
        config, space, args.out, storage=args.storage, study_name=args.study_name, n_trials=args.n_trials
    )
    counts = {state: n for state, n in result.counts.items() if n}
    finished = result.counts.get("COMPLETE", 0) + result.counts.get("PRUNED", 0)
    print(f"study {result.study_name!r} in {result.storage} ({space.sampler})")
    print(
        f"trials: {', '.join(f'{n} {s.lower()}' for s, n in counts.items()) or 'none'}; "
        f"{finished} of {result.target} finished, {result.ran_here} by this process"
    )
    if finished < result.target:
        running = result.counts.get("RUNNING", 0)
        elsewhere = f" ({running} running in other workers)" if running else ""
        print(f"{result.target - finished} trials to go{elsewhere}: re-run this command to continue")
    if result.best_number is not None:
        params = ", ".join(f"{k}={v}" for k, v in sorted(result.best_params.items()))
        print(f"best trial #{result.best_number}: validation AUC {result.best_value:.4f} with {params}")
        print(f"best config:  {result.files['best_config']}  (pneumocxr train --config it)")
    print(f"trials:       {result.files['trials_csv']}  ({result.files['trials_md'].name} beside it)")
    print(f"plots:        {result.files['history_png']}  {result.files['importance_png']}")
    return 0
