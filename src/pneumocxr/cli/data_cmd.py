"""``pneumocxr data {download,check,eda}``: one module per action."""

from __future__ import annotations

import argparse

from pneumocxr.cli import data_check, data_download, data_eda


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="download, check and explore a dataset")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    for module in (data_download, data_check, data_eda):
        module.register(actions)
