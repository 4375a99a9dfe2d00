"""Which files a user means when they name files and folders of images (``predict``, ``explain``).

Folders are searched recursively in sorted order; hidden folders and files are skipped. A file is a
candidate by its suffix — or by having none or a numeric one, because DICOM exports often do — and
the image readers decide from its content (never the name) what it really is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pneumocxr.errors import DatasetError, UnsupportedImageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom"})

__all__ = ["IMAGE_SUFFIXES", "collect_inputs"]


def _is_candidate(path: Path) -> bool:
    """Image suffixes, and no suffix or a numeric one (DICOM exports often have neither)."""
    suffix = path.suffix.lower()
    return suffix in IMAGE_SUFFIXES or suffix == "" or suffix[1:].isdigit()


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files named directly, plus the image files under each folder (recursively, sorted)."""
    if not inputs:
        raise DatasetError("no input given; name image files (PNG, JPEG, DICOM) or folders of them")
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and _is_candidate(p)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise DatasetError(f"{path}: no image files (.png, .jpg, .jpeg, .dcm) in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UnsupportedImageError(path, "no such file or folder; check the path")
    return files
