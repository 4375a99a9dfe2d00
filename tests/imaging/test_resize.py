"""resize_square: whole-image squash (the seed's geometry), letterbox, antialiasing, validation."""

from __future__ import annotations

import numpy as np
import pytest

from pneumocxr.errors import ConfigError
from pneumocxr.imaging import resize_square


def _left_bright(height: int, width: int) -> np.ndarray:
    pixels = np.zeros((height, width), dtype=np.float32)
    pixels[:, : width // 2] = 1.0
    return pixels


@pytest.mark.parametrize("mode", ["squash", "letterbox"])
@pytest.mark.parametrize("shape", [(100, 300), (300, 100), (64, 64), (7, 5)])
def test_output_is_float32_square_in_unit_range(mode, shape):
    pixels = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = resize_square(pixels, 32, mode)
    assert out.shape == (32, 32) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_squash_keeps_the_whole_image_without_cropping():
    out = resize_square(_left_bright(100, 300), 50)  # wide: would lose columns if centre-cropped
    assert out[:, :20].min() > 0.99 and out[:, 30:].max() < 0.01
    assert out.mean() == pytest.approx(0.5, abs=0.01)


def test_letterbox_keeps_aspect_and_pads_with_black():
    out = resize_square(np.ones((100, 300), dtype=np.float32), 60, "letterbox")
    rows = np.flatnonzero(out.max(axis=1) > 0)
    assert (rows.min(), rows.max()) == (20, 39)  # 300→60 wide means 100→20 tall, centred
    assert out[20:40].min() > 0.99 and not out[:20].any() and not out[40:].any()


def test_letterbox_tall_image_pads_left_and_right():
    out = resize_square(np.ones((300, 100), dtype=np.float32), 60, "letterbox")
    columns = np.flatnonzero(out.max(axis=0) > 0)
    assert (columns.min(), columns.max()) == (20, 39)


def test_downscaling_is_antialiased():
    checkerboard = (np.indices((200, 200)).sum(axis=0) % 2).astype(np.float32)
    out = resize_square(checkerboard, 20)
    assert np.abs(out - 0.5).max() < 0.05  # nearest-neighbour would give only 0s and 1s


def test_sixteen_bit_precision_is_not_quantised_to_8_bits():
    pixels = np.full((40, 40), 0.5 + 1 / 65535, dtype=np.float32)
    out = resize_square(pixels, 16)
    np.testing.assert_allclose(out, 0.5 + 1 / 65535, atol=1e-6)


def test_same_size_returns_a_copy_not_a_view():
    pixels = np.random.default_rng(1).random((24, 24), dtype=np.float32)
    out = resize_square(pixels, 24)
    np.testing.assert_array_equal(out, pixels)
    out[0, 0] = -1
    assert pixels[0, 0] >= 0


def test_unknown_mode_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match=r"'crop'.*squash, letterbox"):
        resize_square(np.zeros((8, 8), dtype=np.float32), 4, "crop")


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3)), np.zeros((0, 4)), np.zeros(5)])
def test_non_2d_input_is_a_value_error(bad):
    with pytest.raises(ValueError, match="2-D"):
        resize_square(bad, 4)


@pytest.mark.parametrize("size", [0, -1, 2.0, True])
def test_invalid_size_is_a_value_error(size):
    with pytest.raises(ValueError, match="size"):
        resize_square(np.zeros((8, 8), dtype=np.float32), size)
