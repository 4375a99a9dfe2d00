"""Find the labelled images in whatever the user points at, and say clearly when we cannot.

Three layouts are recognised (``discover`` picks one):

- ``kermany``: ``ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/`` as in the public release, folder names
  in any case and any subset of the splits. ``ROOT`` may also be a folder that holds exactly one
  such tree up to three levels down, so the Kaggle archive's ``chest_xray/chest_xray`` nesting
  (or any extract-into-a-subfolder) works without the user finding the right level. A folder with
  ``NORMAL/`` and ``PNEUMONIA/`` directly inside is one split: the folder's own name when it is a
  split name (``chest_xray/train`` → ``train``), else ``test`` (a user's own folder to evaluate).
- ``manifest``: a CSV (or a folder holding ``manifest.csv``) with header ``path,label`` and optional
  ``patient_id`` and ``split`` columns, for data that does not live in class folders.
- ``npz``: a MedMNIST archive (``pneumoniamnist.npz``) with ``{split}_images`` / ``{split}_labels``.

Files that cannot be images are skipped *and logged*: a silently dropped folder of data is the
kind of mistake that only shows up as a mysteriously worse model.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumocxr.data.patients import parse_filename
from pneumocxr.data.records import ImageRecord
from pneumocxr.data.sources import npz_labels, npz_shapes
from pneumocxr.errors import DatasetError
from pneumocxr.labels import CLASS_NAMES, NORMAL, SPLITS, SUBLABEL_NORMAL, SUBLABEL_UNKNOWN

logger = logging.getLogger(__name__)

SUPPORTED_LAYOUTS = (
    "supported layouts: a folder ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/ (any subset of splits); "
    "a folder with NORMAL/ and PNEUMONIA/ directly inside; a CSV manifest with header "
    "path,label[,patient_id][,split] (or a folder holding manifest.csv); a MedMNIST .npz with "
    "{train,val,test}_images and _labels arrays"
)
# DICOM is recognised by content later, so extension-less files (and UID-style names such as
# 1.2.840.113619.2.55, whose "extension" is digits) are candidates too.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".dcm", ".dicom"})
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_JUNK_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini"})
_MAX_NESTING = 3


@dataclass(frozen=True, repr=False)
class Dataset:
    """Every labelled image found, in a stable order (sorted by path and member)."""

    root: Path  # the tree folder, the CSV file or the .npz file actually used
    layout: str  # "kermany" | "manifest" | "npz"
    records: tuple[ImageRecord, ...]

    def __repr__(self) -> str:  # short: a notebook shows it (thousands of records otherwise)
        counts = "; ".join(
            f"{s}: " + ", ".join(f"{n} {c}" for c, n in per.items()) for s, per in self.counts().items()
        )
        return f"Dataset({str(self.root)!r}, {self.layout}, {len(self.records)} images: {counts})"

    def splits(self) -> list[str]:
        """Splits present, in train/val/test order."""
        present = {r.split for r in self.records}
        return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))

    def in_split(self, split: str) -> list[ImageRecord]:
        """Records of one split (empty when the split is absent)."""
        return [r for r in self.records if r.split == split]

    def counts(self) -> dict[str, dict[str, int]]:
        """split → class name → number of images (both classes always listed)."""
        table: dict[str, dict[str, int]] = {}
        for split in self.splits():
            per_class = Counter(r.label for r in self.records if r.split == split)
            table[split] = {name: per_class.get(i, 0) for i, name in enumerate(CLASS_NAMES)}
        return table


def discover(root: str | os.PathLike) -> Dataset:
    """Recognise the dataset at ``root`` (folder, CSV or .npz); DatasetError naming the supported
    layouts when nothing usable is there."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"{path} does not exist; point at your dataset ({SUPPORTED_LAYOUTS})")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return _from_manifest(path)
        if suffix == ".npz":
            return _from_npz(path)
        raise DatasetError(f"{path} is neither a .csv manifest nor a .npz archive; {SUPPORTED_LAYOUTS}")
    manifest = next((p for p in _visible(path) if p.name.lower() == "manifest.csv" and p.is_file()), None)
    if manifest is not None:
        return _from_manifest(manifest)
    found = _find_tree(path)
    if found is not None:
        return _from_tree(*found)
    archives = [p for p in _visible(path) if p.suffix.lower() == ".npz" and p.is_file()]
    if len(archives) == 1:
        return _from_npz(archives[0])
    raise DatasetError(f"{path}: no dataset found; {SUPPORTED_LAYOUTS}")


# ----------------------------------------------------------------------------- class-folder trees


