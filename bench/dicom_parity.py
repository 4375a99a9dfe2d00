"""DICOM vs JPEG of the same film, through trained models: max and mean |Δp| (docs/RESULTS.md, issue 11).

    python bench/dicom_parity.py output/models/efficientnet_lite0.pt output/models/custom_cnn.pt \
        [--data ../shared/data/chest_xray] [--per-class 20]

Each film's decoded pixels are written as an 8-bit MONOCHROME2 DICOM (what a PACS export of the JPEG
holds) and both are scored by ``Predictor.predict``; the two must agree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "imaging"))  # dicom_factory: the tests' DICOM writer

from dicom_factory import dicom_bytes  # noqa: E402

from pneumocxr.imaging import read_image  # noqa: E402
from pneumocxr.inference import load_predictor  # noqa: E402


def as_dicom(levels: np.ndarray) -> bytes:
    """An 8-bit MONOCHROME2 CR file of ``levels``, as a PACS export of the JPEG holds it."""
    return dicom_bytes(levels, modality="CR")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/chest_xray"))
    parser.add_argument("--per-class", type=int, default=20)
    args = parser.parse_args()
    films = [
        f
        for label in ("NORMAL", "PNEUMONIA")
        for f in sorted((args.data / "train" / label).glob("*.jpeg"))[: args.per_class]
    ]
    for checkpoint in args.checkpoints:
        predictor = load_predictor(checkpoint, device="cpu")
        gaps = []
        for film in films:
            levels = np.rint(read_image(film) * 255).astype(np.uint8)
            jpeg = predictor.predict(film).positive_probability
            dicom = predictor.predict(as_dicom(levels)).positive_probability
            gaps.append(abs(jpeg - dicom))
        print(f"{checkpoint}: {len(films)} films, max |dp| {max(gaps):.3g}, mean |dp| {np.mean(gaps):.3g}")


if __name__ == "__main__":
    main()
