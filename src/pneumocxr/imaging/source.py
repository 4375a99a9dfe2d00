"""Where an image comes from (a path or bytes), what it is (magic bytes), and how big it may be.

Format detection reads the first bytes, never the extension: hospital exports routinely name
DICOM files ``.jpg`` or give them no extension at all, and a renamed PNG is still a PNG.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pneumocxr.errors import UnsupportedImageError

# Refuse anything that declares more pixels than this before decoding it. Full-size chest
# radiographs are at most ~3000×3000 (9 MP); 100 MP is already a ~400 MB float32 array, so a
# larger declaration is a decompression bomb or a corrupt header, not an X-ray.
MAX_PIXELS = 100_000_000

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"
HEADER_BYTES = DICOM_MAGIC_OFFSET + len(DICOM_MAGIC)

# Groups a DICOM data set written without the 128-byte preamble can start with: the file meta
# group, or (no file meta at all) the identifying group 0008.
_RAW_DICOM_FIRST_GROUPS = (0x0002, 0x0008)


@dataclass(frozen=True)
class ImageInfo:
    """What a header says about an image, without decoding its pixels."""

    width: int  # columns, pixels (after EXIF orientation for JPEG/PNG, as read_image returns them)
    height: int  # rows, pixels
    format: str  # "JPEG", "PNG" or "DICOM"
    mode: str  # Pillow mode ("L", "I;16", "RGB" …) or the DICOM PhotometricInterpretation
    bits: int  # bits per sample: 8 / 16 for JPEG/PNG (1 for bilevel), BitsStored for DICOM


@dataclass(frozen=True)
class Source:
    """An image source that has been checked to exist and be non-empty.

    ``name`` is what error messages and log lines call it. Files are opened only inside
    ``with source.open()`` blocks so that no descriptor outlives a read.
    """

    name: str
    path: Path | None
    data: bytes | None
    header: bytes  # the first HEADER_BYTES bytes (fewer for a smaller file)

    def open(self) -> BinaryIO:
        """A fresh binary stream positioned at the start; the caller closes it (use ``with``)."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None  # internal invariant: exactly one of path/data is set
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise UnsupportedImageError(self.name, f"cannot be opened ({exc.strerror or exc})") from None

    def fail(self, reason: str) -> UnsupportedImageError:
        """The error to raise for this source (callers write ``raise source.fail(...)``)."""
        return UnsupportedImageError(self.name, reason)


def load_source(source: str | os.PathLike | bytes) -> Source:
    """Check that ``source`` exists and is non-empty and read its first bytes.

    A path that is missing, a folder, unreadable or empty is the user's mistake, so it becomes an
    UnsupportedImageError naming the path; a value of the wrong type is the caller's bug (TypeError).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = f"<{len(data)} bytes in memory>"
        if not data:
            raise UnsupportedImageError(name, "empty input (0 bytes); pass the image file's contents")
        return Source(name=name, path=None, data=data, header=data[:HEADER_BYTES])
    if not isinstance(source, (str, os.PathLike)):
        kind = type(source).__name__
        raise TypeError(f"image source must be a path or bytes (or a pydicom Dataset), not {kind}")
    path = Path(os.fspath(source))
    name = str(path)
    if not path.exists():
        raise UnsupportedImageError(name, "file not found; check the path")
    if path.is_dir():
        raise UnsupportedImageError(name, "is a folder, not an image file")
    try:
        with path.open("rb") as fh:
            header = fh.read(HEADER_BYTES)
    except OSError as exc:
        raise UnsupportedImageError(name, f"cannot be read ({exc.strerror or exc})") from None
    if not header:
        raise UnsupportedImageError(name, "file is empty (0 bytes); re-copy or re-export it")
    return Source(name=name, path=path, data=None, header=header)


def detect_format(header: bytes) -> str | None:
    """ "JPEG", "PNG" or "DICOM" from the magic bytes, or None when none matches.

    "DICOM" is also returned for a preamble-less data set that merely *looks* like one; the DICOM
    reader confirms it (force-parse, then require image attributes) before trusting it.
    """
    if header.startswith(JPEG_MAGIC):
        return "JPEG"
    if header.startswith(PNG_MAGIC):
        return "PNG"
    if header[DICOM_MAGIC_OFFSET:HEADER_BYTES] == DICOM_MAGIC:
        return "DICOM"
    if looks_like_raw_dicom(header):
        return "DICOM"
    return None


def has_dicom_preamble(header: bytes) -> bool:
    """True for a standard DICOM file (Part 10: preamble + "DICM")."""
    return header[DICOM_MAGIC_OFFSET:HEADER_BYTES] == DICOM_MAGIC


def looks_like_raw_dicom(header: bytes) -> bool:
    """Heuristic for a DICOM data set written without the 128-byte preamble.

    The first element must be a plausible tag of group 0002 or 0008 followed by either an
    explicit VR (two upper-case letters) or an implicit 32-bit length that fits in a file. This
    rejects text and other formats cheaply; the reader still requires Rows/Columns afterwards.
    """
    if len(header) < 8:
        return False
    group, element = struct.unpack_from("<HH", header, 0)
    if group not in _RAW_DICOM_FIRST_GROUPS or element > 0x0100:
        return False
    vr = header[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    (length,) = struct.unpack_from("<I", header, 4)
    return 0 < length < 1024


def brief_error(exc: BaseException) -> str:
    """A library exception as one short line ("Type: first line") for an error message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