def _visible(folder: Path) -> list[Path]:
    """Children that are not hidden files, macOS resource forks or OS junk, sorted by name."""
    try:
        children = sorted(folder.iterdir())
    except OSError as exc:
        raise DatasetError(f"{folder}: cannot list the folder ({exc}); check its permissions") from None
    return [c for c in children if not c.name.startswith(".") and c.name.lower() not in _JUNK_NAMES]


def _named_dirs(folder: Path, names: dict[str, str]) -> dict[str, Path]:
    """Sub-folders whose lower-cased name is in ``names`` → canonical name; duplicates are an error."""
    found: dict[str, Path] = {}
    for child in _visible(folder):
        canonical = names.get(child.name.lower())
        if canonical is None or not child.is_dir():
            continue
        if canonical in found:
            raise DatasetError(
                f"{folder}: both {found[canonical].name}/ and {child.name}/ mean {canonical!r}; "
                "merge or rename one of them"
            )
        found[canonical] = child
    return found


_CLASS_DIRS = {name.lower(): name for name in CLASS_NAMES}


def _tree_at(folder: Path) -> dict[str, dict[str, Path]] | None:
    """split → class → folder when ``folder`` is a class-folder tree, else None."""
    splits = {s: _named_dirs(d, _CLASS_DIRS) for s, d in _named_dirs(folder, _SPLIT_ALIASES).items()}
    splits = {s: classes for s, classes in splits.items() if classes}
    if splits:
        return splits
    classes = _named_dirs(folder, _CLASS_DIRS)
    if classes:
        return {_SPLIT_ALIASES.get(folder.name.lower(), "test"): classes}
    return None


def _find_tree(root: Path) -> tuple[Path, dict[str, dict[str, Path]]] | None:
    """The shallowest class-folder tree at or below ``root`` (at most three levels down).

    Two trees at the same depth are ambiguous, so we ask instead of guessing.
    """
    level = [root]
    for _ in range(_MAX_NESTING + 1):
        hits = [(folder, tree) for folder in level if (tree := _tree_at(folder)) is not None]
        if len(hits) == 1:
            if hits[0][0] != root:
                logger.info("using the dataset tree at %s (found inside %s)", hits[0][0], root)
            return hits[0]
        if len(hits) > 1:
            names = ", ".join(str(folder) for folder, _ in hits)
            raise DatasetError(f"{root}: several dataset folders found ({names}); point at one of them")
        level = [child for folder in level for child in _visible(folder) if child.is_dir()]
    return None


