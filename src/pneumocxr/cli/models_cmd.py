"""``pneumocxr models list``: the registered models, their size and input."""

from __future__ import annotations

import argparse

_HEADERS = ("name", "total params", "trainable", "input", "channels", "pretrained source")


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="list the model architectures")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="names, parameter counts, input size and weights source")
    listing.set_defaults(handler=_list)


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def _list(args: argparse.Namespace) -> int:
    from pneumocxr.models import summarize_models  # imports torch: only when this command runs

    rows = [
        (
            s.name,
            _millions(s.total_params),
            _millions(s.trainable_params),
            f"{s.image_size}x{s.image_size}",
            str(s.channels),
            s.pretrained_source,
        )
        for s in summarize_models()
    ]
    widths = [max(len(r[i]) for r in [_HEADERS, *rows]) for i in range(len(_HEADERS))]
    for row in [_HEADERS, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
