"""DICOM vs JPEG of the same film, through trained models: max and mean |Δp| (docs/RESULTS.md, issue 11).

    python bench/dicom_parity.py output/models/efficientnet_lite0.pt output/models/custom_cnn.pt \
        [--data ../shared/data/chest_xray] [--per-class 20]

Each film's decoded pixels are written as an 8-bit MONOCHROME2 DICOM (what a PACS export of the JPEG
holds) and both are scored by ``Predictor.predict``; the two must agree.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from pneumocxr.imaging import read_image
from pneumocxr.inference import load_predictor


def as_dicom(levels: np.ndarray) -> bytes:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, (ds.Rows, ds.Columns) = "CR", levels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = levels.tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


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