def _is_candidate(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix == "" or suffix[1:].isdigit()


def _scan(folder: Path, skipped: Counter, examples: dict[str, Path]) -> list[Path]:
    """Candidate image files under ``folder`` (recursively), counting what is skipped."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d.lower() not in _JUNK_NAMES)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or name.lower() in _JUNK_NAMES:
                logger.debug("ignoring hidden/system file %s", path)
            elif _is_candidate(path):
                files.append(path)
            else:
                suffix = path.suffix.lower()
                skipped[suffix] += 1
                examples.setdefault(suffix, path)
    return files


def _from_tree(root: Path, tree: dict[str, dict[str, Path]]) -> Dataset:
    records: list[ImageRecord] = []
    skipped: Counter = Counter()
    examples: dict[str, Path] = {}
    for split, classes in tree.items():
        _log_unused(next(iter(classes.values())).parent, set(classes.values()))
        for class_name, folder in classes.items():
            label = CLASS_NAMES.index(class_name)
            files = _scan(folder, skipped, examples)
            if not files:
                logger.warning(
                    "%s holds no image files: split %r has no %s images", folder, split, class_name
                )
            for path in files:
                patient_id, sublabel = parse_filename(path.name, label)
                records.append(ImageRecord(path, label, split, patient_id, sublabel))
    if skipped:
        detail = ", ".join(
            f"{suffix} ×{n} (e.g. {examples[suffix]})" for suffix, n in sorted(skipped.items())
        )
        logger.warning("skipped %d non-image file(s) under %s: %s", sum(skipped.values()), root, detail)
    if not records:
        raise DatasetError(f"{root}: class folders found but no image files in them; {SUPPORTED_LAYOUTS}")
    return Dataset(root, "kermany", tuple(sorted(records, key=_order)))


def _log_unused(split_folder: Path, used: set[Path]) -> None:
    """Warn about anything beside the class folders: it may be data the user expects us to use."""
    unused = [p.name + ("/" if p.is_dir() else "") for p in _visible(split_folder) if p not in used]
    if unused:
        logger.warning(
            "ignoring %s in %s: only NORMAL/ and PNEUMONIA/ folders are read", ", ".join(unused), split_folder
        )


def _order(record: ImageRecord) -> tuple[str, str, str]:
    return (record.split, str(record.path), record.member or "")


# ----------------------------------------------------------------------------- CSV manifests


def _from_manifest(csv_path: Path) -> Dataset:
    """Records from a CSV manifest; every bad row is reported with its line number."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {(name or "").strip().lower(): name for name in (reader.fieldnames or [])}
            missing = [c for c in ("path", "label") if c not in columns]
            if missing:
                raise DatasetError(
                    f"{csv_path}: missing column(s) {', '.join(missing)} in the header "
                    f"{list(reader.fieldnames or [])}; the first line must be path,label[,patient_id][,split]"
                )
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{csv_path}: cannot read the manifest ({exc}); save it as UTF-8 CSV") from None
    records: list[ImageRecord] = []
    errors: list[str] = []
    first_line: dict[Path, int] = {}
    for line, row in rows:
        values = {key: (row.get(name) or "").strip() for key, name in columns.items()}
        try:
            record = _manifest_record(csv_path.parent, values, "split" in columns)
        except ValueError as exc:
            errors.append(f"line {line}: {exc}")
            continue
        key = record.path.resolve()
        if key in first_line:
            errors.append(f"line {line}: {record.path} is already listed on line {first_line[key]}")
            continue
        first_line[key] = line
        records.append(record)
    if errors:
        shown = "; ".join(errors[:5]) + (f"; … and {len(errors) - 5} more" if len(errors) > 5 else "")
        raise DatasetError(f"{csv_path}: {len(errors)} bad row(s): {shown}. Fix these rows and rerun")
    if not records:
        raise DatasetError(f"{csv_path}: the manifest has a header but no rows; add one line per image")
    return Dataset(csv_path, "manifest", tuple(sorted(records, key=_order)))


def _manifest_record(base: Path, values: dict[str, str], has_split: bool) -> ImageRecord:
    """One manifest row → record; ValueError with a user-facing reason for a bad row."""
    if not values["path"]:
        raise ValueError("empty path")
    path = Path(values["path"]).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ValueError(f"file {path} not found (relative paths are relative to the CSV's folder)")
    label = _parse_label(values["label"])
    split = "train"
    if has_split:
        split = _SPLIT_ALIASES.get(values["split"].lower(), "")
        if not split:
            raise ValueError(f"split {values['split']!r} is not one of train, val, test")
    patient_id, sublabel = parse_filename(path.name, label)
    return ImageRecord(path, label, split, values.get("patient_id") or patient_id, sublabel)


def _parse_label(text: str) -> int:
    upper = text.upper()
    if upper in CLASS_NAMES:
        return CLASS_NAMES.index(upper)
    if text in ("0", "1"):
        return int(text)
    raise ValueError(f"label {text!r} is not NORMAL, PNEUMONIA, 0 or 1")


# ----------------------------------------------------------------------------- MedMNIST archives


def _from_npz(path: Path) -> Dataset:
    """Records for a MedMNIST archive, one per row.

    MedMNIST carries no patient information, so every row is its own "patient"
    (``mnist-{split}-{i}``): patient-level splitting degrades to image-level splitting, and the
    same child's images may land on both sides of a carved split. Say so when reporting results.
    """
    shapes = npz_shapes(path)
    records: list[ImageRecord] = []
    for split in SPLITS:
        images_key, labels_key = f"{split}_images", f"{split}_labels"
        if images_key not in shapes and labels_key not in shapes:
            continue
        if images_key not in shapes or labels_key not in shapes:
            raise DatasetError(f"{path}: has only one of {images_key}/{labels_key}; both are needed")
        n, ndim = shapes[images_key][0], len(shapes[images_key])
        labels = npz_labels(path, labels_key)
        if ndim not in (3, 4) or len(labels) != n:
            raise DatasetError(
                f"{path}: {images_key} has shape {shapes[images_key]} and {labels_key} "
                f"{shapes[labels_key]}; expected N×H×W images and N labels"
            )
        unexpected = sorted(set(np.unique(labels).tolist()) - {0, 1})
        if unexpected:
            raise DatasetError(
                f"{path}: {labels_key} has values {unexpected}; only binary 0/1 labels "
                "(PneumoniaMNIST: 1 = pneumonia) are supported"
            )
        for i, label in enumerate(labels.tolist()):
            sublabel = SUBLABEL_NORMAL if label == NORMAL else SUBLABEL_UNKNOWN
            member = f"{images_key}[{i}]"
            records.append(ImageRecord(path, int(label), split, f"mnist-{split}-{i}", sublabel, member))
    if not records:
        raise DatasetError(
            f"{path}: no {{train,val,test}}_images/_labels arrays (has {sorted(shapes)}); {SUPPORTED_LAYOUTS}"
        )
    return Dataset(path, "npz", tuple(records))
