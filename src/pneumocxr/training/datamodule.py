"""Data for training: patient-level split of the train folder, cached uint8 pixels, device-side transforms.

Pipeline: ``discover`` → ``patient_split`` of the *train* folder (the official ``val/`` folder, 16
images, is never used for selection; it is evaluated separately) → ``PreprocessedCache.load``
→ uint8 tensors in memory. The DataLoader only slices those tensors (one indexing op per batch),
and conversion to float, augmentation, normalisation and channels_last happen on the training
device in ``on_after_batch_transfer``, so the input pipeline is never the bottleneck and moves
4× fewer bytes to the GPU.

DDP: training batches are sharded by Lightning's DistributedSampler (padding is harmless there);
validation uses an UNpadded sampler so every image is scored exactly once and the all-gathered
metrics equal a single-process run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from pneumocxr.config import DataConfig, Preprocess, TrainConfig
from pneumocxr.data.cache import PreprocessedCache
from pneumocxr.data.discovery import discover
from pneumocxr.data.records import ImageRecord
from pneumocxr.data.splits import assert_no_patient_leak, patient_kfold, patient_split
from pneumocxr.data.tasks import label_for_task
from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.labels import NORMAL, task_class_names
from pneumocxr.models.inputs import to_model_input  # the one pixels → input conversion
from pneumocxr.training.augment import BatchAugmenter, augment_params

logger = logging.getLogger(__name__)

CLASS_BALANCE = ("loss", "sampler", "none")


@dataclass(frozen=True)
class SplitInfo:
    """What was trained on and selected on, recorded in the checkpoint so evaluation can prove
    that the validation patients (not the test set) chose the model."""

    source: str  # the dataset root actually read
    split_seed: int
    val_fraction: float
    limit_train_images: int  # 0 = the whole train folder
    train_counts: tuple[int, int]  # images per class (NORMAL, PNEUMONIA), whatever the task
    val_counts: tuple[int, int]
    val_patients: tuple[str, ...]  # "split/patient_id", sorted
    val_patients_sha256: str  # sha256 of the newline-joined list
    # -- added for the three-class task: the counts per class of the task that was trained --
    task: str = "binary"
    class_names: tuple[str, ...] = ()
    train_class_counts: tuple[int, ...] = ()  # images per class_names entry
    val_class_counts: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def split_records(
    data: DataConfig, limit_train_images: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(train, val) records: a stratified patient-level split of the dataset's ``train`` folder.

    ``limit_train_images`` first keeps a deterministic, class-stratified subset of whole patients
    of about that many images (smoke runs); the split is then carved from that subset.
    Records are labelled for ``data.task`` first (``data.tasks``), so every split and subset is
    stratified on the task's classes.
    """
    dataset = discover(data.root)
    records = dataset.in_split("train")
    records = label_for_task(records, data.task, where=f"the train split of {dataset.root}")
    if not records:
        raise DatasetError(
            f"{dataset.root}: no images in a 'train' split "
            f"(found splits: {', '.join(dataset.splits()) or 'none'}); "
            "training needs train/NORMAL and train/PNEUMONIA folders (or a manifest with split=train)"
        )
    if limit_train_images < 0:
        raise ConfigError(f"train.limit_train_images={limit_train_images}; use 0 (all) or a positive count")
    if 0 < limit_train_images < len(records):
        # patient_split's greedy fill is exactly "whole patients, per class, about this share".
        _, records = patient_split(records, limit_train_images / len(records), data.split_seed)
        logger.info(
            "limit_train_images=%d: using %d images of whole patients", limit_train_images, len(records)
        )
    if data.folds:  # -- cross-validation (training/cv.py): fold `data.fold` of a patient k-fold validates --
        if data.folds < 2 or not 0 <= data.fold < data.folds:
            raise ConfigError(
                f"data.folds={data.folds}, data.fold={data.fold}: use folds >= 2 and 0 <= fold < folds "
                "(or data.folds=0 for one val_fraction split)"
            )
        if data.val_fraction:  # the ordinary run's validation patients stay out of every fold
            records = cv_holdout_split(records, data)[0]
        train, val = patient_kfold(records, data.folds, data.split_seed)[data.fold]
    else:
        train, val = patient_split(records, data.val_fraction, data.split_seed)
    assert_no_patient_leak(train, val)
    names = task_class_names(data.task)
    for name, part in (("training", train), ("validation", val)):
        present = {r.label for r in part}
        if len(present) < len(names):
            missing = [names[i] for i in range(len(names)) if i not in present]
            raise DatasetError(
                f"the {name} split of {dataset.root} has no {', '.join(missing)} images "
                f"({len(records)} images in all); use more images (train.limit_train_images) or a "
                "different data.val_fraction"
            )
    return train, val


