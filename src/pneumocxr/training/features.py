"""The frozen-feature stage: run a frozen backbone over the data ONCE, then train only the head.

With the backbone frozen, every epoch of ordinary training recomputes exactly the same backbone
output for every image (eval-mode BatchNorm, no gradients) — all but a sliver of each step's
cost, for nothing. This stage computes the input of the model's classifier (``spec.classifier``)
once for the training and validation images, keeps it in memory (and on disk under
``<cache_dir>/features/``, keyed by everything it depends on), and fits the head on those
vectors with the usual Lightning module, callbacks, metrics and history. An epoch then costs
milliseconds instead of minutes on a CPU.

No augmentation in this stage, on purpose: an augmented image has different features, so
augmenting would mean running the backbone every epoch again, which is what the stage exists to
avoid. The head is a small linear layer on 1,280 (Lite0) or so pooled features; it is not the
part that overfits to pixel-level detail, and the optional fine-tuning phase
(``train.finetune_epochs``) that follows trains the unfrozen last blocks WITH augmentation.

The head module trained here (:class:`FeatureHead`) shares its modules with the full model and
has the same ``state_dict`` keys, so its Lightning checkpoints hold a complete model: loading the
best one into the full model gives an ordinary network, and ``best.pt`` is an ordinary
self-describing checkpoint that evaluate/explain cannot tell apart from any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from pneumocxr.config import to_dict
from pneumocxr.data.records import ImageRecord
from pneumocxr.models import model_spec
from pneumocxr.models.inputs import to_model_input
from pneumocxr.training.datamodule import ChestXrayDataModule, PixelDataset

logger = logging.getLogger(__name__)

FEATURE_FORMAT_VERSION = 1  # bump when what a cached feature file holds changes


def freeze_backbone(model: nn.Module) -> int:
    """Freeze every parameter outside the model's classifier; returns how many stay trainable."""
    prefix = model_spec(model).classifier + "."
    trainable = 0
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(prefix)
        trainable += param.numel() if param.requires_grad else 0
    return trainable


def feature_dropout(model: nn.Module) -> float:
    """The dropout the model applies to its classifier's INPUT in training, which the head stage
    must apply to the cached features to train the same head.

    timm backbones and EfficientNet-Lite drop the pooled features before their linear head (their
    ``dropout`` kwarg); heads with their own Dropout inside (vgg16_transfer, custom_cnn) need none.
    """
    spec = model_spec(model)
    head = model.get_submodule(spec.classifier)
    if any(isinstance(m, nn.Dropout) for m in head.modules()):
        return 0.0
    return float(spec.kwargs.get("dropout", 0.0) or 0.0)


