"""The DataModule: patient-level split, class balance, device-side transforms, unpadded DDP validation."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tests.conftest import make_kermany_tree
from torch.utils.data import DistributedSampler

from pneumocxr.config import DataConfig, Preprocess, TrainConfig
from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.models import to_model_input
from pneumocxr.training.datamodule import ChestXrayDataModule, pos_weight, split_records

GRAY = Preprocess(image_size=16, channels=1, mean=(0.0,), std=(1.0,))
RGB = Preprocess(image_size=16, channels=3)


def _records(labels: list[int]) -> list[ImageRecord]:
    return [ImageRecord(Path(f"/x/{i}.jpeg"), y, "train", f"p{i}", "unknown") for i, y in enumerate(labels)]


def _module(root: Path, tmp_path: Path, preprocess: Preprocess = GRAY, **train) -> ChestXrayDataModule:
    train = {"batch_size": 4, "precision": "32", **train}
    return ChestXrayDataModule(
        DataConfig(root=str(root), val_fraction=0.3), TrainConfig(**train), preprocess, tmp_path / "cache"
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    # 10 NORMAL patients and 10 PNEUMONIA patients, 2 images each, in train/ only
    return make_kermany_tree(
        tmp_path_factory.mktemp("dm") / "cx", splits=("train", "val"), patients_per_class=10
    )


def test_pos_weight_is_negatives_over_positives():
    assert pos_weight(_records([0] * 3 + [1] * 9)) == pytest.approx(1 / 3)
    assert pos_weight(_records([0] * 1341 + [1] * 3875)) == pytest.approx(0.3461, abs=1e-4)
    with pytest.raises(DatasetError, match="cannot balance"):
        pos_weight(_records([1, 1]))


def test_split_uses_train_folder_only_whole_patients_both_classes(tree):
    train, val = split_records(DataConfig(root=str(tree), val_fraction=0.3))
    assert {r.split for r in train + val} == {"train"}  # the official val/ is never used here
    assert not {r.patient_id for r in train} & {r.patient_id for r in val}
    assert {r.label for r in val} == {0, 1}
    assert len(train) + len(val) == 40


def test_limit_train_images_keeps_whole_patients_deterministically(tree):
    data = DataConfig(root=str(tree), val_fraction=0.3)
    first = split_records(data, limit_train_images=20)
    again = split_records(data, limit_train_images=20)
    assert first == again
    kept = first[0] + first[1]
    assert 16 <= len(kept) <= 24
    per_patient = {r.patient_id: 0 for r in kept}
    for r in kept:
        per_patient[r.patient_id] += 1
    assert set(per_patient.values()) == {2}  # every kept patient with both of its images
    with pytest.raises(ConfigError, match="limit_train_images"):
        split_records(data, limit_train_images=-1)


def test_a_dataset_without_train_split_is_a_dataset_error(tmp_path):
    root = make_kermany_tree(tmp_path / "cx", splits=("test",), patients_per_class=2)
    with pytest.raises(DatasetError, match="no images in a 'train' split"):
        split_records(DataConfig(root=str(root)))


def test_batches_are_uint8_from_memory_and_become_model_input_on_the_device(tree, tmp_path):
    dm = _module(tree, tmp_path, RGB)
    dm.setup("fit")
    pixels, labels = next(iter(dm.train_dataloader()))
    assert pixels.dtype == torch.uint8 and pixels.shape == (4, 16, 16)
    assert labels.dtype == torch.float32 and set(labels.tolist()) <= {0.0, 1.0}
    dm.trainer = SimpleNamespace(training=True, global_rank=0, world_size=1)
    images, same_labels = dm.on_after_batch_transfer((pixels, labels), 0)
    assert images.shape == (4, 3, 16, 16) and images.is_contiguous(memory_format=torch.channels_last)
    assert same_labels is labels


def test_augmentation_only_in_training_and_its_stream_resumes(tree, tmp_path):
    dm = _module(tree, tmp_path, augment="seed")
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    plain = to_model_input(batch[0], GRAY, channels_last=True)
    dm.trainer = SimpleNamespace(training=False, global_rank=0, world_size=1)
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)[0], plain)
    dm.trainer = SimpleNamespace(training=True, global_rank=0, world_size=1)
    first = dm.on_after_batch_transfer(batch, 0)[0]
    assert not torch.equal(first, plain)
    state = dm.state_dict()
    expected = dm.on_after_batch_transfer(batch, 0)[0]
    restored = _module(tree, tmp_path, augment="seed")
    restored.trainer = SimpleNamespace(training=True, global_rank=0, world_size=1)
    restored.load_state_dict(state)
    assert torch.equal(restored.on_after_batch_transfer(batch, 0)[0], expected)


def test_ranks_augment_differently(tree, tmp_path):
    batch = (torch.full((4, 16, 16), 128, dtype=torch.uint8), torch.zeros(4))
    outs = []
    for rank in (0, 1):
        dm = _module(tree, tmp_path, augment="anatomy")
        dm.trainer = SimpleNamespace(training=True, global_rank=rank, world_size=2)
        outs.append(dm.on_after_batch_transfer(batch, 0)[0])
    assert not torch.equal(outs[0], outs[1])


def test_validation_under_ddp_scores_each_image_exactly_once(tree, tmp_path):
    dm = _module(tree, tmp_path, batch_size=3)
    dm.setup("fit")
    n_val, world = len(dm._sets["val"]), 5
    # Uneven shards: Lightning's default (padding) DistributedSampler would score some images twice.
    padded = sum(len(DistributedSampler(dm._sets["val"], num_replicas=world, rank=r)) for r in range(world))
    assert padded > n_val
    seen: list[int] = []
    for rank in range(world):
        dm.trainer = SimpleNamespace(training=False, global_rank=rank, world_size=world)
        seen.extend(dm.val_dataloader().sampler)
    assert sorted(seen) == list(range(n_val))


def test_weighted_sampler_draws_classes_equally(tmp_path):
    root = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=8)
    for path in sorted((root / "train" / "NORMAL").glob("IM-010[0-4]-*.jpeg")):
        path.unlink()  # 3 NORMAL vs 8 PNEUMONIA patients
    dm = _module(root, tmp_path, class_balance="sampler", batch_size=8)
    dm.setup("fit")
    assert dm.pos_weight() is None  # the sampler balances; the loss is unweighted
    loader = dm.train_dataloader()  # one loader, many epochs: as Lightning uses it
    labels = torch.cat([y for _ in range(60) for _, y in loader])
    assert 0.42 < float(labels.mean()) < 0.58
    natural = float(dm._sets["train"].labels.mean())
    assert natural > 0.65


def test_bad_class_balance_is_a_config_error(tree, tmp_path):
    with pytest.raises(ConfigError, match="class_balance"):
        _module(tree, tmp_path, class_balance="oversample")
