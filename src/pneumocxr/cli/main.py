"""``pneumocxr`` entry point. Every subcommand module exposes ``register(subparsers)``,
which adds its parser and sets ``handler`` (a function ``args -> int``)."""

from __future__ import annotations

import argparse
import logging
import sys

from pneumocxr._version import __version__
from pneumocxr.cli import (
    audit_cmd,
    compare_cmd,
    cv_cmd,
    data_cmd,
    ensemble_cmd,
    evaluate_cmd,
    explain_cmd,
    export_cmd,
    model_card_cmd,
    models_cmd,
    pacs_cmd,
    predict_cmd,
    run_cmd,
    serve_cmd,
    shortcut_cmd,
    train_cmd,
    tune_cmd,
)
from pneumocxr.errors import PneumoCXRError

SUBCOMMAND_MODULES = (
    data_cmd,
    models_cmd,
    run_cmd,
    train_cmd,
    evaluate_cmd,
    compare_cmd,
    predict_cmd,
    export_cmd,
    explain_cmd,
    shortcut_cmd,
    tune_cmd,
    cv_cmd,
    ensemble_cmd,
    model_card_cmd,
    serve_cmd,
    audit_cmd,
    pacs_cmd,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pneumocxr",
        description="Train, evaluate, explain and serve chest X-ray pneumonia classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"pneumocxr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # Alembic logs its set-up at INFO each time serve, keys or audit opens a database
        logging.getLogger("alembic").setLevel(logging.WARNING)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except PneumoCXRError as exc:
        # A user's mistake: one line naming the problem and the fix, never a traceback.
        print(f"pneumocxr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pneumocxr: interrupted; finished work is kept, re-run to continue", file=sys.stderr)
        return 130
