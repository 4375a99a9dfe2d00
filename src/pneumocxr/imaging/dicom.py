"""DICOM chest radiographs via pydicom: display-ready grayscale, the way a reading workstation shows it.

Order matters and follows the standard's pixel pipeline: stored values (BitsStored honoured by
pydicom) → Modality LUT (RescaleSlope/Intercept or a Modality LUT Sequence) → VOI LUT (a VOI
LUT Sequence or WindowCenter/Width) → min–max to [0, 1] → MONOCHROME1 inverted so that, as in
MONOCHROME2 and in the JPEG training data, bone is bright.
"""

from __future__ import annotations

import logging

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pneumocxr.imaging.source import MAX_PIXELS, ImageInfo, Source, brief_error, has_dicom_preamble

log = logging.getLogger(__name__)

_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_INSTALL_HINT = "pip install 'pneumocxr[dicom]'"
# pydicom raises many exception types for malformed files and undecodable pixel data; each is
# wrapped into UnsupportedImageError naming the file. MemoryError and real bugs outside these
# calls still propagate.
_PARSE_ERRORS = (
    InvalidDicomError,
    OSError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
)


def read_dicom(src: Source) -> np.ndarray:
    """Decode a single-frame grayscale DICOM to float32 H×W in [0, 1] (see module docstring)."""
    ds = _parse(src, stop_before_pixels=False)
    photometric = _check_image(src, ds)
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise src.fail("DICOM file has no pixel data (a report or presentation state?); pass an image")
    transfer_syntax = _transfer_syntax(ds)
    _check_decoder(src, transfer_syntax)
    try:
        stored = ds.pixel_array  # H×W; pydicom masks/sign-extends to BitsStored
        values = apply_modality_lut(stored, ds)
        values = apply_voi_lut(values, ds)
    except (*_PARSE_ERRORS, RuntimeError, NotImplementedError) as exc:
        raise src.fail(
            f"DICOM pixel data cannot be decoded ({brief_error(exc)}; transfer syntax "
            f"{transfer_syntax.name}); the file may be truncated or corrupt"
        ) from None
    pixels = _min_max(src, np.asarray(values, dtype=np.float64))
    if photometric == "MONOCHROME1":
        log.warning("%s is MONOCHROME1 (low values are white); inverting it to MONOCHROME2", src.name)
        pixels = 1.0 - pixels
    return pixels.astype(np.float32)


def dicom_info(src: Source) -> ImageInfo:
    """Header-only facts, refusing what ``read_dicom`` would refuse before touching pixels."""
    ds = _parse(src, stop_before_pixels=True)
    photometric = _check_image(src, ds)
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 0)
    return ImageInfo(width=int(ds.Columns), height=int(ds.Rows), format="DICOM", mode=photometric, bits=bits)


# ----------------------------------------------------------------------------- helpers


def _parse(src: Source, *, stop_before_pixels: bool) -> Dataset:
    """Read the data set; a preamble-less file is force-parsed and must then look like an image."""
    forced = not has_dicom_preamble(src.header)
    try:
        with src.open() as fh:
            ds = pydicom.dcmread(fh, force=forced, stop_before_pixels=stop_before_pixels)
    except _PARSE_ERRORS as exc:
        raise src.fail(f"not a readable DICOM file ({brief_error(exc)})") from None
    if forced and not ("Rows" in ds and "Columns" in ds):
        raise src.fail("not a JPEG, PNG or DICOM image (no DICOM image attributes found)")
    return ds


def _check_image(src: Source, ds: Dataset) -> str:
    """Refuse, before decoding, what is not a single-frame grayscale image of a sane size."""
    if "Rows" not in ds or "Columns" not in ds:
        raise src.fail("DICOM file has no image attributes (Rows/Columns missing: a report, or corrupt?)")
    rows, columns = int(ds.Rows), int(ds.Columns)
    if rows < 1 or columns < 1:
        raise src.fail(f"DICOM declares an empty image ({columns}×{rows})")
    if rows * columns > MAX_PIXELS:
        raise src.fail(
            f"DICOM declares {columns}×{rows} = {rows * columns / 1e6:.0f} megapixels, over the "
            f"{MAX_PIXELS / 1e6:.0f} MP limit; refusing a corrupt header or decompression bomb"
        )
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise src.fail(f"multi-frame DICOM ({frames} frames) is not supported; export the single radiograph")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if photometric not in _GRAYSCALE or samples != 1:
        shown = photometric or "missing"
        raise src.fail(
            f"colour DICOM (PhotometricInterpretation={shown}) is not a chest radiograph this tool supports"
        )
    return photometric


def _transfer_syntax(ds: Dataset) -> UID:
    """The data set's transfer syntax, inferred from how it was parsed when file meta lacks it."""
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    syntax = meta.get("TransferSyntaxUID")
    if syntax:
        return UID(syntax)
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit:
        syntax = ImplicitVRLittleEndian
    elif little is False:
        syntax = ExplicitVRBigEndian
    else:
        syntax = ExplicitVRLittleEndian
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta  # pydicom needs it to pick a pixel decoder
    return UID(syntax)


def _check_decoder(src: Source, syntax: UID) -> None:
    """A compressed transfer syntax needs a plugin; say which package provides it."""
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise src.fail(f"DICOM transfer syntax {syntax} ({syntax.name}) is not supported") from None
    if syntax.is_compressed and not decoder.is_available:
        raise src.fail(
            f"compressed DICOM ({syntax.name}) needs a decoder plugin that is not installed; "
            f"run: {_INSTALL_HINT}"
        )


def _min_max(src: Source, values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant image becomes all zeros (with a warning, since it carries nothing)."""
    if not np.all(np.isfinite(values)):
        raise src.fail("DICOM pixel values contain NaN or infinity after the modality/VOI LUT")
    low, high = float(values.min()), float(values.max())
    if high <= low:
        log.warning("%s: every pixel has the same value (%g); returning a black image", src.name, low)
        return np.zeros_like(values)
    return (values - low) / (high - low)
