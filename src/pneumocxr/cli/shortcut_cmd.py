"""``pneumocxr shortcut --checkpoint C (--data ROOT [--split validation] | IMAGE_OR_FOLDER…) --out DIR``:
is the model reading the scanner (border, burned-in letters) instead of the lungs?"""

from __future__ import annotations

import argparse
from pathlib import Path

from pneumocxr.errors import ConfigError

FILLS = ("inpaint", "median", "reflect")  # mirrors explain.shortcut.BORDER_FILLS
TEXT_MODES = ("detect", "corners")  # mirrors explain.shortcut.TEXT_MODES
METHODS = ("gradcam", "gradcam++", "scorecam", "eigencam")  # mirrors explain.METHODS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "shortcut",
        help="shortcut check: does the prediction move when only the film's border or letters change?",
        description="Occlude the film's outer border band, then only its burned-in marks (letters, side "
        "markers), and report how far the calibrated P(PNEUMONIA) moves (mean and 95th percentile of |Δp|, "
        "decisions flipped at the stored threshold) per class, and the share of the Grad-CAM map inside a "
        "crude lung box before and after. Writes shortcut.json, shortcut.csv, shortcut.md and "
        "shortcut_examples.png into --out. A flag, not a proof.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="best.pt of a run (or its run folder)")
    parser.add_argument(
        "inputs", nargs="*", type=Path, metavar="IMAGE_OR_FOLDER",
        help="image files or folders (label from a NORMAL/PNEUMONIA parent folder); or use --data",
    )  # fmt: skip
    parser.add_argument("--data", help="dataset folder, CSV manifest or .npz (instead of image files)")
    parser.add_argument(
        "--split",
        default="validation",
        help="with --data: 'validation' (default) = the patient-level validation split the checkpoint "
        "records, rebuilt exactly (optimistic: it chose the model); or a split folder (train, val, test)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--images", type=int, default=200, help="images to sample, half per class (default 200)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--band", type=float, default=0.08, help="border band, fraction of each side (0.08)")
    parser.add_argument(
        "--fill",
        choices=FILLS,
        default="inpaint",
        help="border fill the verdict uses (all three are measured)",
    )
    parser.add_argument(
        "--text", choices=TEXT_MODES, default="detect",
        help="detect: occlude only detected bright marks; corners: the four corner squares",
    )  # fmt: skip
    parser.add_argument("--method", choices=METHODS, default="gradcam", help="map for the lung-energy share")
    parser.add_argument("--examples", type=int, default=4, help="example rows in the figure (0: none)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="images per forward/backward pass (default 16)"
    )
    parser.set_defaults(handler=run)


def _records(args: argparse.Namespace, checkpoint: Path) -> list:
    if bool(args.inputs) == bool(args.data):
        raise ConfigError("give either image files/folders or --data ROOT [--split …], not both or neither")
    if args.inputs:
        from pneumocxr.explain.shortcut_check import file_records

        return file_records(args.inputs)
    from pneumocxr.data.discovery import discover
    from pneumocxr.errors import DatasetError
    from pneumocxr.workflows.validation import VALIDATION, recorded_validation

    if args.split == VALIDATION:
        return list(recorded_validation(checkpoint, args.data).records)
    dataset = discover(args.data)
    records = dataset.in_split(args.split)
    if not records:
        raise DatasetError(
            f"{args.data}: no {args.split!r} split (splits present: {', '.join(dataset.splits())})"
        )
    return records


def run(args: argparse.Namespace) -> int:
    from pneumocxr.explain.shortcut_check import ShortcutSettings, run_shortcut_check
    from pneumocxr.inference import resolve_device
    from pneumocxr.workflows import resolve_checkpoint

    checkpoint = resolve_checkpoint(args.checkpoint)
    settings = ShortcutSettings(band=args.band, fill=args.fill, text=args.text, method=args.method)
    result = run_shortcut_check(
        checkpoint,
        _records(args, checkpoint),
        args.out,
        settings=settings,
        max_images=args.images,
        seed=args.seed,
        device=resolve_device(args.device),
        batch_size=args.batch_size,
        examples=args.examples,
    )
    print((result.files["md"]).read_text().rstrip())
    print(f"outputs in {args.out}: " + ", ".join(p.name for p in result.files.values()))
    return 0
