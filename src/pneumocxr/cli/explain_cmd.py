"""``pneumocxr explain --checkpoint C IMAGE_OR_FOLDER… --out DIR [--method …] [--target …]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumocxr.errors import ConfigError

METHODS = ("gradcam", "gradcam++", "scorecam", "eigencam")  # mirrors explain.METHODS (checked by a test)
TARGETS = ("pneumonia", "normal", "predicted")  # of a binary checkpoint; a k-class one names its own


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="heat maps of where a model looks (Grad-CAM family)",
        description="Explain a checkpoint's predictions. For each image writes NAME.overlay.png (the map "
        "on the image in its original geometry, with the probability), NAME.cam.npy (the raw map at "
        "model-input resolution) and NAME.json (prediction, probabilities, threshold, method, layer).",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a .pt checkpoint written by training")
    parser.add_argument(
        "inputs", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER", help="PNG, JPEG, DICOM or folders"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="gradcam",
        help="gradcam (default), gradcam++, scorecam (gradient-free, one forward pass per channel: slow "
        "on CPU) or eigencam (gradient-free, class-agnostic)",
    )
    parser.add_argument(
        "--target",
        default="predicted",
        help="class to explain: the predicted one (default), or always one class: pneumonia / normal for a "
        "binary checkpoint, normal / bacterial / viral for a normal-bacterial-viral one (any case)",
    )
    parser.add_argument("--device", default="auto", help="auto (GPU if available), cpu, cuda or cuda:N")
    parser.set_defaults(handler=run)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"--device {name!r} is not known; use auto, cpu, cuda or cuda:N")
    return name


def run(args: argparse.Namespace) -> int:
    from pneumocxr.explain import explain_images  # torch + OpenCV: only when this command runs

    result = explain_images(
        args.checkpoint,
        args.inputs,
        args.out,
        method=args.method,
        target=args.target,
        device=_device(args.device),
    )
    for item in result.explanations:
        print(
            f"{item.source}: {item.prediction} (p={item.calibrated_probability:.3f}), "
            f"map of {item.target_class} -> {item.overlay}"
        )
    for failure in result.failures:
        print(f"pneumocxr: error: {failure.source}: {failure.reason}", file=sys.stderr)
    print(f"{len(result.explanations)} explained, {len(result.failures)} failed; outputs in {result.out_dir}")
    return 2 if result.failures else 0
