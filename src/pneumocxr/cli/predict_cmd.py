"""``pneumocxr predict --checkpoint C IMAGE_OR_FOLDER… --out predictions.csv [--tta] [--mc-dropout N]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumocxr.cli.common_args import add_device_options, add_runtime_options
from pneumocxr.cli.evaluate_cmd import add_mc_dropout_options, add_tta_option, inference_line, load_predictor


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="P(pneumonia) for image files or folders: one CSV row per image",
        description="Predict images (PNG, JPEG, DICOM, or folders of them) with a checkpoint or ensemble "
        "file. Writes OUT (path, prediction, calibrated_probability, probability, logit, threshold, p_CLASS "
        "(calibrated, one column per class), and "
        "spread for an ensemble or MC-dropout) and OUT with .json: the checkpoint's sha256, threshold, "
        "temperature, TTA/MC-dropout settings and any file that could not be decoded.",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="best.pt of a run (or its run folder), an ensemble, or an exported .onnx model",
    )
    parser.add_argument(
        "inputs", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER", help="PNG, JPEG, DICOM or folders"
    )
    parser.add_argument("--out", type=Path, required=True, help="predictions CSV to write")
    add_device_options(parser)
    add_runtime_options(parser)
    add_tta_option(parser)
    add_mc_dropout_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pneumocxr.workflows import resolve_checkpoint
    from pneumocxr.workflows.predict_files import predict_images

    checkpoint = resolve_checkpoint(args.checkpoint)
    made = predict_images(checkpoint, args.inputs, args.out, predictor=load_predictor(checkpoint, args))
    for row in made.rows:
        spread = f"  spread {row['spread']:.3f}" if "spread" in row else ""
        print(f"{row['path']}: {row['prediction']} (p={row['calibrated_probability']:.3f}){spread}")
    for path, why in made.failures:
        print(f"pneumocxr: error: {path}: {why}", file=sys.stderr)
    if line := inference_line(made.inference):
        print(line)
    done = f"{len(made.rows)} predicted, {len(made.failures)} failed"
    print(f"{done}: {made.csv_path} (and {made.json_path.name})")
    return 2 if made.failures else 0
