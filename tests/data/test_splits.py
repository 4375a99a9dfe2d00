"""Patient-level stratified splits and folds: no patient on both sides, classes balanced, deterministic."""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path

import pytest

from pneumocxr.data.discovery import discover
from pneumocxr.data.records import ImageRecord
from pneumocxr.data.splits import assert_no_patient_leak, patient_kfold, patient_split
from pneumocxr.errors import ConfigError, DatasetError


def _records(
    n_normal: int = 60, n_pneumonia: int = 180, seed: int = 0, split: str = "train"
) -> list[ImageRecord]:
    """Patients with 1-4 images each, ~1:3 NORMAL:PNEUMONIA like the real data."""
    rng = random.Random(seed)
    records = []
    for label, count, prefix in ((0, n_normal, "IM"), (1, n_pneumonia, "person")):
        for p in range(count):
            for m in range(rng.randint(1, 4)):
                pid = f"{prefix}{p}"
                records.append(ImageRecord(Path(f"/d/{split}/{pid}_{m}.jpeg"), label, split, pid, "x"))
    return records


def _pneumonia_share(records: list[ImageRecord]) -> float:
    return sum(r.label for r in records) / len(records)


def _patients(records: list[ImageRecord]) -> set[str]:
    return {r.patient_id for r in records}


# ----------------------------------------------------------------------------- patient_split


def test_split_keeps_each_patient_on_one_side_and_loses_nothing():
    records = _records()
    train, val = patient_split(records, 0.2, seed=1)
    assert not _patients(train) & _patients(val)
    assert sorted(map(str, (r.path for r in train + val))) == sorted(str(r.path) for r in records)
    assert_no_patient_leak(train, val)


@pytest.mark.parametrize("fraction", [0.1, 0.15, 0.3])
def test_split_is_stratified_and_near_the_fraction(fraction):
    records = _records(n_normal=150, n_pneumonia=450)
    train, val = patient_split(records, fraction, seed=3)
    assert abs(len(val) / len(records) - fraction) < 0.01
    assert abs(_pneumonia_share(val) - _pneumonia_share(records)) < 0.02
    assert abs(_pneumonia_share(train) - _pneumonia_share(records)) < 0.02


def test_split_is_deterministic_for_a_seed_and_independent_of_input_order():
    records = _records()
    first = patient_split(records, seed=7)
    shuffled = records[:]
    random.Random(99).shuffle(shuffled)
    assert patient_split(shuffled, seed=7) == first
    assert patient_split(records, seed=8) != first


def test_patient_with_both_classes_counts_as_pneumonia_and_stays_together():
    records = _records(n_normal=10, n_pneumonia=10)
    mixed = [ImageRecord(Path(f"/d/train/mixed_{m}.jpeg"), m % 2, "train", "mixed", "x") for m in range(4)]
    for seed in range(10):
        train, val = patient_split(records + mixed, 0.3, seed=seed)
        in_val = [r in val for r in mixed]
        assert in_val in ([True] * 4, [False] * 4)
        assert all((r in train) != (r in val) for r in mixed)


def test_each_class_reaches_both_sides_even_when_rare():
    records = _records(n_normal=2, n_pneumonia=200)
    train, val = patient_split(records, 0.05, seed=0)
    assert {r.label for r in val} == {0, 1}
    assert {r.label for r in train} == {0, 1}


def test_single_patient_class_stays_in_train_with_a_warning(caplog):
    records = _records(n_normal=1, n_pneumonia=20)
    with caplog.at_level(logging.WARNING, logger="pneumocxr.data.splits"):
        train, val = patient_split(records, 0.2)
    assert all(r.label == 1 for r in val)
    assert any(r.label == 0 for r in train)
    assert "only one NORMAL patient" in caplog.text


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, "0.2", None])
def test_split_rejects_a_bad_fraction(fraction):
    with pytest.raises(ConfigError, match="val_fraction"):
        patient_split(_records(), fraction)


def test_split_of_nothing_is_a_dataset_error():
    with pytest.raises(DatasetError, match="no records"):
        patient_split([])


def test_same_number_in_another_release_folder_is_another_patient():
    # personN numbers repeat across the official folders without shared images
    train_folder = _records(n_normal=5, n_pneumonia=5, split="train")
    test_folder = _records(n_normal=5, n_pneumonia=5, split="test")
    assert_no_patient_leak(train_folder, test_folder)
    with pytest.raises(DatasetError, match="appear in more than one split"):
        assert_no_patient_leak(train_folder, test_folder, scope="global")


