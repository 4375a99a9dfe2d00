"""``check_dataset``: what is in a dataset and what is wrong with it, before any training.

The report answers the questions that silently spoil a chest X-ray experiment: how many images
per split and class (and bacterial/viral), which files cannot be decoded, which images are
byte-identical or near-identical copies — within a split, or across splits where they would
leak — and which patient ids appear in more than one split.

A patient id shared between the *official* splits is reported as information, not leakage:
in the Kermany release ``personN`` numbers repeat between train and test without any image in
common (see the data README). Leakage is a duplicated image across splits, which the duplicate
groups show directly.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pneumocxr.data.discovery import Dataset
from pneumocxr.data.duplicates import (
    DEFAULT_HASH_SIZE,
    DEFAULT_NEAR_THRESHOLD,
    DuplicateGroup,
    Fingerprint,
    exact_groups,
    fingerprint_all,
    hamming_pairs,
    near_groups,
)
from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import ConfigError
from pneumocxr.labels import CLASS_NAMES, SUBLABEL_NORMAL, SUBLABEL_UNKNOWN, SUBLABELS

logger = logging.getLogger(__name__)

REPORT_FORMAT = "pneumocxr.data_check/1"  # bump when to_dict()'s keys change meaning
MAX_LISTED = 20  # items of each kind in the human summary (format_report); the JSON has them all
SHARED_PATIENT_NOTE = (
    "patient ids are only meaningful within one release folder: in the Kermany release personN numbers "
    "repeat between the official splits without any image in common, so a shared id is not leakage by "
    "itself; leakage is an image duplicated across splits (see cross-split duplicate groups)"
)


@dataclass(frozen=True)
class UnreadableFile:
    """A file that is in the dataset but cannot be decoded."""

    path: str
    split: str
    label: str
    reason: str


@dataclass(frozen=True)
class SharedPatient:
    """A patient id found in more than one split."""

    patient_id: str
    images: dict[str, int]  # split → number of images with this id
    duplicated_across_splits: bool  # one of its images has a copy (exact or near) in another split


@dataclass
class CheckReport:
    """Everything ``check_dataset`` found; ``to_dict`` is the JSON the CLI writes."""

    root: str
    layout: str
    n_images: int
    counts: dict[str, dict[str, int]]  # split → class name → images
    sublabel_counts: dict[str, dict[str, int]]  # split → normal/bacterial/viral/unknown → images
    unreadable: list[UnreadableFile]
    exact_groups: list[DuplicateGroup]
    near_groups: list[DuplicateGroup]
    near_pairs: int  # pairs within the threshold whose bytes differ
    near_threshold: int
    hash_bits: int
    shared_patients: list[SharedPatient]
    seconds: float  # wall time of the whole check
    timings: dict[str, float] = field(default_factory=dict)  # phase → seconds

    @property
    def ok(self) -> bool:
        """True when every file decoded (duplicates are reported, not failures)."""
        return not self.unreadable

    @property
    def leaking_groups(self) -> list[DuplicateGroup]:
        """Duplicate groups (exact or near) that span more than one split."""
        return [g for g in self.exact_groups + self.near_groups if g.cross_split]

    @property
    def label_conflicts(self) -> list[DuplicateGroup]:
        """Duplicate groups whose copies carry different class labels."""
        return [g for g in self.exact_groups + self.near_groups if len(g.labels) > 1]

    def to_dict(self) -> dict:
        return {
            "format": REPORT_FORMAT,
            "root": self.root,
            "layout": self.layout,
            "n_images": self.n_images,
            "counts": self.counts,
            "sublabel_counts": self.sublabel_counts,
            "unreadable": [vars(u) for u in self.unreadable],
            "exact_duplicates": {
                "method": "sha256 of the file bytes",
                **_group_stats(self.exact_groups),
                "groups": [g.to_dict() for g in self.exact_groups],
            },
            "near_duplicates": {
                "method": f"imagehash.phash ({self.hash_bits} bits), Hamming distance <= threshold",
                "threshold": self.near_threshold,
                "hash_bits": self.hash_bits,
                "pairs": self.near_pairs,
                **_group_stats(self.near_groups),
                "groups": [g.to_dict() for g in self.near_groups],
            },
            "label_conflicts": len(self.label_conflicts),
            "shared_patients": {
                "note": SHARED_PATIENT_NOTE,
                "n_patients": len(self.shared_patients),
                "with_duplicated_images": sum(p.duplicated_across_splits for p in self.shared_patients),
                "patients": [vars(p) for p in self.shared_patients],
            },
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def write_json(self, path: str | Path) -> Path:
        """Write ``to_dict()`` as indented JSON (parent folders created); returns the path."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(
                f"cannot write the check report to {path} ({exc}); choose a writable --out"
            ) from None
        return path


