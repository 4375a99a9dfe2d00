"""Which files a user means when they name files and folders of images (``predict``, ``explain``),
or list them in a manifest (``predict --manifest``).

Folders are searched recursively in sorted order; hidden folders and files are skipped. A file is a
candidate by its suffix — or by having none or a numeric one, because DICOM exports often do — and
the image readers decide from its content (never the name) what it really is.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from pneumocxr.errors import DatasetError, UnsupportedImageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom"})

__all__ = ["IMAGE_SUFFIXES", "collect_inputs", "read_path_manifest"]


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


def read_path_manifest(csv_path: str | os.PathLike) -> list[Path]:
    """The files a CSV manifest lists in its ``path`` column, in row order; relative paths are
    relative to the manifest's folder, other columns are ignored. Every bad row (empty path, a
    missing file, a file listed twice) is named with its line number before any work starts."""
    csv_path = Path(csv_path).expanduser()
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {(name or "").strip().lower(): name for name in (reader.fieldnames or [])}
            if "path" not in columns:
                raise DatasetError(
                    f"{csv_path}: no 'path' column in the header {list(reader.fieldnames or [])}; "
                    "the first line must name the columns, one of them path (one image file per row)"
                )
            rows = [(reader.line_num, (row.get(columns["path"]) or "").strip()) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{csv_path}: cannot read the manifest ({exc}); save it as UTF-8 CSV") from None
    files: list[Path] = []
    errors: list[str] = []
    first_line: dict[Path, int] = {}
    for line, text in rows:
        path = Path(text).expanduser()
        path = path if path.is_absolute() else csv_path.parent / path
        if not text:
            errors.append(f"line {line}: empty path")
        elif not path.is_file():
            errors.append(
                f"line {line}: file {path} not found (relative paths are relative to the CSV's folder)"
            )
        elif (key := path.resolve()) in first_line:
            errors.append(f"line {line}: {path} is already listed on line {first_line[key]}")
        else:
            first_line[key] = line
            files.append(path)
    if errors:
        shown = "; ".join(errors[:5]) + (f"; … and {len(errors) - 5} more" if len(errors) > 5 else "")
        raise DatasetError(f"{csv_path}: {len(errors)} bad row(s): {shown}. Fix these rows and rerun")
    if not files:
        raise DatasetError(f"{csv_path}: the manifest has a header but no rows; add one line per image")
    return files
