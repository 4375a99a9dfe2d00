"""Generate small, valid DICOM files for tests (pure pydicom; compression via its plugins).

Reusable from other test folders (e.g. DICOM inference): put this folder on ``sys.path`` (see
``tests/imaging/conftest.py``) and ``import dicom_factory``. Nothing here reads real patient data.

Typical use::

    path = write_dicom(tmp_path / "a.dcm", ramp(64, 48, 4095), bits_stored=12)
    path = write_dicom(tmp_path / "b.dcm", ramp(64, 48, 255), transfer_syntax=RLELossless)
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def ramp(rows: int, columns: int, max_value: int, dtype: type = np.uint16) -> np.ndarray:
    """A left-to-right ramp 0..max_value with a bright square top-left (orientation and contrast testable)."""
    row = np.linspace(0, max_value, columns)
    pixels = np.tile(row, (rows, 1))
    pixels[: rows // 4, : columns // 4] = max_value
    return np.round(pixels).astype(dtype)


def make_dataset(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool = False,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    voi_lut: tuple[int, np.ndarray] | None = None,
    modality: str = "DX",
) -> Dataset:
    """An uncompressed (Explicit VR Little Endian) data set holding ``pixels``.

    ``pixels``: H×W (grayscale), F×H×W (multi-frame) or H×W×3 uint8 with ``photometric="RGB"``.
    ``rescale`` = (slope, intercept); ``window`` = (center, width); ``voi_lut`` = (first stored
    value mapped, LUT array of uint16) written as a VOI LUT Sequence.
    """
    pixels = np.ascontiguousarray(pixels)
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2")
    allocated = pixels.dtype.itemsize * 8
    ds = Dataset()
    ds.file_meta = _file_meta(ExplicitVRLittleEndian, colour)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    ds.PatientID = "TEST-0001"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = pixels.shape[1:3] if pixels.ndim == 3 and not colour else pixels.shape[:2]
    if pixels.ndim == 3 and not colour:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored or allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = (f"{rescale[0]:g}", f"{rescale[1]:g}")
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = (f"{window[0]:g}", f"{window[1]:g}")
    if voi_lut is not None:
        ds.VOILUTSequence = [_voi_item(*voi_lut)]
    ds.PixelData = pixels.tobytes()
    return ds


def compress(ds: Dataset, syntax: UID) -> Dataset:
    """Re-encode ``ds`` in place: RLE, JPEG 2000, JPEG-LS via pydicom; 8-bit JPEG Baseline via Pillow."""
    if syntax == JPEGBaseline8Bit:
        return _compress_jpeg_baseline(ds)
    ds.compress(syntax)
    return ds


def can_encode(syntax: UID) -> bool:
    """Whether :func:`compress` can produce ``syntax`` with the plugins installed here."""
    if syntax == JPEGBaseline8Bit:
        return True
    try:
        return bool(get_encoder(syntax).is_available)
    except (NotImplementedError, ValueError):
        return False


def dicom_bytes(
    pixels: np.ndarray,
    *,
    transfer_syntax: UID = ExplicitVRLittleEndian,
    preamble: bool = True,
    file_meta: bool = True,
    edit: Callable[[Dataset], None] | None = None,
    **kwargs: object,
) -> bytes:
    """The file content of :func:`make_dataset` (+ optional compression) as bytes.

    ``preamble=False`` omits the 128-byte preamble and "DICM" (still readable with force);
    ``file_meta=False`` also drops group 0002, as some old archives do. ``edit(ds)`` may change
    the data set (e.g. declare absurd Rows) just before it is written.
    """
    ds = make_dataset(pixels, **kwargs)  # type: ignore[arg-type]
    if edit is not None:
        edit(ds)
    if transfer_syntax not in UNCOMPRESSED:
        compress(ds, transfer_syntax)
    elif transfer_syntax != ds.file_meta.TransferSyntaxUID:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    buffer = io.BytesIO()
    if preamble:
        ds.save_as(buffer, enforce_file_format=True)
    elif file_meta:
        ds.preamble = None
        ds.save_as(buffer, enforce_file_format=False)
    else:
        implicit = ds.file_meta.TransferSyntaxUID.is_implicit_VR
        del ds.file_meta
        ds.preamble = None
        ds.save_as(buffer, implicit_vr=implicit, little_endian=True)
    return buffer.getvalue()


def write_dicom(path: str | Path, pixels: np.ndarray, **kwargs: object) -> Path:
    """Write :func:`dicom_bytes` to ``path`` (any extension: readers must sniff the content)."""
    path = Path(path)
    path.write_bytes(dicom_bytes(pixels, **kwargs))  # type: ignore[arg-type]
    return path


# ----------------------------------------------------------------------------- helpers


def _file_meta(syntax: UID, colour: bool) -> FileMetaDataset:
    meta = FileMetaDataset()
    sop_class = SecondaryCaptureImageStorage if colour else DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    return meta


def _voi_item(first_mapped: int, lut: np.ndarray) -> Dataset:
    item = Dataset()
    lut = np.asarray(lut, dtype=np.uint16)
    item.LUTDescriptor = [len(lut), first_mapped, 16]
    item.add_new(0x00283006, "OW", lut.tobytes())  # LUTData; VR "US or OW", OW is unambiguous
    return item


def _compress_jpeg_baseline(ds: Dataset) -> Dataset:
    """8-bit lossy JPEG via Pillow, encapsulated: exercises the pylibjpeg/Pillow decoder path."""
    pixels = ds.pixel_array
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError("JPEG Baseline test files need a single 8-bit H×W frame")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    return ds


__all__ = [
    "JPEG2000Lossless",
    "JPEGBaseline8Bit",
    "JPEGLSLossless",
    "RLELossless",
    "can_encode",
    "compress",
    "dicom_bytes",
    "make_dataset",
    "ramp",
    "write_dicom",
]
