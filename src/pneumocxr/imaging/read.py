"""``read_image``, ``read_image_with_header`` and ``image_info``: dispatch on the magic bytes to
the JPEG/PNG or DICOM reader.

A source is a path, the file's bytes, or a ``pydicom.Dataset`` (what the PACS bridge holds). A
data set is recognised without importing pydicom: if pydicom was never imported, nothing can be
a Dataset, so ``import pneumocxr.imaging`` stays free of it.

Every way an input can be wrong (missing, empty, truncated, not an image, another format,
unsupported mode, absurd size) ends as ``UnsupportedImageError(source, reason)``, so the CLI
prints one line naming the file and a long batch job can log and count bad files.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import TYPE_CHECKING, Union

import numpy as np
from PIL import Image

from pneumocxr.imaging.raster import raster_info, read_raster
from pneumocxr.imaging.resize import reduce_for_model
from pneumocxr.imaging.source import ImageInfo, Source, detect_format, load_source

if TYPE_CHECKING:
    from pydicom import Dataset

    from pneumocxr.imaging.dicom_header import DicomHeader

ImageSource = Union[str, os.PathLike, bytes, "Dataset"]
_SUPPORTED = "JPEG, PNG or DICOM"


def read_image(source: ImageSource, *, min_size: int | None = None) -> np.ndarray:
    """Decode a JPEG, PNG or DICOM (path, bytes or ``pydicom.Dataset``) to float32 H×W in [0, 1].

    JPEG/PNG give value / 255 (value / 65535 for 16-bit PNG); DICOM gives the 8-bit levels an
    export would write, / 255, so a DICOM of a JPEG's pixels reads identically (see
    ``imaging.dicom_pixels``).

    ``min_size``: the caller will resize to about min_size×min_size, so the full-resolution pixels
    are first shrunk by a power of two with block means while both sides stay >= min_size
    (``resize.reduce_for_model``) — the same step for every format, so a DICOM or PNG of a JPEG's
    pixels reaches the model exactly as the JPEG does. None: full resolution.
    """
    return read_image_with_header(source, min_size=min_size)[0]


def read_image_with_header(
    source: ImageSource, *, min_size: int | None = None
) -> tuple[np.ndarray, DicomHeader | None]:
    """``read_image``'s pixels and, for DICOM, the header record (None for JPEG and PNG)."""
    if min_size is not None and (isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1):
        raise ValueError(f"min_size={min_size!r}; pass a positive int or None")
    if _is_dataset(source):
        from pneumocxr.imaging.dicom import read_dataset

        pixels, header = read_dataset(source)
        return reduce_for_model(pixels, min_size), header
    src = load_source(source)
    fmt = _format_or_fail(src)
    if fmt == "DICOM":
        from pneumocxr.imaging.dicom import read_dicom  # pydicom costs ~0.1 s to import; only when needed

        pixels, header = read_dicom(src)
        return reduce_for_model(pixels, min_size), header
    return reduce_for_model(read_raster(src, fmt), min_size), None


def image_info(source: str | os.PathLike) -> ImageInfo:
    """Width, height, format, mode and bits from the header alone (cheap: no pixel decoding).

    Raises UnsupportedImageError for everything detectable without decoding: missing/empty file,
    not an image, another format, absurd declared size, unsupported mode, colour or multi-frame
    DICOM. Truncated pixel data is only found by ``read_image``.
    """
    src = load_source(source)
    fmt = _format_or_fail(src)
    if fmt == "DICOM":
        from pneumocxr.imaging.dicom import dicom_info

        return dicom_info(src)
    return raster_info(src, fmt)


def _is_dataset(source: object) -> bool:
    module = sys.modules.get("pydicom.dataset")
    return module is not None and isinstance(source, module.Dataset)


def _format_or_fail(src: Source) -> str:
    fmt = detect_format(src.header)
    if fmt is not None:
        return fmt
    other = _other_pillow_format(src)
    if other:
        raise src.fail(f"{other} images are not supported; convert it to PNG ({_SUPPORTED} are read)")
    raise src.fail(f"not a {_SUPPORTED} image (unrecognised content)")


def _other_pillow_format(src: Source) -> str | None:
    """The name of another format Pillow recognises (TIFF, BMP, GIF …), for a precise message."""
    try:
        with src.open() as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(fh) as im:
                return str(im.format or "") or None
    except Exception:  # identification only: any failure just means "not an image we can name"
        return None
