"""Options several subcommands take, spelled once so their names, defaults and help agree."""

from __future__ import annotations

import argparse


def add_overrides_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--set KEY=VALUE …`` (repeatable) into ``args.overrides``; ``help_text``: the command's example."""
    parser.add_argument(
        "--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help=help_text
    )


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--batch-size`` of the commands that run a model over images."""
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """``--runtime`` and ``--threads`` of the commands that load one model for prediction."""
    parser.add_argument(
        "--runtime",
        choices=("auto", "torch", "onnx"),
        default="auto",
        help="auto (default): the file decides, a checkpoint runs on torch and an exported .onnx model "
        "on ONNX Runtime. onnx with a checkpoint is refused: export it first with `pneumocxr export`",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="ONNX Runtime intra-op threads (default: the cores this process may use); ONNX models only",
    )
