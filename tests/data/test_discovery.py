"""Dataset discovery: class-folder trees, CSV manifests, MedMNIST archives, and clear errors."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pneumocxr.data.discovery import Dataset, discover
from pneumocxr.data.records import ImageRecord
from pneumocxr.data.sources import load_pixels
from pneumocxr.errors import DatasetError, UnsupportedImageError

# kermany_tree: 3 splits x 2 classes x 6 patients x 2 images
PER_CLASS = 12
FULL = {"NORMAL": PER_CLASS, "PNEUMONIA": PER_CLASS}


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- class-folder trees


def test_kermany_tree_is_found_with_counts_patients_and_sublabels(kermany_tree):
    dataset = discover(kermany_tree)
    assert dataset.layout == "kermany"
    assert dataset.root == kermany_tree
    assert dataset.splits() == ["train", "val", "test"]
    assert dataset.counts() == {s: FULL for s in ("train", "val", "test")}
    train = dataset.in_split("train")
    assert len(train) == 2 * PER_CLASS
    assert {r.patient_id for r in train if r.label == 0} == {f"IM-{100 + p:04d}" for p in range(6)}
    assert {r.sublabel for r in train if r.label == 1} == {"bacterial", "viral"}
    assert all(r.member is None and r.path.is_file() for r in dataset.records)
    assert list(dataset.records) == sorted(dataset.records, key=lambda r: (r.split, str(r.path)))


def test_folder_names_are_case_insensitive_and_split_aliases_accepted(kermany_tree):
    (kermany_tree / "train" / "NORMAL").rename(kermany_tree / "train" / "normal")
    (kermany_tree / "train").rename(kermany_tree / "Train")
    (kermany_tree / "val").rename(kermany_tree / "VALIDATION")
    (kermany_tree / "test" / "PNEUMONIA").rename(kermany_tree / "test" / "Pneumonia")
    dataset = discover(kermany_tree)
    assert dataset.counts() == {s: FULL for s in ("train", "val", "test")}


def test_any_subset_of_splits(kermany_tree):
    shutil.rmtree(kermany_tree / "train")
    shutil.rmtree(kermany_tree / "val")
    dataset = discover(kermany_tree)
    assert dataset.splits() == ["test"]
    assert dataset.counts() == {"test": FULL}
    assert dataset.in_split("train") == []


def test_nested_tree_as_in_the_kaggle_archive_is_found(kermany_tree, tmp_path, caplog):
    outer = tmp_path / "download"
    (outer / "archive").mkdir(parents=True)
    shutil.move(str(kermany_tree), outer / "archive" / "chest_xray")
    _touch(outer / "__MACOSX" / "archive" / "._junk")
    with caplog.at_level(logging.INFO, logger="pneumocxr.data.discovery"):
        dataset = discover(outer)
    assert dataset.root == outer / "archive" / "chest_xray"
    assert len(dataset.records) == 6 * PER_CLASS
    assert "found inside" in caplog.text


def test_two_trees_at_the_same_depth_are_ambiguous(kermany_tree, tmp_path):
    outer = tmp_path / "outer"
    outer.mkdir()
    shutil.copytree(kermany_tree, outer / "a")
    shutil.copytree(kermany_tree, outer / "b")
    with pytest.raises(DatasetError, match="several dataset folders"):
        discover(outer)


def test_class_folders_without_split_level_are_one_test_split(kermany_tree):
    own = kermany_tree.parent / "my_xrays"
    shutil.copytree(kermany_tree / "val", own)
    assert discover(own).counts() == {"test": FULL}


def test_a_split_folder_given_directly_keeps_its_split_name(kermany_tree):
    dataset = discover(kermany_tree / "train")
    assert dataset.counts() == {"train": FULL}


def test_junk_is_ignored_and_non_images_are_logged(kermany_tree, caplog):
    normal = kermany_tree / "train" / "NORMAL"
    _touch(normal / ".DS_Store")
    _touch(normal / "._IM-0100-0001.jpeg")
    _touch(normal / "Thumbs.db")
    _touch(normal / "notes.txt")
    _touch(normal / "labels.csv")
    _touch(normal / "__MACOSX" / "IM-9999-0001.jpeg")
    _touch(normal / "scan_0001")  # extension-less: a DICOM candidate
    _touch(normal / "1.2.840.113619.2.55")  # UID-named DICOM
    _touch(normal / "extra" / "IM-0900-0001.PNG")  # sub-folders are read
    _touch(kermany_tree / "train" / "COVID" / "x.jpeg")
    with caplog.at_level(logging.WARNING, logger="pneumocxr.data.discovery"):
        dataset = discover(kermany_tree)
    names = {r.path.name for r in dataset.in_split("train") if r.label == 0}
    assert names >= {"scan_0001", "1.2.840.113619.2.55", "IM-0900-0001.PNG"}
    assert not names & {".DS_Store", "._IM-0100-0001.jpeg", "Thumbs.db", "notes.txt", "labels.csv"}
    assert "IM-9999-0001.jpeg" not in names
    assert dataset.counts()["train"]["NORMAL"] == PER_CLASS + 3
    assert "skipped 2 non-image file(s)" in caplog.text
    assert "notes.txt" in caplog.text and ".csv" in caplog.text
    assert "COVID/" in caplog.text


def test_empty_class_folder_is_warned_about(kermany_tree, caplog):
    for path in (kermany_tree / "test" / "NORMAL").iterdir():
        path.unlink()
    with caplog.at_level(logging.WARNING, logger="pneumocxr.data.discovery"):
        dataset = discover(kermany_tree)
    assert dataset.counts()["test"] == {"NORMAL": 0, "PNEUMONIA": PER_CLASS}
    assert "no NORMAL images" in caplog.text


@pytest.mark.parametrize("make", ["empty", "unrelated", "only_junk_classes"])
def test_unrecognised_folders_name_the_supported_layouts(tmp_path, make):
    root = tmp_path / "data"
    root.mkdir()
    if make == "unrelated":
        _touch(root / "images" / "a.jpeg")
        _touch(root / "readme.txt")
    if make == "only_junk_classes":
        _touch(root / "train" / "NORMAL" / "notes.txt")
    with pytest.raises(DatasetError, match="supported layouts"):
        discover(root)


def test_missing_path_and_unsupported_file_are_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        discover(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"neither a \.csv"):
        discover(_touch(tmp_path / "data.zip"))


def test_duplicate_case_variants_are_an_error(kermany_tree):
    (kermany_tree / "TRAIN" / "NORMAL").mkdir(parents=True)
    if len([p for p in kermany_tree.iterdir() if p.name.lower() == "train"]) < 2:
        pytest.skip("case-insensitive file system")
    with pytest.raises(DatasetError, match="merge or rename"):
        discover(kermany_tree)


# ----------------------------------------------------------------------------- CSV manifests


def _write_manifest(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_manifest_with_relative_paths_labels_patients_and_splits(tmp_path):
    for name in ("a/p1_1.png", "a/p1_2.png", "b/person7_virus_1.jpeg", "c/IM-0001-0001.jpeg"):
        _touch(tmp_path / "imgs" / name)
    manifest = _write_manifest(
        tmp_path / "imgs" / "list.csv",
        [
            "Path,LABEL,patient_id,split",
            "a/p1_1.png,pneumonia,P1,train",
            "a/p1_2.png,1,P1,train",
            "b/person7_virus_1.jpeg,PNEUMONIA,,val",
            f"{tmp_path / 'imgs' / 'c' / 'IM-0001-0001.jpeg'},0,,Test",
        ],
    )
    dataset = discover(manifest)
    assert dataset.layout == "manifest" and dataset.root == manifest
    assert dataset.counts() == {
        "train": {"NORMAL": 0, "PNEUMONIA": 2},
        "val": {"NORMAL": 0, "PNEUMONIA": 1},
        "test": {"NORMAL": 1, "PNEUMONIA": 0},
    }
    by_name = {r.path.name: r for r in dataset.records}
    assert by_name["p1_1.png"].patient_id == "P1" and by_name["p1_1.png"].sublabel == "unknown"
    assert (by_name["person7_virus_1.jpeg"].patient_id, by_name["person7_virus_1.jpeg"].sublabel) == (
        "person7",
        "viral",
    )
    assert by_name["IM-0001-0001.jpeg"].patient_id == "IM-0001"


def test_manifest_without_split_column_is_all_train_and_found_in_a_folder(tmp_path):
    _touch(tmp_path / "x.png")
    _touch(tmp_path / "y.png")
    _write_manifest(tmp_path / "manifest.csv", ["path,label", "x.png,NORMAL", "y.png,Pneumonia"])
    dataset = discover(tmp_path)
    assert dataset.layout == "manifest"
    assert dataset.counts() == {"train": {"NORMAL": 1, "PNEUMONIA": 1}}
    assert {r.patient_id for r in dataset.records} == {"x", "y"}


def test_manifest_with_a_bom_is_read(tmp_path):
    _touch(tmp_path / "x.png")
    (tmp_path / "m.csv").write_bytes("\ufeffpath,label\nx.png,0\n".encode())
    assert discover(tmp_path / "m.csv").counts() == {"train": {"NORMAL": 1, "PNEUMONIA": 0}}


def test_manifest_missing_columns_names_them(tmp_path):
    manifest = _write_manifest(tmp_path / "m.csv", ["file,class", "x.png,NORMAL"])
    with pytest.raises(DatasetError, match=r"missing column\(s\) path, label.*path,label\[,patient_id\]"):
        discover(manifest)


def test_manifest_bad_rows_are_reported_with_line_numbers(tmp_path):
    _touch(tmp_path / "ok.png")
    manifest = _write_manifest(
        tmp_path / "m.csv",
        [
            "path,label,split",
            "ok.png,NORMAL,train",  # line 2: fine
            "gone.png,NORMAL,train",  # line 3: missing file
            "ok2.png,sick,train",  # line 4: missing file (checked first)
            ",NORMAL,train",  # line 5: empty path
            "ok.png,NORMAL,train",  # line 6: duplicate
        ],
    )
    with pytest.raises(DatasetError) as info:
        discover(manifest)
    message = str(info.value)
    assert "4 bad row(s)" in message
    assert "line 3: file" in message and "gone.png not found" in message
    assert "line 5: empty path" in message
    assert "line 6:" in message and "already listed on line 2" in message
    assert "Fix these rows" in message


@pytest.mark.parametrize(
    ("row", "expected"),
    [("ok.png,sick,train", "line 2: label 'sick'"), ("ok.png,1,holdout", "line 2: split 'holdout'")],
)
def test_manifest_bad_label_or_split(tmp_path, row, expected):
    _touch(tmp_path / "ok.png")
    manifest = _write_manifest(tmp_path / "m.csv", ["path,label,split", row])
    with pytest.raises(DatasetError, match=expected):
        discover(manifest)


def test_manifest_with_header_only_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="no rows"):
        discover(_write_manifest(tmp_path / "m.csv", ["path,label"]))


# ----------------------------------------------------------------------------- MedMNIST archives


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez_compressed(path, **arrays)
    return path


def test_npz_records_members_and_pixels(tmp_path):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    archive = _write_npz(
        tmp_path / "mini.npz",
        train_images=images,
        train_labels=np.array([[0], [1], [1]], dtype=np.uint8),
        test_images=images[:1],
        test_labels=np.array([1]),
    )
    dataset = discover(archive)
    assert dataset.layout == "npz"
    assert dataset.counts() == {"train": {"NORMAL": 1, "PNEUMONIA": 2}, "test": {"NORMAL": 0, "PNEUMONIA": 1}}
    first = dataset.in_split("train")[0]
    assert first == ImageRecord(archive, 0, "train", "mnist-train-0", "normal", "train_images[0]")
    assert dataset.in_split("train")[1].sublabel == "unknown"
    pixels = load_pixels(dataset.in_split("train")[2])
    assert pixels.dtype == np.float32 and pixels.shape == (4, 5)
    np.testing.assert_allclose(pixels, images[2] / 255.0, rtol=1e-6)
    assert discover(tmp_path).layout == "npz"  # a folder holding one archive


def test_rewritten_npz_is_not_served_stale(tmp_path):
    path = tmp_path / "a.npz"
    _write_npz(path, val_images=np.zeros((1, 2, 2), np.uint8), val_labels=np.array([0]))
    record = discover(path).records[0]
    assert load_pixels(record).max() == 0.0
    _write_npz(path, val_images=np.full((1, 2, 2), 255, np.uint8), val_labels=np.array([0]))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert load_pixels(record).min() == 1.0


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"train_images": np.zeros((2, 3, 3), np.uint8)}, "only one of"),
        ({"train_images": np.zeros((2, 3, 3), np.uint8), "train_labels": np.array([0])}, "expected N×H×W"),
        ({"train_images": np.zeros((2, 3, 3), np.uint8), "train_labels": np.array([0, 2])}, "binary 0/1"),
        ({"x": np.zeros(3)}, "no {train,val,test}_images"),
    ],
)
def test_bad_npz_archives_are_dataset_errors(tmp_path, arrays, match):
    archive = _write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=match):
        discover(archive)


def test_corrupt_npz_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match=r"not a readable \.npz"):
        discover(_touch(tmp_path / "broken.npz", b"not a zip"))


def test_bad_member_is_an_unsupported_image_error(tmp_path):
    archive = _write_npz(
        tmp_path / "a.npz", val_images=np.zeros((1, 2, 2), np.uint8), val_labels=np.array([0])
    )
    with pytest.raises(UnsupportedImageError, match="past the end"):
        load_pixels(ImageRecord(archive, 0, "val", "p", "normal", "val_images[5]"))
    with pytest.raises(UnsupportedImageError, match="must look like"):
        load_pixels(ImageRecord(archive, 0, "val", "p", "normal", "val_images"))


def test_file_records_are_decoded_by_read_image(kermany_tree):
    try:
        from pneumocxr.imaging import read_image  # noqa: F401
    except ImportError:
        pytest.skip("pneumocxr.imaging.read_image is not available yet")
    record = discover(kermany_tree).records[0]
    pixels = load_pixels(record)
    assert pixels.dtype == np.float32 and pixels.shape == (40, 48)
    assert 0.0 <= pixels.min() <= pixels.max() <= 1.0


# ----------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_kermany_counts(shared_data):
    dataset = discover(shared_data / "chest_xray")
    assert isinstance(dataset, Dataset) and dataset.layout == "kermany"
    assert dataset.counts() == {
        "train": {"NORMAL": 1341, "PNEUMONIA": 3875},
        "val": {"NORMAL": 8, "PNEUMONIA": 8},
    }
    train = dataset.in_split("train")
    sublabels = [r.sublabel for r in train if r.label == 1]
    assert (sublabels.count("bacterial"), sublabels.count("viral")) == (2530, 1345)
    assert all(r.sublabel == "normal" for r in train if r.label == 0)
    # every file follows a known naming scheme, so no file is its own "patient" by accident
    assert all(r.patient_id != r.path.stem for r in train)


@pytest.mark.realdata
def test_real_pneumoniamnist_archive(shared_data):
    dataset = discover(shared_data / "pneumoniamnist_trainval.npz")
    assert dataset.layout == "npz"
    assert {s: sum(c.values()) for s, c in dataset.counts().items()} == {"train": 4708, "val": 524}
    pixels = load_pixels(dataset.in_split("val")[-1])
    assert pixels.shape == (28, 28) and pixels.dtype == np.float32
