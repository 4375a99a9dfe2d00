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
