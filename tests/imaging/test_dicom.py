"""DICOM reading: the grayscale display pipeline, compression, detection and refusals."""

from __future__ import annotations

import logging

import dicom_factory as df
import numpy as np
import pytest
from pydicom.pixels.common import CoderBase

from pneumocxr.errors import UnsupportedImageError
from pneumocxr.imaging import image_info, read_image


def _linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 LINEAR window, as a fraction of the output range."""
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _eight_bit(fraction: np.ndarray) -> np.ndarray:
    """What an 8-bit export of a display fraction holds, read back as a JPEG is (level / 255)."""
    return np.rint(np.clip(fraction, 0.0, 1.0) * 255).astype(np.uint8).astype(np.float32) / 255.0


def test_no_window_uses_the_range_of_the_bits_the_data_need(tmp_path):
    # 0..1000 in a 16-bit word with no window: a 10-bit range (0..1023), not min–max to 0..1000.
    stored = df.ramp(32, 40, 1000)
    out = read_image(df.write_dicom(tmp_path / "plain.dcm", stored))
    assert out.dtype == np.float32 and out.shape == (32, 40)
    np.testing.assert_array_equal(out, _eight_bit(stored / 1023.0))
    assert out.max() < 1.0


def test_monochrome1_is_inverted_with_a_warning_naming_the_file(tmp_path, caplog):
    stored = df.ramp(16, 24, 1000)
    path = df.write_dicom(tmp_path / "inverted.dcm", stored, photometric="MONOCHROME1")
    with caplog.at_level(logging.WARNING, logger="pneumocxr.imaging"):
        out = read_image(path)
    np.testing.assert_allclose(out, 1.0 - _eight_bit(stored / 1023.0), atol=1e-6)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(path) in m and "MONOCHROME1" in m for m in messages), messages


def test_bits_stored_12_of_16_ignores_bits_above_high_bit(tmp_path):
    stored = df.ramp(16, 16, 4095)
    dirty = stored.copy()
    dirty[::2] |= 0xF000  # overlay/garbage in the 4 unused high bits of every other row
    out = read_image(df.write_dicom(tmp_path / "b12.dcm", dirty, bits_stored=12))
    np.testing.assert_array_equal(out, _eight_bit(stored / 4095.0))


def test_signed_pixels_keep_their_order(tmp_path):
    stored = np.linspace(-1000, 1000, 20 * 30).reshape(20, 30).astype(np.int16)
    out = read_image(df.write_dicom(tmp_path / "signed.dcm", stored, signed=True))
    # -1000..1000 needs 11 signed bits: the implied window is -1024..1023.
    np.testing.assert_array_equal(out, _eight_bit((stored + 1024.0) / 2047.0))


def test_rescale_slope_and_intercept_are_applied_before_the_window(tmp_path):
    # The window is in rescaled units (HU-like): ignoring the intercept would shift it by 1024.
    stored = df.ramp(8, 64, 4095)
    slope, intercept, center, width = 1.0, -1024.0, 0.0, 800.0
    path = df.write_dicom(
        tmp_path / "rescale.dcm", stored, rescale=(slope, intercept), window=(center, width)
    )
    expected = _linear_window(stored * slope + intercept, center, width)
    np.testing.assert_array_equal(read_image(path), _eight_bit(expected))


def test_rescale_with_fractional_slope_is_linear(tmp_path):
    stored = df.ramp(8, 50, 2000)
    out = read_image(df.write_dicom(tmp_path / "slope.dcm", stored, rescale=(0.5, 100.0)))
    # implied window: stored 0..2047 (11 bits) through the rescale, i.e. 100..1123.5
    np.testing.assert_allclose(out, _eight_bit(stored / 2047.0), atol=1e-6)


def test_window_center_and_width_clip_and_stretch(tmp_path):
    stored = df.ramp(8, 64, 4095)
    out = read_image(df.write_dicom(tmp_path / "window.dcm", stored, window=(2048, 1024)))
    np.testing.assert_array_equal(out, _eight_bit(_linear_window(stored.astype(float), 2048, 1024)))
    assert out[-1, 0] == 0.0 and out[-1, -1] == 1.0  # outside the window: clipped


def test_voi_lut_sequence_is_applied(tmp_path):
    stored = df.ramp(8, 64, 4095)
    lut = np.round(np.sqrt(np.arange(4096) / 4095.0) * 65535).astype(np.uint16)
    out = read_image(df.write_dicom(tmp_path / "voilut.dcm", stored, voi_lut=(0, lut)))
    np.testing.assert_array_equal(out, _eight_bit(lut[stored] / 65535.0))


@pytest.mark.parametrize(
    "syntax", [df.RLELossless, df.JPEG2000Lossless, df.JPEGLSLossless, df.JPEGBaseline8Bit], ids=str
)
def test_compressed_transfer_syntaxes_decode(tmp_path, syntax):
    if not df.can_encode(syntax):
        pytest.skip(f"no encoder for {syntax.name} installed (decoding is still supported via pylibjpeg)")
    stored = df.ramp(64, 80, 255, dtype=np.uint8)  # OpenJPEG's default 6 resolutions need >= 32 px sides
    path = df.write_dicom(tmp_path / "compressed.dcm", stored, transfer_syntax=syntax)
    out = read_image(path)
    tolerance = 0.03 if syntax == df.JPEGBaseline8Bit else 1e-6  # baseline JPEG is lossy
    np.testing.assert_allclose(out, stored / 255.0, atol=tolerance)


def test_compressed_12_bit_jpeg2000_decodes_losslessly(tmp_path):
    stored = df.ramp(64, 72, 4095)
    path = df.write_dicom(tmp_path / "j2k.dcm", stored, bits_stored=12, transfer_syntax=df.JPEG2000Lossless)
    np.testing.assert_array_equal(read_image(path), _eight_bit(stored / 4095.0))


def test_missing_decoder_plugin_names_the_extra_to_install(tmp_path, monkeypatch):
    path = df.write_dicom(tmp_path / "rle.dcm", df.ramp(8, 8, 255, np.uint8), transfer_syntax=df.RLELossless)
    monkeypatch.setattr(CoderBase, "is_available", property(lambda self: False))
    with pytest.raises(UnsupportedImageError, match=r"pip install 'pneumocxr\[dicom\]'") as info:
        read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_dicom_is_refused_clearly(tmp_path, photometric):
    rgb = np.zeros((8, 10, 3), dtype=np.uint8)
    path = df.write_dicom(tmp_path / "colour.dcm", rgb, photometric=photometric)
    expected = f"colour DICOM (PhotometricInterpretation={photometric}) is not a chest radiograph"
    for call in (read_image, image_info):
        with pytest.raises(UnsupportedImageError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            call(path)


def test_multi_frame_dicom_is_refused(tmp_path):
    frames = np.zeros((3, 8, 8), dtype=np.uint16)
    path = df.write_dicom(tmp_path / "cine.dcm", frames)
    with pytest.raises(UnsupportedImageError, match="multi-frame DICOM \\(3 frames\\)"):
        read_image(path)


@pytest.mark.parametrize("name", ["looks_like.jpg", "no_extension", "image.png"])
def test_dicom_is_detected_by_magic_bytes_not_extension(tmp_path, name):
    stored = df.ramp(12, 16, 300)
    path = df.write_dicom(tmp_path / name, stored)
    np.testing.assert_array_equal(read_image(path), _eight_bit(stored / 511.0))
    assert image_info(path).format == "DICOM"


@pytest.mark.parametrize("file_meta", [True, False], ids=["meta-no-preamble", "bare-implicit-vr"])
def test_preamble_less_dicom_is_read(tmp_path, file_meta):
    stored = df.ramp(12, 16, 300)
    path = df.write_dicom(tmp_path / "raw", stored, preamble=False, file_meta=file_meta)
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_image(path), _eight_bit(stored / 511.0))


def test_dicom_bytes_input_reads_like_a_file(tmp_path):
    stored = df.ramp(12, 16, 300)
    data = df.dicom_bytes(stored, photometric="MONOCHROME1")
    np.testing.assert_allclose(read_image(data), 1.0 - _eight_bit(stored / 511.0), atol=1e-6)


def test_image_info_reads_the_dicom_header(tmp_path):
    path = df.write_dicom(tmp_path / "info.dcm", df.ramp(20, 30, 4095), bits_stored=12)
    info = image_info(path)
    fields = (info.width, info.height, info.format, info.mode, info.bits)
    assert fields == (30, 20, "DICOM", "MONOCHROME2", 12)


def test_absurd_declared_dimensions_are_refused_before_decoding(tmp_path):
    def declare_huge(ds):
        ds.Rows, ds.Columns = 60000, 60000

    path = tmp_path / "bomb.dcm"
    path.write_bytes(df.dicom_bytes(df.ramp(4, 4, 10), edit=declare_huge))
    for call in (read_image, image_info):
        with pytest.raises(UnsupportedImageError, match="megapixels"):
            call(path)


def test_dicom_without_pixel_data_is_refused(tmp_path):
    path = tmp_path / "nopixels.dcm"
    path.write_bytes(df.dicom_bytes(df.ramp(4, 4, 10), edit=lambda ds: delattr(ds, "PixelData")))
    with pytest.raises(UnsupportedImageError, match="no pixel data"):
        read_image(path)


def test_truncated_dicom_is_refused(tmp_path):
    data = df.dicom_bytes(df.ramp(64, 64, 4095))
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsupportedImageError, match=r"cut\.dcm"):
        read_image(path)


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")  # pydicom's own note on the garbage
def test_garbage_after_dicm_magic_is_refused(tmp_path):
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    with pytest.raises(UnsupportedImageError, match=r"fake\.dcm"):
        read_image(path)


def test_constant_image_keeps_its_level_with_a_warning(tmp_path, caplog):
    path = df.write_dicom(tmp_path / "flat.dcm", np.full((8, 8), 7, dtype=np.uint16))
    with caplog.at_level(logging.WARNING, logger="pneumocxr.imaging"):
        out = read_image(path)
    assert out.shape == (8, 8) and np.all(out == np.float32(7) / 255.0)  # no stretch: stays dark
    assert any("same value" in r.getMessage() for r in caplog.records)