def test_split_on_the_synthetic_kermany_tree(kermany_tree):
    train_records = discover(kermany_tree).in_split("train")
    train, val = patient_split(train_records, 0.34, seed=0)
    assert_no_patient_leak(train, val)
    assert {r.label for r in val} == {0, 1}
    assert len(train) + len(val) == len(train_records)


# ----------------------------------------------------------------------------- patient_kfold


def test_kfold_puts_every_patient_in_exactly_one_validation_fold():
    records = _records()
    folds = patient_kfold(records, k=5, seed=0)
    assert len(folds) == 5
    fold_of = Counter()
    for train, val in folds:
        assert not _patients(train) & _patients(val)
        assert len(train) + len(val) == len(records)
        fold_of.update(_patients(val))
    assert set(fold_of) == _patients(records)
    assert set(fold_of.values()) == {1}
    assert_no_patient_leak(*(val for _, val in folds))


def test_kfold_is_stratified_and_balanced():
    records = _records(n_normal=150, n_pneumonia=450)
    overall = _pneumonia_share(records)
    sizes = []
    for _, val in patient_kfold(records, k=5, seed=2):
        assert abs(_pneumonia_share(val) - overall) < 0.02
        sizes.append(len(val))
    assert max(sizes) - min(sizes) <= 8  # at most two largest patients (4 images) apart


def test_kfold_is_deterministic_and_order_independent():
    records = _records()
    shuffled = records[::-1]
    assert patient_kfold(records, 4, seed=5) == patient_kfold(shuffled, 4, seed=5)
    assert patient_kfold(records, 4, seed=5) != patient_kfold(records, 4, seed=6)


@pytest.mark.parametrize("k", [1, 0, 2.5, True])
def test_kfold_rejects_a_bad_k(k):
    with pytest.raises(ConfigError, match="folds"):
        patient_kfold(_records(), k)


def test_kfold_needs_at_least_k_patients():
    with pytest.raises(DatasetError, match="cannot fill 5 folds"):
        patient_kfold(_records(n_normal=2, n_pneumonia=2), k=5)


# ----------------------------------------------------------------------------- leak check


def test_leak_check_names_the_shared_patients():
    records = _records(n_normal=3, n_pneumonia=3)
    a = [r for r in records if r.patient_id in ("IM0", "person1")]
    b = [r for r in records if r.patient_id in ("IM0", "person1", "IM2")]
    with pytest.raises(DatasetError, match=r"2 patient\(s\).*train/IM0.*train/person1"):
        assert_no_patient_leak(a, b)
    assert_no_patient_leak(a, [r for r in records if r.patient_id == "IM2"])


def test_leak_check_rejects_a_bad_scope():
    with pytest.raises(ConfigError, match="scope"):
        assert_no_patient_leak([], scope="everything")


# ----------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_train(shared_data) -> list[ImageRecord]:
    dataset = discover(shared_data / "chest_xray")
    assert dataset.counts()["train"] == {"NORMAL": 1341, "PNEUMONIA": 3875}
    assert dataset.counts()["val"] == {"NORMAL": 8, "PNEUMONIA": 8}
    return dataset.in_split("train")


@pytest.mark.realdata
def test_real_train_split_is_patient_level_and_stratified(real_train):
    train, val = patient_split(real_train, 0.15, seed=42)
    assert_no_patient_leak(train, val)
    assert len(train) + len(val) == len(real_train)
    assert abs(len(val) / len(real_train) - 0.15) < 0.01
    assert abs(_pneumonia_share(val) - _pneumonia_share(real_train)) < 0.02
    assert patient_split(list(reversed(real_train)), 0.15, seed=42) == (train, val)


@pytest.mark.realdata
def test_real_train_kfold_is_patient_level_and_stratified(real_train):
    folds = patient_kfold(real_train, k=5, seed=42)
    assert_no_patient_leak(*(val for _, val in folds))
    assert sum(len(val) for _, val in folds) == len(real_train)
    overall = _pneumonia_share(real_train)
    for train, val in folds:
        assert_no_patient_leak(train, val)
        assert abs(_pneumonia_share(val) - overall) < 0.02
        assert abs(len(val) / len(real_train) - 0.2) < 0.01
