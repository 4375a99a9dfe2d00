"""``pneumocxr data eda``: plots under OUT/plots, the numbers behind them under OUT/results."""

from __future__ import annotations

import argparse
from pathlib import Path

from pneumocxr.data.discovery import discover
from pneumocxr.data.eda import DEFAULT_IMAGE_SIZE, format_summary, run_eda


def register(actions: argparse._SubParsersAction) -> None:
    """Add the ``eda`` action."""
    parser = actions.add_parser(
        "eda",
        help="class distribution, image sizes, intensity histograms, mean images and a sample grid",
        description=(
            "Write the exploratory plots as PNG under OUT/plots/ and the data behind every plot "
            "(CSV/NPZ/JSON) under OUT/results/. Decoded images are cached under OUT/cache/ "
            "(or --cache-dir) and reused by training at the same image size."
        ),
    )
    parser.add_argument("--data", required=True, help="dataset folder, CSV manifest or MedMNIST .npz")
    parser.add_argument("--out", type=Path, default=Path("output"), help="output folder (default: output/)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=DEFAULT_IMAGE_SIZE,
        help=f"square size for intensity histograms and mean images (default {DEFAULT_IMAGE_SIZE})",
    )
    parser.add_argument(
        "--samples-per-class", type=int, default=4, help="images per class in the sample grid"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed choosing the sample grid's images")
    parser.add_argument("--cache-dir", type=Path, default=None, help="image cache (default: OUT/cache)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per CPU)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    summary = run_eda(
        discover(args.data),
        args.out,
        image_size=args.image_size,
        samples_per_class=args.samples_per_class,
        seed=args.seed,
        cache_dir=args.cache_dir,
        workers=args.workers,
    )
    print(format_summary(summary))
    return 0
