"""DICOM chest radiographs via pydicom: the pixels an 8-bit export would hold, plus the header.

Parsing, refusals (colour, multi-frame, absurd sizes, missing decoders) and pixel decoding live
here; the intensity path (modality LUT → VOI → 8 bits → MONOCHROME1 → padding) is documented and
implemented in ``dicom_pixels``, and the header record in ``dicom_header``. A ``pydicom.Dataset``
handed over by the PACS bridge takes the same path as a file, and is never modified.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pneumocxr.errors import UnsupportedImageError
from pneumocxr.imaging.dicom_header import DicomHeader
from pneumocxr.imaging.dicom_pixels import display_pixels
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


def read_dicom(src: Source) -> tuple[np.ndarray, DicomHeader]:
    """Decode a single-frame grayscale DICOM file to float32 H×W levels k/255, and its header."""
    return decode_dataset(_parse(src, stop_before_pixels=False), src.name)


def read_dataset(ds: Dataset) -> tuple[np.ndarray, DicomHeader]:
    """The same for a data set already in memory (named in errors by its SOP Instance UID)."""
    uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    return decode_dataset(ds, f"<DICOM data set {uid}>" if uid else "<DICOM data set>")


def decode_dataset(ds: Dataset, name: str) -> tuple[np.ndarray, DicomHeader]:
    """Refuse what is not a grayscale radiograph, decode the pixels, then the intensity path."""
    photometric = _check_image(name, ds)
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise _fail(name, "DICOM file has no pixel data (a report or presentation state?); pass an image")
    ds, transfer_syntax = _with_transfer_syntax(ds)
    _check_decoder(name, transfer_syntax)
    try:
        stored = ds.pixel_array  # H×W; pydicom masks/sign-extends to BitsStored
        pixels = display_pixels(ds, stored, photometric, name)
    except UnsupportedImageError:
        raise
    except (*_PARSE_ERRORS, RuntimeError, NotImplementedError) as exc:
        raise _fail(
            name,
            f"DICOM pixel data cannot be decoded ({brief_error(exc)}; transfer syntax "
            f"{transfer_syntax.name}); the file may be truncated or corrupt",
        ) from None
    return pixels, DicomHeader.from_dataset(ds)


def dicom_info(src: Source) -> ImageInfo:
    """Header-only facts, refusing what ``read_dicom`` would refuse before touching pixels."""
    ds = _parse(src, stop_before_pixels=True)
    photometric = _check_image(src.name, ds)
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 0)
    return ImageInfo(width=int(ds.Columns), height=int(ds.Rows), format="DICOM", mode=photometric, bits=bits)


# ----------------------------------------------------------------------------- helpers


def _fail(name: str, reason: str) -> UnsupportedImageError:
    return UnsupportedImageError(name, reason)


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


def _check_image(name: str, ds: Dataset) -> str:
    """Refuse, before decoding, what is not a single-frame grayscale image of a sane size."""
    if "Rows" not in ds or "Columns" not in ds:
        raise _fail(name, "DICOM file has no image attributes (Rows/Columns missing: a report, or corrupt?)")
    rows, columns = int(ds.Rows), int(ds.Columns)
    if rows < 1 or columns < 1:
        raise _fail(name, f"DICOM declares an empty image ({columns}×{rows})")
    if rows * columns > MAX_PIXELS:
        raise _fail(
            name,
            f"DICOM declares {columns}×{rows} = {rows * columns / 1e6:.0f} megapixels, over the "
            f"{MAX_PIXELS / 1e6:.0f} MP limit; refusing a corrupt header or decompression bomb",
        )
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        reason = f"multi-frame DICOM ({frames} frames) is not supported; export the single radiograph"
        raise _fail(name, reason)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if photometric not in _GRAYSCALE or samples != 1:
        shown = photometric or "missing"
        raise _fail(
            name,
            f"colour DICOM (PhotometricInterpretation={shown}) is not a chest radiograph this tool supports",
        )
    return photometric


def _with_transfer_syntax(ds: Dataset) -> tuple[Dataset, UID]:
    """The data set's transfer syntax, inferred from how it was parsed when file meta lacks it.

    pydicom needs it in ``file_meta`` to pick a pixel decoder; it is set on a shallow copy
    (``file_meta`` is an attribute, not an element, so the caller's data set stays as it was).
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax:
        return ds, UID(syntax)
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit:
        syntax = ImplicitVRLittleEndian
    elif little is False:
        syntax = ExplicitVRBigEndian
    else:
        syntax = ExplicitVRLittleEndian
    new_meta = copy.deepcopy(meta) if meta is not None else FileMetaDataset()  # small; never shared
    new_meta.TransferSyntaxUID = syntax
    ds = copy.copy(ds)
    ds.file_meta = new_meta
    return ds, UID(syntax)


def _check_decoder(name: str, syntax: UID) -> None:
    """A compressed transfer syntax needs a plugin; say which package provides it."""
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise _fail(name, f"DICOM transfer syntax {syntax} ({syntax.name}) is not supported") from None
    if syntax.is_compressed and not decoder.is_available:
        reason = f"compressed DICOM ({syntax.name}) needs a decoder plugin that is not installed"
        raise _fail(name, f"{reason}; run: {_INSTALL_HINT}")
