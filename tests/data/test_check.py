"""``check_dataset``: counts, unreadable files, exact/near duplicates and shared patients."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumocxr.data import duplicates
from pneumocxr.data.check import REPORT_FORMAT, check_dataset
from pneumocxr.data.discovery import discover
from pneumocxr.data.duplicates import hamming_pairs
from pneumocxr.errors import ConfigError


def make_dirty(root: Path) -> Path:
    """Add one of every problem the check must find to a ``kermany_tree`` (train ids 1xx, val 2xx).

    - exact copy within train, same patient: person100_bacteria_0 → person100_bacteria_5
    - exact copy across splits, same id: train IM-0101-0001 → val IM-0101-0009 (leakage)
    - exact copy across splits, other id: train IM-0102-0001 → val IM-0999-0001 (leakage)
    - near copy: person101_virus_0 re-saved at JPEG quality 60 as person101_virus_7
    - a shared patient id without shared images: a new image val/PNEUMONIA/person100_bacteria_9
    - an unreadable file: train/NORMAL/IM-0150-0001.jpeg holds text
    """
    train, val = root / "train", root / "val"
    shutil.copy(train / "PNEUMONIA/person100_bacteria_0.jpeg", train / "PNEUMONIA/person100_bacteria_5.jpeg")
    shutil.copy(train / "NORMAL/IM-0101-0001.jpeg", val / "NORMAL/IM-0101-0009.jpeg")
    shutil.copy(train / "NORMAL/IM-0102-0001.jpeg", val / "NORMAL/IM-0999-0001.jpeg")
    Image.open(train / "PNEUMONIA/person101_virus_0.jpeg").save(
        train / "PNEUMONIA/person101_virus_7.jpeg", quality=60
    )
    noise = np.random.default_rng(7).integers(0, 256, size=(40, 48), dtype=np.uint8)
    Image.fromarray(noise, mode="L").save(val / "PNEUMONIA/person100_bacteria_9.jpeg")
    (train / "NORMAL/IM-0150-0001.jpeg").write_bytes(b"this is not a JPEG")
    return root


@pytest.fixture
def dirty_report(kermany_tree):
    return check_dataset(discover(make_dirty(kermany_tree)), workers=1)


def _names(group) -> list[str]:
    return sorted(Path(p).name for p in group.paths)


def test_counts_per_split_class_and_sublabel(dirty_report):
    # 12 per split and class, plus: train NORMAL +1 (bad), PNEUMONIA +2 copies; val NORMAL +2 copies,
    # PNEUMONIA +1 new image.
    assert dirty_report.counts == {
        "train": {"NORMAL": 13, "PNEUMONIA": 14},
        "val": {"NORMAL": 14, "PNEUMONIA": 13},
        "test": {"NORMAL": 12, "PNEUMONIA": 12},
    }
    assert dirty_report.n_images == 78
    # even patients are bacterial, odd viral (3 patients x 2 images each), plus the added files
    assert dirty_report.sublabel_counts["train"] == {"normal": 13, "bacterial": 7, "viral": 7}
    assert dirty_report.sublabel_counts["val"] == {"normal": 14, "bacterial": 7, "viral": 6}


def test_unreadable_file_is_listed_with_its_reason(dirty_report):
    assert not dirty_report.ok
    [bad] = dirty_report.unreadable
    assert Path(bad.path).name == "IM-0150-0001.jpeg"
    assert (bad.split, bad.label) == ("train", "NORMAL")
    assert bad.reason


def test_exact_duplicates_are_grouped_within_and_across_splits(dirty_report):
    groups = {tuple(_names(g)): g for g in dirty_report.exact_groups}
    assert set(groups) == {
        ("person100_bacteria_0.jpeg", "person100_bacteria_5.jpeg"),
        ("IM-0101-0001.jpeg", "IM-0101-0009.jpeg"),
        ("IM-0102-0001.jpeg", "IM-0999-0001.jpeg"),
    }
    within = groups[("person100_bacteria_0.jpeg", "person100_bacteria_5.jpeg")]
    assert within.splits == ("train",) and within.same_patient and not within.cross_split
    other_id = groups[("IM-0102-0001.jpeg", "IM-0999-0001.jpeg")]
    assert other_id.cross_split and not other_id.same_patient
    assert len(dirty_report.leaking_groups) == 2
    assert dirty_report.label_conflicts == []


def test_resaved_jpeg_is_a_near_duplicate_not_an_exact_one(dirty_report):
    [group] = dirty_report.near_groups
    assert _names(group) == ["person101_virus_0.jpeg", "person101_virus_7.jpeg"]
    assert group.same_patient and group.splits == ("train",)
    assert 0 <= group.max_distance <= dirty_report.near_threshold
    assert dirty_report.near_pairs == 1


def test_shared_patient_ids_are_information_unless_images_are_duplicated(dirty_report):
    shared = {p.patient_id: p for p in dirty_report.shared_patients}
    assert set(shared) == {"person100", "IM-0101"}
    assert shared["person100"].images == {"train": 3, "val": 1}
    assert shared["IM-0101"].images == {"train": 2, "val": 1}
    assert not shared["person100"].duplicated_across_splits
    assert shared["IM-0101"].duplicated_across_splits


def test_clean_synthetic_tree_has_no_duplicates(kermany_tree):
    report = check_dataset(discover(kermany_tree), workers=1)
    assert report.ok
    assert report.exact_groups == [] and report.near_groups == [] and report.near_pairs == 0
    assert report.counts == {s: {"NORMAL": 12, "PNEUMONIA": 12} for s in ("train", "val", "test")}


def test_report_json_has_the_documented_schema(dirty_report, tmp_path):
    path = dirty_report.write_json(tmp_path / "results" / "data_check.json")
    data = json.loads(path.read_text())
    assert data["format"] == REPORT_FORMAT
    assert data["counts"]["train"]["NORMAL"] == 13
    assert data["unreadable"][0]["reason"]
    exact = data["exact_duplicates"]
    assert (exact["n_groups"], exact["within_split"], exact["across_splits"]) == (3, 1, 2)
    assert {"paths", "splits", "labels", "patients", "cross_split", "same_patient"} <= set(exact["groups"][0])
    near = data["near_duplicates"]
    assert (near["threshold"], near["hash_bits"], near["pairs"], near["n_groups"]) == (24, 256, 1, 1)
    assert data["shared_patients"]["n_patients"] == 2
    assert data["shared_patients"]["with_duplicated_images"] == 1
    assert "personN" in data["shared_patients"]["note"]


def test_worker_processes_give_the_same_report(kermany_tree):
    dataset = discover(make_dirty(kermany_tree))
    serial = check_dataset(dataset, workers=1).to_dict()
    parallel = check_dataset(dataset, workers=2).to_dict()
    for report in (serial, parallel):
        report.pop("seconds"), report.pop("timings")
    assert serial == parallel


@pytest.mark.parametrize("threshold", [-1, 256])
def test_threshold_outside_the_hash_is_a_config_error(kermany_tree, threshold):
    with pytest.raises(ConfigError, match="near_threshold"):
        check_dataset(discover(kermany_tree), near_threshold=threshold, workers=1)


def test_hamming_pairs_matches_brute_force_across_blocks(monkeypatch):
    monkeypatch.setattr(duplicates, "_BLOCK_ELEMENTS", 40)  # forces many row blocks
    rng = np.random.default_rng(0)
    bits = rng.random((30, 128)) < 0.5
    bits[5] = bits[3]  # distance 0
    bits[7] = bits[3] ^ (np.arange(128) < 3)  # distance 3
    hashes = np.stack([duplicates.pack_bits(b) for b in bits])
    expected = {
        (i, j, int((bits[i] != bits[j]).sum()))
        for i in range(30)
        for j in range(i + 1, 30)
        if (bits[i] != bits[j]).sum() <= 50
    }
    assert {tuple(row) for row in hamming_pairs(hashes, 50).tolist()} == expected
    assert {tuple(row) for row in hamming_pairs(hashes, 3).tolist()} == {(3, 5, 0), (3, 7, 3), (5, 7, 3)}


@pytest.mark.realdata
@pytest.mark.slow
def test_real_data_counts_and_the_15_exact_groups(shared_data):
    report = check_dataset(discover(shared_data / "chest_xray"))
    assert report.counts == {
        "train": {"NORMAL": 1341, "PNEUMONIA": 3875},
        "val": {"NORMAL": 8, "PNEUMONIA": 8},
    }
    assert report.sublabel_counts["train"] == {"normal": 1341, "bacterial": 2530, "viral": 1345}
    assert report.ok
    assert len(report.exact_groups) == 15
    assert all(g.same_patient and not g.cross_split for g in report.exact_groups)
    # Near-identical pairs (an original and its 224-px resize) exist too, also within one patient.
    assert report.near_groups and report.near_pairs >= len(report.near_groups)
    assert all(g.same_patient and not g.cross_split for g in report.near_groups)
    assert report.leaking_groups == [] and report.label_conflicts == []
