"""``pneumocxr data download``: fetch, verify and extract the public ChestXRay2017 release."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumocxr.data.download import DEFAULT_URL, download_dataset


def register(actions: argparse._SubParsersAction) -> None:
    """Add the ``download`` action."""
    parser = actions.add_parser(
        "download",
        help="download and extract the Kermany ChestXRay2017 release (resumable, verified)",
        description=(
            "Download ChestXRay2017.zip (about 1.2 GB) into DEST, verify it and extract it to "
            "DEST/chest_xray/{train,test[,val]}/{NORMAL,PNEUMONIA}. Interrupted? Re-run the same command: "
            "the download resumes and finished work is kept."
        ),
    )
    parser.add_argument("--dest", type=Path, default=Path("data"), help="target folder (default: data/)")
    parser.add_argument(
        "--url", default=DEFAULT_URL, help="archive address (default: the Mendeley Data release)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="re-extract even if the dataset folder is complete (delete the .zip to download it again)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in batch logs)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    root = download_dataset(args.dest, args.url, force=args.force, progress=not args.no_progress)
    # The path alone on stdout (usable as `$(pneumocxr data download)`); the hint goes to stderr.
    print(root)
    print(f"next: pneumocxr run --data {root}", file=sys.stderr)
    return 0
