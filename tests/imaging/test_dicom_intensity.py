"""DICOM reads as the 8-bit export of the film: the same numbers a JPEG of it gives (no min–max skew)."""

from __future__ import annotations

import io

import dicom_factory as df
import numpy as np
import pytest
from PIL import Image

from pneumocxr.errors import UnsupportedImageError
from pneumocxr.imaging import read_image


def _film(rows: int = 40, columns: int = 48, low: int = 30, high: int = 220, seed: int = 0) -> np.ndarray:
    """8-bit pixels spanning exactly low..high, as a training JPEG's often do (not 0..255)."""
    pixels = np.random.default_rng(seed).integers(low, high + 1, (rows, columns), dtype=np.uint8)
    pixels[0, 0], pixels[-1, -1] = low, high
    return pixels


def _as_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _with(**attributes):
    def edit(ds):
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)

    return edit


def test_8_bit_dicom_reads_exactly_like_the_same_pixels_as_png(tmp_path):
    # The skew this path removes: min–max would stretch 30..220 to 0..255 and brighten the film.
    pixels = _film(low=30, high=220)
    from_dicom = read_image(df.write_dicom(tmp_path / "film.dcm", pixels))
    from_png = read_image(_as_png(pixels))
    assert from_dicom.dtype == from_png.dtype == np.float32
    np.testing.assert_array_equal(from_dicom, from_png)
    assert from_dicom.min() == np.float32(30) / 255 and from_dicom.max() == np.float32(220) / 255


@pytest.mark.parametrize(
    ("function", "center", "width"), [("LINEAR", 2040.5, 4081), ("LINEAR_EXACT", 2040, 4080)]
)
def test_12_bit_dicom_with_an_export_window_reads_as_the_8_bit_pixels(tmp_path, function, center, width):
    # stored = 16 × the 8-bit value; the window maps 0..4080 back onto 0..255 as an export would.
    pixels = _film()
    path = df.write_dicom(
        tmp_path / "b12.dcm",
        pixels.astype(np.uint16) * 16,
        bits_stored=12,
        window=(center, width),
        edit=_with(VOILUTFunction=function),
    )
    np.testing.assert_array_equal(read_image(path), read_image(_as_png(pixels)))


def test_12_bit_linear_rescale_with_a_full_window_is_within_one_level(tmp_path):
    pixels = _film()
    stored = np.rint(pixels * (4095 / 255)).astype(np.uint16)
    path = df.write_dicom(tmp_path / "lin.dcm", stored, bits_stored=12, window=(2048, 4096))
    difference = np.abs(read_image(path) - read_image(_as_png(pixels)))
    assert difference.max() <= 1 / 255 + 1e-7


def test_monochrome1_of_inverted_pixels_reads_as_the_original(tmp_path):
    pixels = _film()
    path = df.write_dicom(tmp_path / "m1.dcm", 255 - pixels, photometric="MONOCHROME1")
    np.testing.assert_array_equal(read_image(path), read_image(_as_png(pixels)))


def test_output_is_always_whole_8_bit_levels(tmp_path):
    stored = np.random.default_rng(3).integers(0, 4096, (32, 32), dtype=np.uint16)
    out = read_image(df.write_dicom(tmp_path / "q.dcm", stored, bits_stored=12, window=(1500, 2100)))
    levels = out.astype(np.float64) * 255
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-4)


def test_no_window_12_bit_data_declared_16_bit_use_a_12_bit_range(tmp_path):
    # A common header mistake: 12-bit detector values with BitsStored 16. The full 16-bit range
    # would leave everything below 1/16; the bits the data need (12) give a usable film.
    stored = df.ramp(16, 64, 4095)
    out = read_image(df.write_dicom(tmp_path / "b16.dcm", stored, bits_stored=16))
    np.testing.assert_allclose(out, np.rint(stored / 4095 * 255) / 255, atol=1e-6)


