"""Patient-level, class-stratified validation splits and k-fold, and the leak check.

Why patient-level: one child often has several films (and this release has byte-identical
duplicates, always within one patient); an image-level split puts the same lungs on both sides
and inflates validation scores. Why stratified: NORMAL:PNEUMONIA is about 1:2.9, and a
validation split with a different mix gives thresholds that do not transfer.

A patient counts as PNEUMONIA for stratification when any of its images is. Patients are keyed
by ``(split, patient_id)``: ids are only meaningful within one release folder (the same
``personN`` number occurs in the official train and test folders without any shared image).

Both splitters are a deterministic greedy fill rather than sklearn's ``StratifiedGroupKFold``:
the fraction is hit per class in *images* (not rounded to 1/k folds), and the result depends only
on the seed and the set of records, never on their order (everything is sorted first).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.labels import CLASS_NAMES, PNEUMONIA

logger = logging.getLogger(__name__)

PatientKey = tuple[str, str]
_Group = tuple[PatientKey, list[ImageRecord]]


def patient_key(record: ImageRecord) -> PatientKey:
    """The identity of a patient: its id within the release folder (split) it came from."""
    return (record.split, record.patient_id)


def patient_split(
    records: Iterable[ImageRecord], val_fraction: float = 0.15, seed: int = 42
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``(train, val)``: about ``val_fraction`` of each class's images moved to val, whole patients at a time.

    Each class ends up on both sides whenever it has at least two patients (a warning says when
    it cannot). Both lists are sorted by path.
    """
    if not isinstance(val_fraction, (int, float)) or not 0.0 < float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction={val_fraction!r} must be strictly between 0 and 1 (e.g. 0.15)")
    by_class = _groups_by_class(records, seed)
    train: list[ImageRecord] = []
    val: list[ImageRecord] = []
    for label, groups in by_class.items():
        if len(groups) < 2:
            logger.warning("only one %s patient: it stays on the training side", _class_name(label))
        chosen = _fill(groups, float(val_fraction))
        for index, (_, members) in enumerate(groups):
            (val if index in chosen else train).extend(members)
    return _sorted(train), _sorted(val)


def patient_kfold(
    records: Iterable[ImageRecord], k: int = 5, seed: int = 42
) -> list[tuple[list[ImageRecord], list[ImageRecord]]]:
    """``k`` pairs ``(train, val)``: every patient in exactly one val fold, each class's images spread evenly.

    Within each class, patients are dealt (largest first, ties in seeded random order) to the
    fold that holds the fewest images of that class so far.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"k={k!r} folds: use an integer of at least 2 (e.g. 5)")
    by_class = _groups_by_class(records, seed)
    n_patients = sum(len(groups) for groups in by_class.values())
    if n_patients < k:
        raise DatasetError(f"{n_patients} patient(s) cannot fill {k} folds; use k <= {n_patients}")
    folds: list[list[ImageRecord]] = [[] for _ in range(k)]
    for label, groups in by_class.items():
        if len(groups) < k:
            logger.warning(
                "only %d %s patient(s) for %d folds: some validation folds have no %s images",
                len(groups),
                _class_name(label),
                k,
                _class_name(label),
            )
        load = [0] * k
        # Stable sort: equal-sized patients keep their seeded random order.
        for _, members in sorted(groups, key=lambda g: -len(g[1])):
            target = min(range(k), key=lambda f: (load[f], len(folds[f]), f))
            folds[target].extend(members)
            load[target] += len(members)
    result = []
    for index in range(k):
        train = [r for other in range(k) if other != index for r in folds[other]]
        result.append((_sorted(train), _sorted(folds[index])))
    return result


def assert_no_patient_leak(*groups: Sequence[ImageRecord], scope: str = "split") -> None:
    """Raise DatasetError listing patients that appear in more than one group.

    ``scope="split"`` (default) keys patients by ``(split, patient_id)``, right for ids parsed
    from release file names; ``scope="global"`` keys by ``patient_id`` alone, for manifests whose
    ``patient_id`` column names the same person across splits.
    """
    if scope not in ("split", "global"):
        raise ConfigError(f"scope={scope!r}; use 'split' or 'global'")
    seen: dict[object, set[int]] = defaultdict(set)
    for index, group in enumerate(groups):
        for record in group:
            key = patient_key(record) if scope == "split" else record.patient_id
            seen[key].add(index)
    shared = sorted((key, sorted(where)) for key, where in seen.items() if len(where) > 1)
    if shared:
        shown = ", ".join(f"{_key_name(key)} (groups {where})" for key, where in shared[:10])
        more = f" and {len(shared) - 10} more" if len(shared) > 10 else ""
        raise DatasetError(
            f"{len(shared)} patient(s) appear in more than one split: {shown}{more}; "
            "split by patient (pneumocxr.data.splits.patient_split) so each patient is on one side"
        )


def _key_name(key: object) -> str:
    return "/".join(key) if isinstance(key, tuple) else str(key)


def _groups_by_class(records: Iterable[ImageRecord], seed: int) -> dict[int, list[_Group]]:
    """Patients grouped by stratification class, each class's list in seeded random order.

    Sorting before shuffling makes the result independent of the input order.
    """
    members: dict[PatientKey, list[ImageRecord]] = defaultdict(list)
    for record in records:
        members[patient_key(record)].append(record)
    if not members:
        raise DatasetError("no records to split; check that the dataset folder holds images")
    by_class: dict[int, list[_Group]] = defaultdict(list)
    for key in sorted(members):
        group = _sorted(members[key])
        label = PNEUMONIA if any(r.label == PNEUMONIA for r in group) else min(r.label for r in group)
        by_class[label].append((key, group))
    if len(by_class) < 2:
        logger.warning("only one class (%s) in the records: the split cannot be stratified", _names(by_class))
    rng = np.random.default_rng(seed)
    shuffled: dict[int, list[_Group]] = {}
    for label in sorted(by_class):
        groups = by_class[label]
        shuffled[label] = [groups[i] for i in rng.permutation(len(groups))]
    return shuffled


def _fill(groups: list[_Group], fraction: float) -> set[int]:
    """Indices of the groups that go to validation: walk the (shuffled) patients, taking each one
    that brings the class's validation image count closer to ``fraction`` of its images."""
    sizes = [len(members) for _, members in groups]
    target = fraction * sum(sizes)
    chosen: set[int] = set()
    current = 0
    for index, size in enumerate(sizes):
        if abs(current + size - target) < abs(current - target):
            chosen.add(index)
            current += size
    if len(groups) >= 2 and not chosen:
        chosen.add(min(range(len(groups)), key=lambda i: (sizes[i], i)))
    if len(groups) >= 2 and len(chosen) == len(groups):
        chosen.discard(max(chosen))
    return chosen


def _names(by_class: dict[int, list[_Group]]) -> str:
    return ", ".join(_class_name(label) for label in sorted(by_class)) or "none"


def _class_name(label: int) -> str:
    """The binary class name, or ``class <i>`` for labels of another task (data.tasks: 0…k-1)."""
    return CLASS_NAMES[label] if 0 <= label < len(CLASS_NAMES) else f"class {label}"


def _sorted(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    return sorted(records, key=lambda r: (r.split, str(r.path), r.member or ""))
