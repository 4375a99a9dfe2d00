"""Shared by the API tests: film-like test images."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def film(width: int = 96, height: int = 80, *, seed: int = 0, bits: int = 8, mode: str = "L") -> Image.Image:
    """A film-like test image: a bright vertical centre column (the spine) and darker sides (the lungs),
    larger than the tiny model's input, so the core's size and polarity checks pass it."""
    x = np.linspace(-1.0, 1.0, width)
    rows = np.tile(0.25 + 0.6 * np.exp(-((x / 0.15) ** 2)), (height, 1))
    pixels = np.clip(rows + np.random.default_rng(seed).normal(0, 0.03, rows.shape), 0, 1)
    if bits == 16:
        image = Image.fromarray(np.round(pixels * 65535).astype(np.uint16))
    else:
        image = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
    return image.convert(mode) if mode != "L" else image


def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()