def test_no_window_dark_film_stays_dark(tmp_path):
    # Not a content stretch: a 12-bit film whose values stop at 3000 keeps its grey levels.
    stored = df.ramp(16, 64, 3000)
    out = read_image(df.write_dicom(tmp_path / "dark.dcm", stored, bits_stored=12))
    np.testing.assert_allclose(out, np.rint(stored / 4095 * 255) / 255, atol=1e-6)
    assert out.max() < 0.74


def test_no_window_range_goes_through_the_rescale(tmp_path):
    # Intercept -1024 shifts values and the implied window alike: the picture is unchanged.
    stored = df.ramp(16, 64, 4095)
    plain = read_image(df.write_dicom(tmp_path / "a.dcm", stored, bits_stored=12))
    shifted = read_image(df.write_dicom(tmp_path / "b.dcm", stored, bits_stored=12, rescale=(1.0, -1024.0)))
    np.testing.assert_array_equal(plain, shifted)


def test_sigmoid_window_puts_the_center_at_mid_grey(tmp_path):
    stored = np.array([[1000, 2000, 3000]], dtype=np.uint16)
    path = df.write_dicom(
        tmp_path / "s.dcm", stored, bits_stored=12, window=(2000, 500), edit=_with(VOILUTFunction="SIGMOID")
    )
    out = read_image(path)[0] * 255
    np.testing.assert_allclose(out, [0, 128, 255], atol=1e-4)


def test_invalid_window_width_is_refused_naming_the_file(tmp_path):
    path = df.write_dicom(tmp_path / "w0.dcm", df.ramp(8, 8, 4095), bits_stored=12, window=(2048, 0.5))
    with pytest.raises(UnsupportedImageError, match=r"w0\.dcm.*WindowWidth 0\.5"):
        read_image(path)


def _padded(pixels: np.ndarray, value: int, border: int = 4) -> np.ndarray:
    stored = np.full((pixels.shape[0] + 2 * border, pixels.shape[1] + 2 * border), value, dtype=np.uint16)
    stored[border:-border, border:-border] = pixels
    return stored


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_padding_value_is_black_and_does_not_widen_the_window(tmp_path, photometric):
    # A 65535 padding frame around 8-bit content in a 16-bit word: counted as data, it would set
    # a 16-bit range and crush the film to near black; as padding it is black and ignored.
    pixels = _film()
    content = pixels if photometric == "MONOCHROME2" else 255 - pixels
    stored = _padded(content, 65535)
    path = df.write_dicom(
        tmp_path / "pad.dcm", stored, photometric=photometric, edit=_with(PixelPaddingValue=65535)
    )
    out = read_image(path)
    np.testing.assert_array_equal(out[4:-4, 4:-4], read_image(_as_png(pixels)))
    assert not out[:4].any() and not out[-4:].any() and not out[:, :4].any() and not out[:, -4:].any()


def test_padding_range_limit_masks_the_whole_range(tmp_path):
    pixels = _film()
    stored = _padded(pixels, 4000)
    stored[0, :] = 4095  # the other end of the padding range
    path = df.write_dicom(
        tmp_path / "range.dcm",
        stored,
        bits_stored=12,
        edit=_with(PixelPaddingValue=4000, PixelPaddingRangeLimit=4095),
    )
    out = read_image(path)
    np.testing.assert_array_equal(out[4:-4, 4:-4], read_image(_as_png(pixels)))
    assert not out[:4].any() and not out[:, :4].any()


def test_padding_does_not_change_a_windowed_image(tmp_path):
    stored = df.ramp(16, 64, 4095)  # multiples of 65: 2048 occurs only where set below
    stored[:, :2] = 2048  # mid-grey in the window unless it is padding
    plain = read_image(df.write_dicom(tmp_path / "a.dcm", stored, bits_stored=12, window=(2048, 1024)))
    padded = read_image(
        df.write_dicom(
            tmp_path / "b.dcm",
            stored,
            bits_stored=12,
            window=(2048, 1024),
            edit=_with(PixelPaddingValue=2048),
        )
    )
    np.testing.assert_array_equal(padded[:, 2:], plain[:, 2:])
    assert plain[:, :2].min() > 0.4 and not padded[:, :2].any()
