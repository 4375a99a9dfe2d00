"""Put a model-input map back onto the image as the user has it.

The model sees a square: the whole film squashed to it ("squash") or scaled to fit and padded
("letterbox", see ``imaging.resize``). A map at model resolution therefore sits on a distorted or
padded picture; to overlay it on the X-ray itself, undo the padding (letterbox) and stretch the
map back to the original height × width.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pneumocxr.errors import ConfigError
from pneumocxr.imaging import RESIZE_MODES


def content_box(height: int, width: int, size: int, mode: str) -> tuple[int, int, int, int]:
    """(top, left, box height, box width) of the image inside the ``size`` square.

    Mirrors the arithmetic of ``imaging.resize_square`` (a test checks them against each other).
    """
    if mode not in RESIZE_MODES:
        raise ConfigError(f"resize mode {mode!r} is not known; use one of {', '.join(RESIZE_MODES)}")
    if mode == "squash":
        return 0, 0, size, size
    scale = size / max(height, width)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    return (size - new_h) // 2, (size - new_w) // 2, new_h, new_w


def to_original_geometry(cam: np.ndarray, height: int, width: int, mode: str = "squash") -> np.ndarray:
    """An (S, S) map in [0, 1] as (height, width) float32 aligned with the original image."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2 or cam.shape[0] != cam.shape[1]:
        raise ValueError(f"expected a square (S, S) map, got shape {cam.shape}")
    if height < 1 or width < 1:
        raise ValueError(f"original size {height}×{width} must be positive")
    top, left, box_h, box_w = content_box(height, width, cam.shape[0], mode)
    return resize_map(cam[top : top + box_h, left : left + box_w], height, width)


def resize_map(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear float resize (Pillow 'F' mode) to height × width, clipped to [0, 1]."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.shape == (height, width):
        return np.clip(values, 0.0, 1.0)
    out = Image.fromarray(values).resize((width, height), resample=Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def display_size(height: int, width: int, max_side: int, min_side: int = 0) -> tuple[int, int]:
    """(height, width) scaled so the long side lies in [min_side, max_side], aspect kept."""
    long_side = max(height, width)
    scale = min(max_side / long_side, max(1.0, min_side / long_side))
    return max(1, round(height * scale)), max(1, round(width * scale))
