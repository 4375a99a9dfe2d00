"""``pneumocxr data eda``: plots under OUT/plots, the numbers behind them under OUT/results."""

from __future__ import annotations

import argparse
from pathlib import Path

from pneumocxr.data.discovery import discover
from pneumocxr.data.eda import DEFAULT_IMAGE_SIZE, EdaSummary, run_eda


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


def format_summary(summary: EdaSummary) -> str:
    """A few lines: what was analysed, what was written and where (also used by ``pneumocxr run``)."""
    lines = [f"EDA of {summary.n_images:,} images from {summary.root} ({summary.seconds:.1f} s)"]
    for name, stats in summary.intensity.items():
        mean, std = stats["mean"], stats["std"]
        lines.append(f"  {name}: {stats['images']:,} images, mean intensity {mean:.3f} (std {std:.3f})")
    if summary.sizes:
        sizes = summary.sizes
        lines.append(
            f"  sizes: width {sizes['width_min']:.0f}–{sizes['width_max']:.0f}, height "
            f"{sizes['height_min']:.0f}–{sizes['height_max']:.0f} px; "
            f"{sizes['fraction_224x224']:.0%} are 224×224"
        )
    if summary.unreadable:
        bad = len(summary.unreadable)
        lines.append(f"  {bad} image(s) could not be decoded and were left out (see eda_summary.json)")
    folders = sorted({str(Path(p).parent) for p in summary.plots + summary.results})
    lines.append(
        f"  wrote {len(summary.plots)} plots and {len(summary.results)} data files to {', '.join(folders)}"
    )
    return "\n".join(lines)
