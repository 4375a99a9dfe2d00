"""Evaluation splits that are no folder: the carved validation split, rebuilt exactly; relabelled splits."""

from __future__ import annotations

import pytest
from tests.conftest import make_kermany_tree

from pneumocxr.config import DataConfig
from pneumocxr.data.discovery import discover
from pneumocxr.errors import DatasetError
from pneumocxr.models import CheckpointMeta
from pneumocxr.training.datamodule import split_info, split_records
from pneumocxr.workflows.provenance import selection_check
from pneumocxr.workflows.validation import (
    CARVED_VALIDATION_SPLIT,
    carved_validation,
    official_split_label,
    relabelled_split,
)


@pytest.fixture
def tree(tmp_path):
    return make_kermany_tree(tmp_path / "cx", splits=("train", "val"), patients_per_class=8, size=(24, 24))


@pytest.mark.parametrize("limit", [0, 20])
def test_carved_validation_is_exactly_the_split_training_used(tree, limit):
    data = DataConfig(root=str(tree), val_fraction=0.25, split_seed=7)
    train, val = split_records(data, limit)
    recorded = split_info(data, limit, train, val).as_dict()
    carved = carved_validation(recorded, tree)
    assert carved.splits() == [CARVED_VALIDATION_SPLIT]
    records = carved.in_split(CARVED_VALIDATION_SPLIT)

    def key(r):
        return (r.path, r.label, r.patient_id)

    assert [key(r) for r in records] == [key(r) for r in val]
    assert not {r.path for r in records} & {r.path for r in train}


def test_carved_validation_refuses_data_that_changed_since_training(tree):
    data = DataConfig(root=str(tree), val_fraction=0.25)
    train, val = split_records(data)
    recorded = split_info(data, 0, train, val).as_dict()
    val[0].path.unlink()  # an image of a validation patient is gone
    with pytest.raises(DatasetError, match="changed since training; retrain"):
        carved_validation(recorded, tree)


def test_official_val_is_relabelled_with_its_size(tree):
    dataset = discover(tree)
    official = relabelled_split(dataset, "val")
    n = len(dataset.in_split("val"))
    assert official.splits() == [official_split_label("val", n)] == [f"official val ({n} images)"]
    assert [r.path for r in official.records] == [r.path for r in dataset.in_split("val")]
    with pytest.raises(DatasetError, match="no 'test' split"):
        relabelled_split(dataset, "test")


def test_selection_check_marks_the_carved_split_as_used_for_selection(tree):
    data = DataConfig(root=str(tree), val_fraction=0.25)
    train, val = split_records(data)
    recorded = split_info(data, 0, train, val).as_dict()
    meta = CheckpointMeta("m.pt", "custom_cnn", {}, None, ("NORMAL", "PNEUMONIA"), extra={"split": recorded})
    carved = carved_validation(recorded, tree)
    selection = selection_check(meta, tree, carved, CARVED_VALIDATION_SPLIT)
    assert selection.could_have_been_used_for_selection is True and selection.same_dataset is True
    assert any("optimistic" in note for note in selection.notes)
    official = relabelled_split(discover(tree), "val")
    plain = selection_check(meta, tree, official, official.splits()[0])
    assert plain.could_have_been_used_for_selection is False
