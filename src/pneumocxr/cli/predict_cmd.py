"""``pneumocxr predict --checkpoint C IMAGE_OR_FOLDER… [--manifest M.csv] --out predictions.csv [--tta]
[--mc-dropout N]``, also as every rank of ``torchrun --nproc_per_node N -m pneumocxr predict …`` or
``srun … pneumocxr predict …`` (``workflows.predict_shards``)."""

from __future__ import annotations

import argparse
import copy
import logging
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
        "temperature, TTA/MC-dropout settings and any file that could not be decoded. Under torchrun or "
        "srun every rank scores its share of the inputs on its own device and rank 0 writes one merged "
        "CSV (rows in input order) and JSON.",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="best.pt of a run (or its run folder), an ensemble, or an exported .onnx model",
    )
    parser.add_argument(
        "inputs", nargs="*", type=Path, metavar="IMAGE_OR_FOLDER", help="PNG, JPEG, DICOM or folders"
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        help="CSV with a 'path' column, one image per row (relative to the CSV's folder); predicted "
        "in row order, after any IMAGE_OR_FOLDER",
    )
    parser.add_argument("--out", type=Path, required=True, help="predictions CSV to write")
    add_device_options(parser)
    add_runtime_options(parser)
    add_tta_option(parser)
    add_mc_dropout_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pneumocxr.launch import detect_launch
    from pneumocxr.workflows import resolve_checkpoint
    from pneumocxr.workflows.predict_shards import predict_launched

    launch = detect_launch()
    if launch.rank != 0:  # one line per extra rank: rank 0 reports for the job, its files' failures too
        logging.getLogger().setLevel(logging.ERROR)
    checkpoint = resolve_checkpoint(args.checkpoint)
    job = predict_launched(
        checkpoint,
        args.inputs,
        args.out,
        load=lambda device: load_predictor(checkpoint, _on(args, device)),
        device=args.device,
        manifest=args.manifest,
        launch=launch,
    )
    made, report = job.merged, job.report
    if made is None:
        print(
            f"rank {report.rank}/{launch.world_size}: {report.images} images, {report.failures} failed, "
            f"{report.seconds:.2f} s on {report.device}{' (resumed)' if report.resumed else ''}"
        )
        return 0  # its failures are in rank 0's files and exit code
    if not launch.distributed:  # a job's rows are in the CSV; a plain run also lists them here
        for row in made.rows:
            spread = f"  spread {row['spread']:.3f}" if "spread" in row else ""
            print(f"{row['path']}: {row['prediction']} (p={row['calibrated_probability']:.3f}){spread}")
    for path, why in made.failures:
        print(f"pneumocxr: error: {path}: {why}", file=sys.stderr)
    if line := inference_line(made.inference):
        print(line)
    ranks = f" by {launch.world_size} ranks ({launch.launcher})" if launch.distributed else ""
    done_line = f"{len(made.rows)} predicted, {len(made.failures)} failed{ranks}"
    print(f"{done_line}: {made.csv_path} (and {made.json_path.name})")
    return 2 if made.failures else 0


def _on(args: argparse.Namespace, device: str) -> argparse.Namespace:
    """``args`` with this rank's device (cuda:LOCAL_RANK under a launcher)."""
    ranked = copy.copy(args)
    ranked.device = device
    return ranked
