"""``pneumocxr export --checkpoint C --format onnx --out model.onnx [--int8 --calibration DIR]``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint as an ONNX model (+ sidecar JSON) for ONNX Runtime",
        description="Writes OUT (an ONNX graph taking uint8 pixels (N, S, S), normalisation inside, "
        "returning logits) and OUT.json (preprocessing, class names, threshold and its rule, temperature, "
        "the checkpoint's sha256, exporter, opset, and a parity check against torch). Load OUT wherever a "
        "checkpoint loads (predict, evaluate, the API); it runs on ONNX Runtime. Ensemble files are "
        "refused: export each member's checkpoint.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="best.pt of a run (or its run folder)")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format (onnx)")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="static int8 quantisation (ONNX Runtime, QDQ, per-channel weights), calibrated on "
        "--calibration images; its probability change is measured and written into the sidecar",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        nargs="+",
        default=[],
        metavar="IMAGE_OR_FOLDER",
        help="representative films for --int8 (and for the parity check); default: synthetic check images",
    )
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=64,
        metavar="N",
        help="use at most N calibration images, spread over the sorted list (default 64)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pneumocxr.workflows import resolve_checkpoint
    from pneumocxr.workflows.onnx_export import export_onnx

    made = export_onnx(
        resolve_checkpoint(args.checkpoint),
        args.out,
        int8=args.int8,
        calibration=args.calibration,
        calibration_limit=args.calibration_images,
    )
    check = made.check
    kind = f"int8 ({made.quantization['method']})" if made.quantization else "fp32"
    print(f"wrote {made.onnx_path} ({kind}, sha256 {made.onnx_sha256[:12]}…) and {made.sidecar_path.name}")
    agree, n = check["decisions_agree"], check["images"]
    worst = check["max_abs_probability_difference"]
    images = f"{n} {check['images_were']}"
    print(f"parity with torch on {images}: max |Δp| {worst:.2e}, decisions agree {agree}/{n}")
    return 0
