"""Where a record's pixels come from: an image file or a row of a MedMNIST ``.npz`` archive.

Files go through ``pneumocxr.imaging.read_image`` (the only place bytes become pixels). Archive
rows are already decoded ``uint8`` arrays, so they only need scaling. An ``NpzFile`` re-reads
(and decompresses) a whole array on every ``npz[key]``, so the arrays themselves are cached,
keyed by the file's modification time so that a rewritten archive is not served stale.
"""

from __future__ import annotations

import functools
import re
import zipfile
from pathlib import Path

import numpy as np

from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import DatasetError, UnsupportedImageError

_MEMBER = re.compile(r"^(\w+)\[(\d+)\]$")


def load_pixels(record: ImageRecord, *, min_size: int | None = None) -> np.ndarray:
    """The record's image as float32 H×W in [0, 1].

    ``min_size`` is passed to ``read_image`` for files; archive rows are returned at their
    stored size (there is nothing larger to decode).
    """
    if record.member is None:
        # Imported here: discovery uses this module for archive headers and should not pay for
        # loading the decoders (pydicom and friends) when it only lists files.
        from pneumocxr.imaging import read_image

        return read_image(record.path, min_size=min_size)
    match = _MEMBER.match(record.member)
    if match is None:
        raise UnsupportedImageError(
            record.display_name, "archive member must look like 'train_images[12]'; rediscover the dataset"
        )
    key, index = match.group(1), int(match.group(2))
    array = _npz_array(str(record.path), key, _mtime(record.path))
    if index >= array.shape[0]:
        raise UnsupportedImageError(
            record.display_name,
            f"row {index} is past the end ({array.shape[0]} rows); rediscover it",
        )
    return _to_gray_unit(array[index], record.display_name)


def npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Array name → shape for every array in an ``.npz``, read from the headers only.

    Discovery needs counts, not pixels: reading the ``.npy`` headers keeps it instant even for
    the 224×224 MedMNIST+ archives.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if not name.endswith(".npy"):
                    continue
                with archive.open(name) as handle:
                    version = np.lib.format.read_magic(handle)
                    if version == (1, 0):
                        shape, _, _ = np.lib.format.read_array_header_1_0(handle)
                    else:
                        shape, _, _ = np.lib.format.read_array_header_2_0(handle)
                shapes[name[: -len(".npy")]] = tuple(shape)
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DatasetError(f"{path}: not a readable .npz archive ({exc}); re-download it") from None
    return shapes


def npz_labels(path: Path, key: str) -> np.ndarray:
    """One label array of an archive, flattened to 1-D integers."""
    return np.asarray(_npz_array(str(path), key, _mtime(path))).reshape(-1)


def _mtime(path: Path) -> int:
    try:
        return Path(path).stat().st_mtime_ns
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the archive ({exc}); check the path") from None


@functools.lru_cache(maxsize=16)
def _npz_array(path: str, key: str, mtime_ns: int) -> np.ndarray:
    """One array of an archive, loaded once per (file, key, version). ``allow_pickle=False``:
    an archive is data, never code."""
    del mtime_ns  # only part of the cache key
    try:
        with np.load(path, allow_pickle=False) as npz:
            if key not in npz.files:
                raise DatasetError(
                    f"{path}: no array {key!r} (has {sorted(npz.files)}); rediscover the dataset"
                )
            return npz[key]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: cannot read array {key!r} ({exc}); re-download the archive") from None


def _to_gray_unit(row: np.ndarray, source: str) -> np.ndarray:
    """A stored row (H×W, or H×W×C for colour MedMNIST sets) as float32 grayscale in [0, 1]."""
    if row.ndim == 3 and row.shape[-1] in (1, 3):
        row = row.mean(axis=-1)
    if row.ndim != 2:
        raise UnsupportedImageError(source, f"archive row has shape {row.shape}; expected H×W or H×W×C")
    if row.dtype == np.uint8:
        return row.astype(np.float32) / 255.0
    if np.issubdtype(row.dtype, np.floating) and row.size and row.min() >= 0.0 and row.max() <= 1.0:
        return row.astype(np.float32)
    raise UnsupportedImageError(
        source, f"archive row has dtype {row.dtype}; expected uint8 or floats in [0, 1]"
    )
