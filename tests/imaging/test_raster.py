"""JPEG/PNG reading: every Pillow mode to float32 H×W in [0, 1], orientation and draft decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pneumocxr.errors import UnsupportedImageError
from pneumocxr.imaging import image_info, read_image, resize_square
from pneumocxr.imaging.raster import pil_to_float

RNG = np.random.default_rng(7)
GRAY = RNG.integers(0, 256, size=(12, 20), dtype=np.uint8)
RGB = RNG.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, size=(12, 20), dtype=np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _palette_image() -> tuple[Image.Image, np.ndarray]:
    palette = RNG.integers(0, 256, size=(256, 3), dtype=np.uint8)
    indices = RNG.integers(0, 256, size=GRAY.shape, dtype=np.uint8)
    height, width = indices.shape
    image = Image.frombytes("P", (width, height), indices.tobytes())
    image.putpalette(palette.tobytes())
    return image, _luma(palette[indices].astype(np.float64))


def _png_cases():
    rgba = np.dstack([RGB, ALPHA])
    la = Image.merge("LA", [Image.fromarray(GRAY), Image.fromarray(ALPHA)])
    palette, palette_expected = _palette_image()
    bilevel = Image.fromarray(GRAY).convert("1", dither=Image.Dither.NONE)
    return {
        "L": (Image.fromarray(GRAY), GRAY / 255.0),
        "RGB": (Image.fromarray(RGB), _luma(RGB.astype(np.float64))),
        "RGBA": (Image.fromarray(rgba), _luma(RGB.astype(np.float64))),  # alpha ignored
        "LA": (la, GRAY / 255.0),  # alpha ignored
        "P": (palette, palette_expected),
        "1": (bilevel, (np.asarray(bilevel.convert("L")) / 255.0)),
    }


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "1"])
def test_png_modes_become_gray_float_in_unit_range(tmp_path, mode):
    image, expected = _png_cases()[mode]
    path = tmp_path / f"{mode}.png"
    path.write_bytes(_encode(image))
    with Image.open(path) as written:
        assert written.mode == mode  # the file really is in the mode under test
    out = read_image(path)
    assert out.dtype == np.float32 and out.shape == GRAY.shape
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_16_bit_png_is_scaled_by_65535_not_255(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16).repeat(3, axis=0)
    path = tmp_path / "sixteen.png"
    path.write_bytes(_encode(Image.fromarray(values)))
    with Image.open(path) as written:
        assert written.mode == "I;16"
    out = read_image(path)
    np.testing.assert_allclose(out, values / 65535.0, atol=1e-7)
    assert 0 < out[0, 1] < 0.02  # 1000 would saturate to 1.0 if divided by 255
    assert image_info(path).bits == 16


def test_32_bit_integer_mode_uses_the_16_bit_range():
    values = np.array([[0, 1000, 65535]], dtype=np.int32)
    np.testing.assert_allclose(pil_to_float(Image.fromarray(values)), values / 65535.0, atol=1e-7)
    with pytest.raises(UnsupportedImageError, match=r"not 0\.\.65535"):
        pil_to_float(Image.fromarray(np.array([[70000]], dtype=np.int32)), "big.png")


@pytest.mark.parametrize("mode", ["F", "HSV", "LAB"])
def test_unsupported_pillow_modes_are_refused(mode):
    with pytest.raises(UnsupportedImageError, match=f"unsupported pixel mode '{mode}'"):
        pil_to_float(Image.new(mode, (4, 4)), "odd.png")


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
def test_jpeg_modes_decode_close_to_the_source(tmp_path, mode):
    smooth = np.tile(np.linspace(20, 230, 64), (48, 1))
    gray = Image.fromarray(smooth.astype(np.uint8))
    image = gray.convert(mode)
    path = tmp_path / f"{mode}.jpeg"
    path.write_bytes(_encode(image, "JPEG", quality=95))
    expected = pil_to_float(image)  # exact conversion of the un-encoded source
    out = read_image(path)
    assert out.dtype == np.float32 and out.shape == (48, 64)
    assert np.abs(out - expected).max() < 0.03  # JPEG is lossy


def test_exif_orientation_is_applied_and_reported_by_image_info(tmp_path):
    pixels = np.zeros((30, 50), dtype=np.uint8)
    pixels[:, :10] = 255  # bright band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_encode(Image.fromarray(pixels), "JPEG", exif=exif, quality=95))
    out = read_image(path)
    assert out.shape == (50, 30)
    assert out[:8].mean() > 0.9 and out[-30:].mean() < 0.1  # band now on top
    info = image_info(path)
    assert (info.height, info.width) == out.shape


def _big_jpeg(tmp_path, width: int, height: int, mode: str = "L"):
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = 128 + 90 * np.sin(xx / 37.0) * np.cos(yy / 23.0)
    image = Image.fromarray(smooth.astype(np.uint8)).convert(mode)
    path = tmp_path / f"big_{width}x{height}_{mode}.jpeg"
    path.write_bytes(_encode(image, "JPEG", quality=92))
    return path


@pytest.mark.parametrize(
    ("width", "height", "min_size"),
    [(1000, 700, 224), (1000, 700, 100), (2000, 300, 224), (225, 900, 224), (500, 460, 224), (150, 120, 224)],
)
def test_reduction_keeps_both_sides_at_least_min_size(tmp_path, width, height, min_size):
    path = _big_jpeg(tmp_path, width, height)
    out = read_image(path, min_size=min_size)
    assert min(out.shape) >= min(min_size, width, height)
    assert out.shape[0] <= height and out.shape[1] <= width


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_reduction_shrinks_by_a_power_of_two_and_resizes_to_nearly_the_same_pixels(tmp_path, mode):
    path = _big_jpeg(tmp_path, 1000, 700, mode)
    full = read_image(path)
    draft = read_image(path, min_size=224)
    assert full.shape == (700, 1000)
    assert draft.shape == (350, 500)  # scale 1/2: the largest that keeps 700 / s >= 224
    a, b = resize_square(full, 224), resize_square(draft, 224)
    assert np.abs(a - b).mean() < 0.01 and np.abs(a - b).max() < 0.08


def test_a_png_of_a_jpegs_pixels_reduces_to_exactly_the_jpegs_input(tmp_path):
    """One reduction for every format (block means after a full decode), so the same pixels give
    the model the same input whatever the file format — unlike a JPEG decoder's DCT scaling."""
    jpeg = _big_jpeg(tmp_path, 1000, 700, "L")
    levels = np.rint(read_image(jpeg) * 255).astype(np.uint8)
    png = tmp_path / "same.png"
    png.write_bytes(_encode(Image.fromarray(levels)))
    reduced = read_image(png, min_size=100)
    assert reduced.shape == (175, 250)  # s = 4: the largest power of two keeping 700 / s >= 100
    np.testing.assert_array_equal(reduced, read_image(jpeg, min_size=100))
    block = levels[:4, :4].astype(np.float64).mean()
    assert reduced[0, 0] == np.float32(np.rint(block) / 255)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_invalid_min_size_is_a_value_error(tmp_path, bad):
    path = tmp_path / "a.png"
    path.write_bytes(_encode(Image.fromarray(GRAY)))
    with pytest.raises(ValueError, match="min_size"):
        read_image(path, min_size=bad)


def test_bytes_input_matches_file_input(tmp_path):
    data = _encode(Image.fromarray(RGB))
    path = tmp_path / "same.png"
    path.write_bytes(data)
    np.testing.assert_array_equal(read_image(data), read_image(path))
    np.testing.assert_array_equal(read_image(bytearray(data)), read_image(path))


def test_image_info_reports_header_fields_without_decoding(tmp_path):
    path = tmp_path / "info.png"
    path.write_bytes(_encode(Image.fromarray(RGB)))
    info = image_info(path)
    assert (info.width, info.height, info.format, info.mode, info.bits) == (20, 12, "PNG", "RGB", 8)
    jpeg = _big_jpeg(tmp_path, 300, 200)
    jpeg_info = image_info(jpeg)
    assert (jpeg_info.format, jpeg_info.width, jpeg_info.height) == ("JPEG", 300, 200)


def test_a_png_renamed_to_jpg_is_read_as_png(tmp_path):
    path = tmp_path / "actually_png.jpg"
    path.write_bytes(_encode(Image.fromarray(GRAY)))
    np.testing.assert_allclose(read_image(path), GRAY / 255.0, atol=1e-7)
    assert image_info(path).format == "PNG"
