"""What the prediction core accepts: a path, bytes, a 2-D array or a ``pydicom.Dataset``.

``load_input`` turns any of them into a ``LoadedInput``: the model's input square — produced by the
same decoder and the same rounding as the training cache (``imaging.read_image`` with the cache's
reduced-scale JPEG decode, then ``imaging.square_uint8``), so ``Predictor.predict(bytes)`` equals
what ``evaluate`` scores for that file — plus what the answer reports about the input: format,
size in pixels and bytes, sha256 of the content (the audit log's key; never the file name), and the
DICOM header record when there is one.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumocxr.errors import UnsupportedImageError
from pneumocxr.imaging import image_info, read_image, read_image_with_header, square_uint8
from pneumocxr.imaging.resize import reduce_for_model

__all__ = ["LoadedInput", "dicom_facts", "load_input"]


@dataclass
class LoadedInput:
    """One input, checked and described; ``square`` decodes it at a model's preprocessing."""

    name: str  # for messages: the path, or "<N bytes in memory>" / "<array …>" / "<DICOM dataset>"
    format: str  # "JPEG", "PNG", "DICOM" or "ARRAY"
    width: int
    height: int
    size_bytes: int | None  # the encoded content's size (None for an array)
    sha256: str  # of the encoded bytes (of the array's bytes, shape and dtype for an array)
    header: Any = None  # imaging's DICOM header record, or None
    _content: bytes | np.ndarray | None = field(default=None, repr=False)
    _squares: dict[tuple[int, str], np.ndarray] = field(default_factory=dict, repr=False)

    def square(self, size: int, resize_mode: str) -> np.ndarray:
        """(size, size) uint8: the model input at this preprocessing (decoded once per setting)."""
        key = (size, resize_mode)
        if key not in self._squares:
            if isinstance(self._content, np.ndarray):  # an array, or a DICOM decoded in full: reduce
                pixels = reduce_for_model(self._content, size)  # as read_image(min_size=) does
            else:  # the cache's decode: JPEG at reduced DCT scale when both sides stay >= size
                pixels = read_image(self._content, min_size=size)
            self._squares[key] = square_uint8(pixels, size, resize_mode)
        return self._squares[key]

    def pixels(self) -> np.ndarray:
        """(height, width) float32 in [0, 1]: the whole image at full resolution, as decoded for the
        model (DICOM: after its modality LUT and window) — what an overlay is drawn on."""
        if isinstance(self._content, np.ndarray):
            return self._content
        return read_image(self._content)


def load_input(source: Any) -> LoadedInput:
    """A ``LoadedInput`` for a path, bytes, 2-D array or pydicom Dataset (see the module docstring).

    Raises UnsupportedImageError naming the input for anything that is not a readable image, and
    TypeError for a value of the wrong type (a caller's bug).
    A ``LoadedInput`` is returned as it is (a caller that needs it, e.g. to explain the same input,
    loads once and predicts on it).
    """
    if isinstance(source, LoadedInput):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if _is_pydicom_dataset(source):
        return _from_bytes(_dataset_bytes(source), "<DICOM dataset>")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _from_bytes(data, f"<{len(data)} bytes in memory>")
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fspath(source))
        image_info(path)  # missing / folder / empty / not an image: the reader's error, naming the path
        return _from_bytes(path.read_bytes(), str(path))
    raise TypeError(
        f"predict takes a path, bytes, a 2-D numpy array or a pydicom Dataset, not {type(source).__name__}"
    )


def _from_bytes(data: bytes, name: str) -> LoadedInput:
    try:
        info = image_info(data)
        header, content = None, data
        if info.format == "DICOM":  # decoded once, here: pixels (no reduced-scale decode) and header
            content, header = read_image_with_header(data)
    except UnsupportedImageError as exc:
        raise UnsupportedImageError(name, exc.reason) from None
    return LoadedInput(
        name=name,
        format=info.format,
        width=info.width,
        height=info.height,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        header=header,
        _content=content,
    )


def _from_array(array: np.ndarray) -> LoadedInput:
    """A 2-D grayscale image: uint8 (read as value / 255, like an 8-bit file) or float in [0, 1]."""
    name = f"<array {array.dtype} {array.shape}>"
    if array.ndim != 2 or min(array.shape) < 1:
        raise UnsupportedImageError(name, "pass one 2-D grayscale image (H, W); convert colour images first")
    if array.dtype == np.uint8:
        pixels = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        pixels = array.astype(np.float32)
        if not np.isfinite(pixels).all() or pixels.min() < 0.0 or pixels.max() > 1.0:
            raise UnsupportedImageError(name, "float pixels must be finite and in [0, 1]; scale them first")
    else:
        raise UnsupportedImageError(
            name, f"{array.dtype} pixels are ambiguous; pass uint8, or float in [0, 1] after windowing"
        )
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).data)
    return LoadedInput(
        name=name,
        format="ARRAY",
        width=int(array.shape[1]),
        height=int(array.shape[0]),
        size_bytes=None,
        sha256=digest.hexdigest(),
        _content=pixels,
    )


def _is_pydicom_dataset(value: Any) -> bool:
    # Checked by type name first so that pydicom (~0.1 s) is imported only for datasets.
    if type(value).__name__ not in ("Dataset", "FileDataset"):
        return False
    from pydicom.dataset import Dataset

    return isinstance(value, Dataset)


def _dataset_bytes(dataset: Any) -> bytes:
    """A dataset as Part-10 bytes, so it takes the same reader (and digest) as an uploaded file."""
    from pydicom import dcmwrite

    buffer = io.BytesIO()
    try:
        dcmwrite(buffer, dataset, enforce_file_format=False)
    except Exception as exc:  # pydicom raises many types for an unwritable dataset
        raise UnsupportedImageError(
            "<DICOM dataset>", f"cannot be encoded ({type(exc).__name__}: {exc})"
        ) from None
    return buffer.getvalue()


def dicom_facts(header: Any) -> dict[str, Any]:
    """The header facts an answer reports (what the scope checks read) — no UIDs, no patient data
    other than the age the intended-use check needs."""
    if header is None:
        return {}
    keys = (
        "modality",
        "view_position",
        "body_part_examined",
        "patient_age_years",
        "photometric_interpretation",
    )
    return {key: getattr(header, key, None) for key in (*keys, "bits_stored")}
