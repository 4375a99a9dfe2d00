"""Resize a float image to the model's square input, antialiased, in one of two geometries.

"squash" maps the whole image onto the square (aspect ratio not kept, nothing cropped): that is
what the seed's Keras pipeline did and how 3,650 of the Kermany training images were made, so
it is the default. "letterbox" keeps the aspect ratio and pads with 0 (black), for very wide or
tall films where squashing distorts anatomy.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pneumocxr.errors import ConfigError

RESIZE_MODES = ("squash", "letterbox")
# Pillow's bilinear filter widens its support with the scale factor, so it antialiases on
# downscaling (like torchvision's antialias=True) and, unlike bicubic/Lanczos, cannot overshoot [0, 1].
_FILTER = Image.Resampling.BILINEAR


def resize_square(pixels: np.ndarray, size: int, mode: str = "squash") -> np.ndarray:
    """float32 ``size``×``size`` in [0, 1] from a 2-D image in [0, 1] (see module docstring)."""
    if mode not in RESIZE_MODES:
        raise ConfigError(f"resize mode {mode!r} is not known; use one of {', '.join(RESIZE_MODES)}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size={size!r}; pass a positive int")
    size = int(size)
    arr = np.asarray(pixels, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"resize_square needs a non-empty 2-D H×W image, got shape {arr.shape}")
    height, width = arr.shape
    if mode == "squash":
        return _resize(arr, width=size, height=size)
    scale = size / max(height, width)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = _resize(arr, width=new_w, height=new_h)
    return out


def _resize(arr: np.ndarray, *, width: int, height: int) -> np.ndarray:
    """Pillow 'F'-mode (32-bit float) resize: no 8-bit quantisation of 16-bit or DICOM data."""
    if arr.shape == (height, width):
        return np.clip(arr, 0.0, 1.0)  # a fresh array: callers may modify the result
    image = Image.fromarray(np.ascontiguousarray(arr))  # mode "F"
    out = np.asarray(image.resize((width, height), resample=_FILTER), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def square_uint8(pixels: np.ndarray, size: int, mode: str = "squash") -> np.ndarray:
    """(size, size) uint8 from a 2-D image in [0, 1]: the model's input square, rounded as the
    training cache stores it (``data.cache.decode_record``) so that every caller sees those bytes."""
    square = resize_square(pixels, size, mode=mode)
    return np.clip(np.rint(square * 255.0), 0, 255).astype(np.uint8)
