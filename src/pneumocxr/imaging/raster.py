"""JPEG and PNG via Pillow: every mode to float32 H×W in [0, 1], always at full resolution.

Truncated files must fail, not come back half grey: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left
False (never set here), every image is fully loaded before it is returned, and PNGs are
additionally CRC-verified up to IEND because Pillow happily decodes a PNG whose tail is missing.
"""

from __future__ import annotations

import logging
import struct
import warnings
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from pneumocxr.errors import UnsupportedImageError
from pneumocxr.imaging.source import MAX_PIXELS, ImageInfo, Source, brief_error

log = logging.getLogger(__name__)

# ITU-R BT.601 luma, the weights Pillow's own RGB→L conversion and JPEG's Y channel use, so an
# RGB PNG and a JPEG decoded straight to its Y channel agree.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_MODE_BITS = {"1": 1, "I": 32, **dict.fromkeys(_SIXTEEN_BIT_MODES, 16)}
SUPPORTED_MODES = frozenset(
    {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", *_SIXTEEN_BIT_MODES}
)
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
# What Pillow raises for a corrupt or truncated file: wrap these, let real bugs propagate.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, KeyError)


def read_raster(src: Source, fmt: str) -> np.ndarray:
    """Decode a JPEG or PNG fully and return float32 H×W in [0, 1].

    Full resolution on purpose: a JPEG decoder's DCT-scaled (draft) decode cannot be reproduced
    from pixels, so a DICOM of the same film would reach the model differently (``read``).
    """
    if fmt == "PNG":
        _verify_png(src)
    with src.open() as fh, _open(src, fh, fmt) as im:
        _check_declared(src, im)
        if fmt == "JPEG" and im.mode == "RGB":
            im.draft("L", None)  # decode an RGB JPEG straight to its Y (luma) channel
        try:
            im.load()
            oriented = _apply_orientation(im)
            pixels = pil_to_float(oriented, src.name)
        except _DECODE_ERRORS as exc:
            reason = f"truncated or corrupt {fmt} data ({brief_error(exc)}); re-copy or re-export it"
            raise src.fail(reason) from None
    return pixels


def raster_info(src: Source, fmt: str) -> ImageInfo:
    """Header-only facts, with the same size and mode checks ``read_raster`` applies."""
    with src.open() as fh, _open(src, fh, fmt) as im:
        _check_declared(src, im)
        width, height = im.size
        if _orientation(im) in _TRANSPOSED_ORIENTATIONS:
            width, height = height, width
        bits = _MODE_BITS.get(im.mode, 8)
        return ImageInfo(width=width, height=height, format=fmt, mode=im.mode, bits=bits)


def pil_to_float(im: Image.Image, name: str = "<image>") -> np.ndarray:
    """Any supported Pillow mode → float32 H×W in [0, 1]; alpha is ignored, colour becomes luma.

    16-bit data is scaled by 65535 (its real range), not 255, so 16-bit PNG exports keep their
    contrast. Mode "I" (32-bit) is accepted only when its values fit the 16-bit range.
    """
    mode = im.mode
    if mode not in SUPPORTED_MODES:
        raise UnsupportedImageError(
            name, f"unsupported pixel mode {mode!r}; save it as 8/16-bit grayscale or RGB PNG/JPEG"
        )
    if mode == "1":
        im, mode = im.convert("L"), "L"
    if mode in ("P", "PA"):
        im, mode = im.convert("RGBA"), "RGBA"
    if mode == "CMYK":
        im, mode = im.convert("RGB"), "RGB"
    arr = np.asarray(im)
    if mode == "L":
        out = arr.astype(np.float32) / 255.0
    elif mode in ("LA", "YCbCr"):
        out = arr[..., 0].astype(np.float32) / 255.0  # gray/luma band; alpha or chroma dropped
    elif mode in ("RGB", "RGBA", "RGBX"):
        out = (arr[..., :3].astype(np.float32) @ _LUMA) / 255.0
    elif mode in _SIXTEEN_BIT_MODES:
        out = arr.astype(np.float32) / 65535.0
    else:  # "I"
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            reason = f"32-bit pixel values span {arr.min()}..{arr.max()}, not 0..65535; save as 16-bit PNG"
            raise UnsupportedImageError(name, reason)
        out = arr.astype(np.float32) / 65535.0
    return np.clip(out, 0.0, 1.0, out=out)


# ----------------------------------------------------------------------------- helpers


def _open(src: Source, fh: Any, fmt: str) -> Image.Image:
    """Image.open restricted to the detected format, with library errors named for the file.

    Pillow's own bomb warning (~89 MP) is silenced because ``_check_declared`` applies our
    MAX_PIXELS limit as an error; its hard error (~179 MP) is wrapped the same way.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fh, formats=[fmt])
    except Image.DecompressionBombError as exc:
        reason = f"declared image size is too large ({brief_error(exc)}); refusing a decompression bomb"
        raise src.fail(reason) from None
    except _DECODE_ERRORS as exc:
        raise src.fail(f"not a readable {fmt} file ({brief_error(exc)})") from None


def _check_declared(src: Source, im: Image.Image) -> None:
    width, height = im.size
    if width * height > MAX_PIXELS:
        raise src.fail(
            f"declares {width}×{height} = {width * height / 1e6:.0f} megapixels, over the "
            f"{MAX_PIXELS / 1e6:.0f} MP limit; refusing a possible decompression bomb"
        )
    if width < 1 or height < 1:
        raise src.fail(f"declares an empty image ({width}×{height})")
    if im.mode not in SUPPORTED_MODES:
        raise src.fail(f"unsupported pixel mode {im.mode!r}; save it as 8/16-bit grayscale or RGB PNG/JPEG")


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except (*_DECODE_ERRORS, TypeError):
        return 1  # unreadable EXIF is not a reason to refuse the pixels; treat as upright


def _apply_orientation(im: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF tag says (photographed films, phone exports), as viewers do."""
    if _orientation(im) == 1:
        return im
    return ImageOps.exif_transpose(im)


def _verify_png(src: Source) -> None:
    """Walk every chunk to IEND checking CRCs: catches a PNG truncated after its pixel data."""
    with src.open() as fh:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(fh, formats=["PNG"]) as im:
                    im.verify()
        except Image.DecompressionBombError:
            return  # reported with the size by read_raster's own open
        except _DECODE_ERRORS as exc:
            reason = f"truncated or corrupt PNG ({brief_error(exc)}); re-copy or re-export it"
            raise src.fail(reason) from None
