"""``pneumocxr data check``: counts, unreadable files, duplicates and shared patients."""

from __future__ import annotations

import argparse
import json

from pneumocxr.data.check import check_dataset, format_report
from pneumocxr.data.discovery import discover
from pneumocxr.data.duplicates import DEFAULT_NEAR_THRESHOLD

EXIT_UNREADABLE = 1  # some files cannot be decoded (and --allow-bad was not given)


def register(actions: argparse._SubParsersAction) -> None:
    """Add the ``check`` action."""
    parser = actions.add_parser(
        "check",
        help="count images, find unreadable files, duplicates and patients shared between splits",
        description=(
            "Decode every image once (at reduced scale) and report counts per split and class, "
            "unreadable files, byte-identical and near-identical images (within and across splits) "
            "and patient ids found in more than one split. Exit code 1 when a file cannot be decoded, "
            "unless --allow-bad."
        ),
    )
    parser.add_argument("--data", required=True, help="dataset folder, CSV manifest or MedMNIST .npz")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON on stdout")
    parser.add_argument(
        "--allow-bad", action="store_true", help="exit 0 even when some files cannot be decoded"
    )
    parser.add_argument(
        "--near-threshold",
        type=int,
        default=DEFAULT_NEAR_THRESHOLD,
        metavar="N",
        help=f"max Hamming distance between 256-bit perceptual hashes for a near duplicate "
        f"(default {DEFAULT_NEAR_THRESHOLD})",
    )
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per CPU)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    report = check_dataset(discover(args.data), near_threshold=args.near_threshold, workers=args.workers)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    if report.unreadable and not args.allow_bad:
        return EXIT_UNREADABLE
    return 0