def _group_stats(groups: list[DuplicateGroup]) -> dict[str, int]:
    return {
        "n_groups": len(groups),
        "n_files": sum(len(g.paths) for g in groups),
        "within_split": sum(not g.cross_split for g in groups),
        "across_splits": sum(g.cross_split for g in groups),
        "same_patient": sum(g.same_patient for g in groups),
    }


def check_dataset(
    dataset: Dataset,
    *,
    near_threshold: int = DEFAULT_NEAR_THRESHOLD,
    hash_size: int = DEFAULT_HASH_SIZE,
    workers: int | None = None,
) -> CheckReport:
    """Count, decode, hash and cross-reference every image of ``dataset``.

    ``near_threshold``: the largest Hamming distance between perceptual hashes (of
    ``hash_size``² bits) still called a near duplicate. ``workers``: decoding processes
    (None = one per available CPU). Unreadable files are reported, never raised.
    """
    hash_bits = hash_size * hash_size
    if not 0 <= near_threshold < hash_bits:
        raise ConfigError(
            f"near_threshold={near_threshold}; use 0..{hash_bits - 1} (bits of difference between "
            f"{hash_bits}-bit hashes; default {DEFAULT_NEAR_THRESHOLD})"
        )
    records = list(dataset.records)
    started = time.perf_counter()
    prints = fingerprint_all(records, hash_size=hash_size, workers=workers)
    hashed = time.perf_counter()
    unreadable = [
        UnreadableFile(r.display_name, r.split, _class_name(r.label), fp.reason or "unknown")
        for r, fp in zip(records, prints)
        if fp.reason is not None
    ]
    for bad in unreadable:
        logger.warning("unreadable: %s (%s)", bad.path, bad.reason)
    good = [i for i, fp in enumerate(prints) if fp.reason is None]
    good_records = [records[i] for i in good]
    digests = [prints[i].digest for i in good]
    exact = exact_groups(good_records, digests)
    near, n_near_pairs = _near(good_records, [prints[i] for i in good], digests, near_threshold)
    finished = time.perf_counter()
    report = CheckReport(
        root=str(dataset.root),
        layout=dataset.layout,
        n_images=len(records),
        counts=dataset.counts(),
        sublabel_counts=_sublabel_counts(dataset),
        unreadable=unreadable,
        exact_groups=exact,
        near_groups=near,
        near_pairs=n_near_pairs,
        near_threshold=near_threshold,
        hash_bits=hash_bits,
        shared_patients=_shared_patients(dataset, exact + near),
        seconds=finished - started,
        timings={"decode_and_hash": hashed - started, "compare": finished - hashed},
    )
    logger.info(
        "checked %d images in %.1f s: %d unreadable, %d exact and %d near duplicate groups",
        *(len(records), report.seconds, len(unreadable), len(exact), len(near)),
    )
    return report


def _near(
    records: list[ImageRecord], prints: list[Fingerprint], digests: list[str | None], threshold: int
) -> tuple[list[DuplicateGroup], int]:
    if len(records) < 2:
        return [], 0
    hashes = np.stack([fp.phash for fp in prints])  # (N, W) uint64
    return near_groups(records, digests, hamming_pairs(hashes, threshold))


def _sublabel_counts(dataset: Dataset) -> dict[str, dict[str, int]]:
    """split → sub-label → images; ``unknown`` is listed only when some image has it."""
    table: dict[str, dict[str, int]] = {}
    for split in dataset.splits():
        counts = Counter(r.sublabel for r in dataset.records if r.split == split)
        row = {name: counts.get(name, 0) for name in SUBLABELS}
        row.update({name: n for name, n in sorted(counts.items()) if name not in row})
        if not row.get(SUBLABEL_UNKNOWN):
            row.pop(SUBLABEL_UNKNOWN, None)
        table[split] = row
    return table


