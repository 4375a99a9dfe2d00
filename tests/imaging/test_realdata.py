"""Real Kermany files: both kinds in the release (224 px RGB copies and larger grayscale originals)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pneumocxr.imaging import image_info, read_image, resize_square

pytestmark = pytest.mark.realdata


def _sample(shared_data, per_class: int = 6):
    train = shared_data / "chest_xray" / "train"
    files = []
    for label in ("NORMAL", "PNEUMONIA"):
        files += list(itertools.islice(sorted((train / label).glob("*.jpeg")), per_class))
    return files


def test_real_files_read_as_gray_float_in_unit_range(shared_data):
    files = _sample(shared_data)
    modes = set()
    for path in files:
        info = image_info(path)
        modes.add(info.mode)
        pixels = read_image(path)
        assert pixels.dtype == np.float32 and pixels.shape == (info.height, info.width), path
        assert 0.0 <= pixels.min() < pixels.max() <= 1.0, path
        square = resize_square(pixels, 224)
        assert square.shape == (224, 224) and square.min() >= 0.0 and square.max() <= 1.0
    assert info.format == "JPEG"
    assert {"L", "RGB"} <= modes, f"expected both file kinds in the sample, saw {modes}"


def test_real_files_reduced_decode_keeps_min_size_and_pixels(shared_data):
    for path in _sample(shared_data):
        full = read_image(path)
        draft = read_image(path, min_size=224)
        assert min(draft.shape) >= min(224, *full.shape), path
        difference = np.abs(resize_square(full, 224) - resize_square(draft, 224))
        assert difference.mean() < 0.01, path
