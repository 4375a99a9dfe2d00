"""Bad input of every kind becomes UnsupportedImageError naming the file and the reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from pneumocxr.errors import PneumoCXRError, UnsupportedImageError
from pneumocxr.imaging import MAX_PIXELS, image_info, read_image


def _noise_image(width: int = 160, height: int = 120) -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 256, (height, width), dtype=np.uint8))


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG header that declares a huge size (the pixel data is a few bytes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _expect_failure(source, match: str, call=read_image) -> UnsupportedImageError:
    with pytest.raises(UnsupportedImageError, match=match) as info:
        call(source)
    assert isinstance(info.value, PneumoCXRError)  # the CLI's one-line-and-exit-2 contract
    return info.value


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nope.jpeg"
    for call in (read_image, image_info):
        error = _expect_failure(path, "file not found", call)
        assert error.source == str(path) and str(path) in str(error)


def test_folder_is_not_an_image(tmp_path):
    _expect_failure(tmp_path, "is a folder")


def test_empty_file_and_empty_bytes_are_refused(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _expect_failure(path, "empty")
    _expect_failure(path, "empty", image_info)
    _expect_failure(b"", "empty")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_jpeg_is_refused_not_padded_grey(tmp_path, keep):
    data = _encode(_noise_image(), "JPEG", quality=90)
    path = tmp_path / "cut.jpeg"
    path.write_bytes(data[: int(len(data) * keep)])
    _expect_failure(path, r"cut\.jpeg: truncated or corrupt JPEG")


@pytest.mark.parametrize("drop", [12, 20, "half"])
def test_truncated_png_is_refused_even_when_only_the_tail_is_missing(tmp_path, drop):
    data = _encode(_noise_image(), "PNG")
    cut = len(data) // 2 if drop == "half" else len(data) - drop
    path = tmp_path / "cut.png"
    path.write_bytes(data[:cut])
    _expect_failure(path, r"cut\.png: truncated or corrupt PNG")


def test_corrupt_png_crc_is_refused(tmp_path):
    data = bytearray(_encode(_noise_image(), "PNG"))
    data[60] ^= 0xFF  # inside the IDAT payload: its CRC no longer matches
    path = tmp_path / "flipped.png"
    path.write_bytes(bytes(data))
    _expect_failure(path, r"flipped\.png")


def test_loading_never_turns_on_truncated_image_tolerance(tmp_path):
    path = tmp_path / "ok.jpeg"
    path.write_bytes(_encode(_noise_image(), "JPEG"))
    read_image(path, min_size=32)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("content", [b"hello, a text file\n" * 10, b"\x00" * 300, b"PK\x03\x04zipzip"])
def test_non_images_are_refused(tmp_path, content):
    path = tmp_path / "notes.jpg"
    path.write_bytes(content)
    _expect_failure(path, r"notes\.jpg: not a JPEG, PNG or DICOM image")
    _expect_failure(path, "not a JPEG, PNG or DICOM image", image_info)


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "TIFF", "WEBP"])
def test_other_image_formats_are_named_in_the_refusal(tmp_path, fmt):
    path = tmp_path / "scan.img"
    path.write_bytes(_encode(_noise_image(32, 24), fmt))
    _expect_failure(path, f"{fmt} images are not supported; convert it to PNG")


@pytest.mark.parametrize("side", [12_000, 20_000])  # 144 MP: over our limit; 400 MP: Pillow's own error
def test_decompression_bomb_png_is_refused_from_its_header(tmp_path, side):
    assert side * side > MAX_PIXELS
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(side, side))
    for call in (read_image, image_info):
        _expect_failure(path, r"bomb\.png: .*decompression bomb", call)


def test_image_just_under_the_pixel_limit_is_not_called_a_bomb(tmp_path):
    path = tmp_path / "tall.png"
    path.write_bytes(_png_declaring(1, 5000))
    info = image_info(path)  # header only: the (fake) pixel data is never decoded
    assert (info.width, info.height) == (1, 5000)


def test_wrong_argument_type_is_a_type_error():
    with pytest.raises(TypeError, match="path or bytes"):
        read_image(12345)  # type: ignore[arg-type]