def _shared_patients(dataset: Dataset, groups: list[DuplicateGroup]) -> list[SharedPatient]:
    per_patient: dict[str, Counter] = defaultdict(Counter)
    for record in dataset.records:
        per_patient[record.patient_id][record.split] += 1
    leaking = {p for g in groups if g.cross_split for p in g.patients}
    order = {s: i for i, s in enumerate(dataset.splits())}
    return [
        SharedPatient(pid, dict(sorted(splits.items(), key=lambda kv: order[kv[0]])), pid in leaking)
        for pid, splits in sorted(per_patient.items())
        if len(splits) > 1
    ]


def _class_name(label: int) -> str:
    return CLASS_NAMES[label] if 0 <= label < len(CLASS_NAMES) else str(label)


def format_report(report: CheckReport, max_listed: int = MAX_LISTED, full: str = "--json") -> str:
    """The human summary of a check report (``pneumocxr data check`` and ``pneumocxr run`` print it);
    ``full`` says where the items beyond ``max_listed`` can be seen."""
    lines = [f"dataset: {report.root} ({report.layout} layout), {report.n_images:,} images"]
    lines += _count_table(report)
    lines.append(f"unreadable files: {len(report.unreadable)}")
    lines += [f"  {_short(u.path, report.root)}: {u.reason}" for u in report.unreadable[:max_listed]]
    lines += _more(len(report.unreadable), max_listed, full)
    lines.append(_group_line("exact duplicates (sha256 of bytes)", report.exact_groups))
    near = f"near duplicates ({report.hash_bits}-bit phash, distance <= {report.near_threshold})"
    lines.append(_group_line(near, report.near_groups) + f", {report.near_pairs} pairs of different files")
    for title, groups in (("exact", report.exact_groups), ("near", report.near_groups)):
        lines += [f"  {title}: {_describe(g, report.root)}" for g in groups[:max_listed]]
        lines += _more(len(groups), max_listed, full)
    leaking, conflicts = report.leaking_groups, report.label_conflicts
    lines.append(f"duplicate groups across splits (leakage): {len(leaking)}")
    lines.append(f"duplicate groups with conflicting labels: {len(conflicts)}")
    shared = report.shared_patients
    duplicated = sum(p.duplicated_across_splits for p in shared)
    lines.append(
        f"patient ids in more than one split: {len(shared)} (information only: ids such as personN repeat "
        f"across the official splits without shared images); with images duplicated across them: {duplicated}"
    )
    lines.append(f"time: {report.seconds:.1f} s")
    return "\n".join(lines)


def _count_table(report: CheckReport) -> list[str]:
    present = {name for row in report.sublabel_counts.values() for name in row}
    ordered = (*SUBLABELS, *sorted(present - set(SUBLABELS)))
    subs = [s for s in ordered if s in present and s != SUBLABEL_NORMAL]
    header = f"  {'split':<8}{'NORMAL':>9}{'PNEUMONIA':>11}" + "".join(f"{s:>11}" for s in subs)
    lines = [header]
    for split, per_class in report.counts.items():
        row = report.sublabel_counts.get(split, {})
        cells = f"{per_class.get('NORMAL', 0):>9,}{per_class.get('PNEUMONIA', 0):>11,}"
        lines.append(f"  {split:<8}{cells}" + "".join(f"{row.get(s, 0):>11,}" for s in subs))
    return lines


def _group_line(title: str, groups: list[DuplicateGroup]) -> str:
    files = sum(len(g.paths) for g in groups)
    within = sum(not g.cross_split for g in groups)
    same = sum(g.same_patient for g in groups)
    return (
        f"{title}: {len(groups)} groups ({files} files); within one split {within}, "
        f"across splits {len(groups) - within}; same patient {same}"
    )


def _describe(group: DuplicateGroup, root: str) -> str:
    where = "+".join(group.splits)
    who = group.patients[0] if group.same_patient else f"{len(group.patients)} patients"
    labels = "/".join(group.labels)
    distance = f", distance <= {group.max_distance}" if group.kind == "near" else ""
    return f"[{where}, {labels}, {who}{distance}] " + ", ".join(_short(p, root) for p in group.paths)


def _short(path: str, root: str) -> str:
    """A path relative to the dataset root when it is inside it (shorter lines), else as is."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _more(total: int, shown: int, full: str) -> list[str]:
    return [f"  … and {total - shown} more (see {full})"] if total > shown else []