def cv_holdout_split(
    records: Sequence[ImageRecord], data: DataConfig
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(development, held out) for cross-validation: the held-out part is exactly the validation
    split an ordinary run with the same ``val_fraction``/``split_seed`` carves, so a fold ensemble
    is judged on patients no fold trained or selected on."""
    return patient_split(records, data.val_fraction, data.split_seed)


def class_counts(records: Sequence[ImageRecord]) -> tuple[int, int]:
    """(n_NORMAL, n_PNEUMONIA): every non-NORMAL class of a task is a pneumonia."""
    n_pos = sum(1 for r in records if r.label != NORMAL)
    return len(records) - n_pos, n_pos


def task_counts(records: Sequence[ImageRecord], num_classes: int) -> tuple[int, ...]:
    """Images per class index 0…num_classes-1."""
    counts = np.bincount([r.label for r in records], minlength=num_classes)
    return tuple(int(c) for c in counts)


def class_weights(records: Sequence[ImageRecord], class_names: Sequence[str]) -> list[float]:
    """Cross-entropy weight per class that balances the classes: n / (k · n_c) (sklearn's "balanced").

    With these weights every class contributes the same total weight, and the mean weight per image
    is 1, so the loss keeps the scale of the unweighted one.
    """
    counts = task_counts(records, len(class_names))
    if min(counts) == 0:
        shown = ", ".join(f"{n} {name}" for name, n in zip(class_names, counts))
        raise DatasetError(f"cannot balance classes with {shown} images")
    return [len(records) / (len(counts) * c) for c in counts]


def pos_weight(records: Sequence[ImageRecord]) -> float:
    """BCE weight of positives that balances the classes: n_negative / n_positive."""
    n_neg, n_pos = class_counts(records)
    if n_neg == 0 or n_pos == 0:
        raise DatasetError(f"cannot balance classes with {n_neg} NORMAL and {n_pos} PNEUMONIA images")
    return n_neg / n_pos


def split_info(
    data: DataConfig, limit: int, train: Sequence[ImageRecord], val: Sequence[ImageRecord]
) -> SplitInfo:
    patients = sorted({f"{r.split}/{r.patient_id}" for r in val})
    digest = hashlib.sha256("\n".join(patients).encode()).hexdigest()
    names = task_class_names(data.task)
    return SplitInfo(
        source=str(Path(data.root).expanduser().resolve()),
        split_seed=data.split_seed,
        val_fraction=data.val_fraction,
        limit_train_images=limit,
        train_counts=class_counts(train),
        val_counts=class_counts(val),
        val_patients=tuple(patients),
        val_patients_sha256=digest,
        task=data.task,
        class_names=names,
        train_class_counts=task_counts(train, len(names)),
        val_class_counts=task_counts(val, len(names)),
    )


class PixelDataset(Dataset):
    """Images (N, S, S) uint8 and labels (N,) float32 held in memory.

    ``__getitems__`` serves a whole batch with one indexing op (the DataLoader prefers it), and
    ``collate_batch`` passes the result through unchanged.
    """

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor):
        self.pixels = pixels
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pixels[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.pixels[index], self.labels[index]


def collate_batch(batch: Any) -> Any:
    """A batch from ``PixelDataset.__getitems__`` is already (images, labels)."""
    return batch


class ChestXrayDataModule(L.LightningDataModule):
    """Patient-level train/val of one dataset, preprocessed for one model's ``Preprocess``."""

    def __init__(
        self,
        data: DataConfig,
        train: TrainConfig,
        preprocess: Preprocess,
        cache_dir: str | Path,
        *,
        pin_memory: bool = False,
        progress: bool = False,
    ):
        super().__init__()
        if train.class_balance not in CLASS_BALANCE:
            raise ConfigError(
                f"train.class_balance={train.class_balance!r}; use one of {', '.join(CLASS_BALANCE)}"
            )
        if train.batch_size < 1:
            raise ConfigError(f"train.batch_size={train.batch_size}; use 1 or more")
        self.data_cfg, self.train_cfg, self.preprocess = data, train, preprocess
        self.class_names = task_class_names(data.task)
        self.augment = augment_params(train.augment, train.augment_overrides)
        self.cache_dir = Path(cache_dir)
        self.pin_memory = pin_memory
        self.progress = progress  # a bar while the cache decodes images (pneumocxr.progress decides)
        self._records: tuple[list[ImageRecord], list[ImageRecord]] | None = None
        self._sets: dict[str, PixelDataset] = {}
        self._prepared: np.ndarray | None = None  # pixels loaded by prepare_data in this process
        self._augmenter: BatchAugmenter | None = None
        self._pending_rng_state: torch.Tensor | None = None

    # ---- what is trained and selected on ---------------------------------------------------

    def records(self) -> tuple[list[ImageRecord], list[ImageRecord]]:
        """(train, val) records, computed once (discovery + split; no pixels)."""
        if self._records is None:
            self._records = split_records(self.data_cfg, self.train_cfg.limit_train_images)
        return self._records

    def split_info(self) -> SplitInfo:
        train, val = self.records()
        return split_info(self.data_cfg, self.train_cfg.limit_train_images, train, val)

    def pos_weight(self) -> float | None:
        """The loss's positive weight for class_balance="loss", else None."""
        return pos_weight(self.records()[0]) if self.train_cfg.class_balance == "loss" else None

    def loss_settings(self) -> dict[str, Any]:
        """ClassifierModule's class and loss-weight arguments for this task and class_balance."""
        k = len(self.class_names)
        if k == 2:
            return {"pos_weight": self.pos_weight()}
        balanced = self.train_cfg.class_balance == "loss"
        return {
            "num_classes": k,
            "class_weights": class_weights(self.records()[0], self.class_names) if balanced else None,
        }

    # ---- Lightning hooks -------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Fill the cache (Lightning runs this on one process per node, before ``setup``).

        The pixels are kept for this process's ``setup``; other DDP ranks read the filled cache.
        """
        if self._sets or self._prepared is not None:
            return  # a later fit/validate of the same run (fine-tuning phase, final validation)
        train, val = self.records()
        self._prepared = self._cache().load([*train, *val], progress=self.progress)

    def setup(self, stage: str | None = None) -> None:
        if self._sets:
            return
        train, val = self.records()
        loaded = self._prepared if self._prepared is not None else self._cache().load([*train, *val])
        self._prepared = None
        pixels = torch.from_numpy(loaded)  # (N_train + N_val, S, S) uint8
        labels = torch.tensor([float(r.label) for r in (*train, *val)], dtype=torch.float32)
        n = len(train)
        self._sets = {
            "train": PixelDataset(pixels[:n], labels[:n]),
            "val": PixelDataset(pixels[n:], labels[n:]),
        }
        k = len(self.class_names)
        logger.info(
            "training on %d images %s, validating on %d %s",
            n,
            class_counts(train) if k == 2 else dict(zip(self.class_names, task_counts(train, k))),
            len(val),
            class_counts(val) if k == 2 else dict(zip(self.class_names, task_counts(val, k))),
        )

    def train_pixels(self) -> torch.Tensor:
        """The training images, (N, S, S) uint8 in split order, unaugmented (after ``setup``)."""
        self.setup("fit")
        return self._sets["train"].pixels

    def val_pixels(self) -> torch.Tensor:
        """The validation images, (N, S, S) uint8 in split order (after ``setup``)."""
        self.setup("fit")
        return self._sets["val"].pixels

    def val_labels(self) -> torch.Tensor:
        """The validation labels, (N,) in split order: 0/1, or class indices for k classes."""
        self.setup("fit")
        return self._sets["val"].labels

    def train_dataloader(self) -> DataLoader:
        dataset = self._sets["train"]
        generator = torch.Generator().manual_seed(self.train_cfg.seed)
        sampler = None
        if self.train_cfg.class_balance == "sampler":
            labels = dataset.labels.long()
            per_class = torch.bincount(labels, minlength=len(self.class_names)).double()
            weights = (1.0 / per_class)[labels]  # each class drawn equally often
            sampler = WeightedRandomSampler(
                weights, num_samples=len(dataset), replacement=True, generator=generator
            )
        # A final batch of one image would give BatchNorm a single sample; drop only that case.
        drop_last = len(dataset) % self.train_cfg.batch_size == 1
        return self._loader(
            dataset, shuffle=sampler is None, sampler=sampler, generator=generator, drop_last=drop_last
        )

    def val_dataloader(self) -> DataLoader:
        dataset = self._sets["val"]
        sampler = None
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            # An instance of DistributedSampler, so Lightning does not replace it with its padded one.
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return self._loader(dataset, shuffle=False, sampler=sampler)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, labels = batch
        trainer = self._trainer
        training = trainer is not None and trainer.training
        augmenter = (
            self._get_augmenter(pixels.device)
            if training
            and (self.augment.has_geometry or self.augment.has_intensity or self.augment.has_texture)
            else None
        )
        images = to_model_input(
            pixels, self.preprocess, augment=augmenter, channels_last=self.train_cfg.channels_last
        )
        return images, labels

    def state_dict(self) -> dict[str, Any]:
        """The augmentation RNG, so a resumed run continues the same random stream."""
        if self._augmenter is not None:
            return {"augment_rng": self._augmenter.generator.get_state()}
        return {"augment_rng": self._pending_rng_state} if self._pending_rng_state is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("augment_rng")
        if state is None:
            return
        if self._augmenter is not None:
            self._augmenter.generator.set_state(state)
        else:
            self._pending_rng_state = state  # applied when the generator is created on the device

    # ---- helpers ---------------------------------------------------------------------------

    @property
    def _trainer(self) -> L.Trainer | None:
        return getattr(self, "trainer", None)

    def _cache(self) -> PreprocessedCache:
        return PreprocessedCache(self.cache_dir, self.preprocess.image_size, self.preprocess.resize_mode)

    def _get_augmenter(self, device: torch.device) -> BatchAugmenter:
        if self._augmenter is None or self._augmenter.generator.device != device:
            rank = self._trainer.global_rank if self._trainer is not None else 0
            # One independent stream per (seed, rank): DDP ranks must not augment identically.
            seed = int(np.random.SeedSequence([self.train_cfg.seed, rank]).generate_state(1)[0])
            generator = torch.Generator(device=device).manual_seed(seed)
            if self._pending_rng_state is not None:
                generator.set_state(self._pending_rng_state)
                self._pending_rng_state = None
            self._augmenter = BatchAugmenter(self.augment, generator)
        return self._augmenter

    def _loader(self, dataset: PixelDataset, **kwargs: Any) -> DataLoader:
        workers = self.train_cfg.num_workers
        if workers < 0:
            raise ConfigError(f"train.num_workers={workers}; use 0 (load in the main process) or more")
        return DataLoader(
            dataset,
            batch_size=self.train_cfg.batch_size,
            collate_fn=collate_batch,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.pin_memory,
            **kwargs,
        )
