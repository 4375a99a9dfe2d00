"""``read_image`` and ``image_info``: dispatch on the magic bytes to the JPEG/PNG or DICOM reader.

Every way an input can be wrong (missing, empty, truncated, not an image, another format,
unsupported mode, absurd size) ends as ``UnsupportedImageError(source, reason)``, so the CLI
prints one line naming the file and a long batch job can log and count bad files.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image

from pneumocxr.imaging.raster import raster_info, read_raster
from pneumocxr.imaging.source import ImageInfo, Source, detect_format, load_source

_SUPPORTED = "JPEG, PNG or DICOM"


def read_image(source: str | os.PathLike | bytes, *, min_size: int | None = None) -> np.ndarray:
    """Decode a JPEG, PNG or DICOM (path or bytes) to float32 H×W with values in [0, 1].

    ``min_size``: the caller will resize to about min_size×min_size, so a JPEG may be decoded at a
    reduced DCT scale as long as both sides stay >= min_size (several times faster for full-size
    radiographs). None decodes at full resolution; PNG and DICOM are always full resolution.
    """
    if min_size is not None and (isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1):
        raise ValueError(f"min_size={min_size!r}; pass a positive int or None")
    src = load_source(source)
    fmt = _format_or_fail(src)
    if fmt == "DICOM":
        from pneumocxr.imaging.dicom import read_dicom  # pydicom costs ~0.1 s to import; only when needed

        return read_dicom(src)
    return read_raster(src, fmt, min_size)


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
