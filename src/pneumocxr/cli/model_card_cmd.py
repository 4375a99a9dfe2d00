"""``pneumocxr model-card --checkpoint C [--evaluation DIR …] [--stress DIR_OR_JSON] --out FILE.md``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model-card",
        help="write a Markdown model card for a checkpoint (Mitchell et al. 2019)",
        description="A model card from what the checkpoint records (architecture, recipe, patient-level "
        "split, validation metrics, operating point), plus any evaluation folders and stress-suite results "
        "given: intended use, limitations, ethical considerations and recommendations included.",
    )
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="best.pt of a run (or its run folder), or an ensemble"
    )
    parser.add_argument(
        "--evaluation",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a `pneumocxr evaluate` output folder (test, external, or --split validation), labelled by its "
        "split; repeat for several",
    )
    parser.add_argument(
        "--stress",
        type=Path,
        metavar="DIR_OR_JSON",
        help="stress-suite results: a folder holding stress.json, or the file (default: the card says "
        "not run)",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.md", help="the card to write")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pneumocxr.training.model_card import write_model_card  # imports torch: only when this runs

    path = write_model_card(
        args.checkpoint, args.out, evaluation_dir=args.evaluation or None, stress=args.stress
    )
    print(f"wrote {path}")
    return 0
