"""Maps go back onto the image as the user has it: squash stretched back, letterbox un-padded."""

from __future__ import annotations

import numpy as np
import pytest

from pneumocxr.explain import blend, content_box, to_original_geometry
from pneumocxr.imaging import resize_square


@pytest.mark.parametrize("shape", [(60, 150), (150, 60), (77, 77), (31, 200)])
def test_letterbox_box_matches_the_resize_that_made_the_input(shape):
    square = resize_square(np.ones(shape, np.float32), 32, mode="letterbox")
    top, left, h, w = content_box(*shape, 32, "letterbox")
    inside = np.zeros_like(square, dtype=bool)
    inside[top : top + h, left : left + w] = True
    assert (square[inside] > 0.99).all()
    assert (square[~inside] == 0).all()


def test_squashed_map_is_stretched_back_to_the_wide_original():
    cam = np.zeros((32, 32), np.float32)
    cam[:, :8] = 1.0  # the left quarter of the model input
    out = to_original_geometry(cam, 60, 200, "squash")
    assert out.shape == (60, 200)
    assert out[:, :45].min() > 0.9  # the left quarter of the original (50 px, minus the blur at the edge)
    assert out[:, 56:].max() < 0.1


def test_letterboxed_map_drops_the_padding():
    height, width = 40, 160  # wide: padded above and below in the square
    top, left, h, w = content_box(height, width, 32, "letterbox")
    assert (top, h) == (12, 8) and (left, w) == (0, 32)
    cam = np.zeros((32, 32), np.float32)
    cam[top : top + h, 16:] = 1.0  # right half of the image region; padding rows stay 0
    cam[:top] = 0.5  # values in the padding must not leak into the image
    out = to_original_geometry(cam, height, width, "letterbox")
    assert out.shape == (height, width)
    assert out[:, 90:].min() > 0.9
    assert out[:, :70].max() < 0.1


def test_blend_keeps_the_original_size_and_shows_the_map():
    image = np.full((50, 120), 0.5, np.float32)
    cam = np.zeros((50, 120), np.float32)
    cam[:, 60:] = 1.0
    rgb = blend(image, cam)
    assert rgb.shape == (50, 120, 3) and rgb.dtype == np.uint8
    assert not np.array_equal(rgb[:, :60].mean((0, 1)), rgb[:, 60:].mean((0, 1)))
    with pytest.raises(ValueError, match="same 2-D size"):
        blend(image, cam[:, :10])
