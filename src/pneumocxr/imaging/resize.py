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


REDUCTION_FACTORS = (8, 4, 2)  # the powers of two a JPEG decoder's DCT scaling offers


def reduction_factor(height: int, width: int, min_size: int | None) -> int:
    """How much ``reduce_for_model`` shrinks an image for a ``min_size`` input (1 = not at all): the
    largest s in {8, 4, 2} with s <= min(W // min_size, H // min_size), only when both sides are
    >= 2 × min_size — so both reduced sides stay >= min_size (Pillow's JPEG draft rule)."""
    if min_size is None or min(height, width) < 2 * min_size:
        return 1
    room = min(width // min_size, height // min_size)
    return next((s for s in REDUCTION_FACTORS if s <= room), 1)


def reduce_for_model(pixels: np.ndarray, min_size: int | None) -> np.ndarray:
    """A full-resolution image shrunk by ``reduction_factor`` with s × s block means (edges
    replicated to whole blocks), rounded to 8-bit levels, before the final resize.

    Every format takes this same step after a full-resolution decode — JPEG, PNG, DICOM and arrays —
    so a DICOM or PNG of a JPEG's pixels gives the model exactly the JPEG's input. (A JPEG decoder's
    own DCT-domain scaling would be ~1 ms faster per film but is not reproducible from pixels: it
    moved probabilities by up to 2e-3 between a film and its DICOM.) It also makes the final
    resize of a 2,000 px film to 224 px cheap and alias-free. Identity when no reduction applies.
    """
    height, width = pixels.shape
    s = reduction_factor(height, width, min_size)
    if s == 1:
        return pixels
    import cv2  # OpenCV (~0.1 s to import): only when an image is reduced

    padded = np.pad(pixels, ((0, -height % s), (0, -width % s)), mode="edge")
    # INTER_AREA at an exact integer factor is the block mean (and much faster than numpy's)
    blocks = cv2.resize(padded, (padded.shape[1] // s, padded.shape[0] // s), interpolation=cv2.INTER_AREA)
    return (np.rint(blocks * 255.0) / 255.0).astype(np.float32)