class FeatureHead(nn.Module):
    """Cached features (N, …) → the model's logits (N, k): dropout + the model's own classifier.

    It registers the full model's children under their own names (shared, not copied), so its
    ``state_dict`` is the full model's: a Lightning checkpoint of this module loads strictly into
    the full model. Only the classifier runs; the frozen backbone just rides along.
    """

    def __init__(self, model: nn.Module, dropout: float | None = None):
        super().__init__()
        self.classifier_name = model_spec(model).classifier
        for name, child in model.named_children():
            self.add_module(name, child)
        self.feature_dropout = nn.Dropout(feature_dropout(model) if dropout is None else dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.get_submodule(self.classifier_name)(self.feature_dropout(features))

    def train(self, mode: bool = True) -> FeatureHead:
        """Only the head changes mode: the backbone is not run here and keeps its own state."""
        self.training = mode
        self.feature_dropout.train(mode)
        self.get_submodule(self.classifier_name).train(mode)
        return self


class _ClassifierInput:
    """Forward pre-hook that records what the classifier receives: the backbone's features."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.value = args[0].detach()


@torch.no_grad()
def extract_features(
    model: nn.Module,
    pixels: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    autocast: Any = None,
    progress: bool = False,
    desc: str = "features",
) -> torch.Tensor:
    """(N, S, S) uint8 pixels → (N, …) classifier inputs of ``model`` in eval mode (no augmentation).

    ``autocast`` is a context-manager factory (e.g. Lightning's precision plugin's
    ``forward_context``), so the features are computed in the precision the run trains in.
    """
    spec = model_spec(model)
    recorder = _ClassifierInput()
    handle = model.get_submodule(spec.classifier).register_forward_pre_hook(recorder)
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in tqdm(range(0, len(pixels), batch_size), desc=desc, unit="batch", disable=not progress):
            batch = pixels[start : start + batch_size].to(device)
            images = to_model_input(batch, spec.preprocess, channels_last=channels_last)
            with autocast() if autocast is not None else contextlib.nullcontext():
                model(images)
            chunks.append(recorder.value.cpu())  # type: ignore[union-attr]
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0)


def feature_key(model: nn.Module, precision: str, channels_last: bool, arrays: list[torch.Tensor]) -> str:
    """What the features depend on: model + kwargs, preprocess, backbone weights, precision, pixels.

    Hashing the weights and pixels costs well under a second here; it makes a stale hit
    impossible (another weights file, another split, changed images all give another key).
    """
    spec = model_spec(model)
    digest = hashlib.blake2b(digest_size=16)
    meta = {
        "format": FEATURE_FORMAT_VERSION,
        "model": spec.name,
        "kwargs": spec.kwargs,
        "preprocess": to_dict(spec.preprocess),
        "precision": precision,
        "channels_last": channels_last,
    }
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
    head = spec.classifier + "."
    for name, tensor in sorted(model.state_dict().items()):
        if not name.startswith(head):
            digest.update(name.encode())
            digest.update(_bytes(tensor))
    for array in arrays:
        digest.update(str(tuple(array.shape)).encode())
        digest.update(_bytes(array))
    return digest.hexdigest()


def _bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def load_cached_features(path: Path) -> dict[str, torch.Tensor] | None:
    """The cached {"train", "val"} features, or None when absent or unreadable (then recomputed)."""
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or corrupt: recompute rather than fail the run
        logger.warning("ignoring unreadable feature cache %s (%s); recomputing", path, exc)
        return None
    if not isinstance(data, dict) or not {"train", "val"} <= set(data):
        return None
    return {"train": data["train"], "val": data["val"]}


def save_cached_features(path: Path, features: dict[str, torch.Tensor]) -> None:
    """Atomic write (temp file + rename): concurrent runs or DDP ranks never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(features, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FrozenFeatureDataModule(ChestXrayDataModule):
    """Batches of (features, label) of the frozen backbone instead of (pixels, label).

    Shares discovery, split and pixels with ``source``, the run's pixel DataModule (which the
    fine-tuning phase and the final validation use again), so nothing is discovered or decoded
    twice. Train/val loaders, sampling and DDP sharding are the parent's, over feature tensors.
    ``extractions`` counts backbone passes over the data: 1, or 0 when the features came from disk.
    Under DDP each rank computes the whole set's features on its own device, then trains on its
    shard of them (rank 0 writes the disk cache).
    """

    def __init__(self, source: ChestXrayDataModule, model: nn.Module, *, progress: bool = False):
        super().__init__(
            source.data_cfg,
            source.train_cfg,
            source.preprocess,
            source.cache_dir,
            pin_memory=source.pin_memory,
        )
        self.source = source
        self.network = model
        self.progress = progress
        self.extractions = 0

    def records(self) -> tuple[list[ImageRecord], list[ImageRecord]]:
        return self.source.records()

    def prepare_data(self) -> None:
        self.source.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self._sets:
            return
        self.source.setup(stage)
        pixel_sets = self.source._sets
        features = self._features({name: pixel_sets[name].pixels for name in ("train", "val")})
        self._sets = {
            name: PixelDataset(features[name], pixel_sets[name].labels) for name in ("train", "val")
        }

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        features, labels = batch
        return features.float(), labels  # cached in the run's compute dtype (bf16 halves the memory)

    def state_dict(self) -> dict[str, Any]:
        return {}  # no augmentation, no random state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return None

    def _features(self, pixels: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """From the disk cache when the same model, weights, precision and pixels were seen before."""
        trainer = self._trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        precision = str(trainer.precision) if trainer is not None else "32"
        autocast = trainer.precision_plugin.forward_context if trainer is not None else None
        channels_last = self.train_cfg.channels_last
        key = feature_key(self.network, precision, channels_last, [pixels["train"], pixels["val"]])
        path = self.cache_dir / "features" / f"{key}.pt"
        cached = load_cached_features(path)
        if cached is not None and all(len(cached[n]) == len(pixels[n]) for n in pixels):
            logger.info(
                "frozen-feature stage: features of %s read from %s", model_spec(self.network).name, path
            )
            return cached
        start = time.monotonic()
        self.network.to(device)
        features = {
            name: extract_features(
                self.network,
                images,
                batch_size=self.train_cfg.batch_size,
                device=device,
                channels_last=channels_last,
                autocast=autocast,
                progress=self.progress,
                desc=f"{name} features",
            )
            for name, images in pixels.items()
        }
        self.extractions += 1
        seconds = time.monotonic() - start
        count = sum(len(v) for v in pixels.values())
        logger.info(
            "frozen-feature stage: %d images through the frozen backbone once in %.1f s (%.0f img/s); "
            "features %s",
            count,
            seconds,
            count / max(seconds, 1e-9),
            tuple(features["train"].shape[1:]),
        )
        if trainer is None or trainer.is_global_zero:
            save_cached_features(path, features)
        return features


def frozen_feature_stage(
    model: nn.Module, source: ChestXrayDataModule, *, pretrained: bool, progress: bool = False
) -> tuple[FeatureHead, FrozenFeatureDataModule]:
    """Freeze ``model``'s backbone and return (head module, feature DataModule) for phase 1."""
    trainable = freeze_backbone(model)
    spec = model_spec(model)
    if not pretrained:
        logger.warning(
            "train.frozen_features with model.pretrained=false: %s's frozen backbone is randomly "
            "initialised, so the head learns on random-projection features",
            spec.name,
        )
    logger.info(
        "frozen-feature stage: %s backbone frozen, training %s (%d parameters) on cached features",
        spec.name,
        spec.classifier,
        trainable,
    )
    return FeatureHead(model), FrozenFeatureDataModule(source, model, progress=progress)
