"""The LightningModule: any registry model + loss, optimiser, LR schedule and validation metrics.

Inputs arrive already normalised and augmented (the DataModule does that on the device, see
``datamodule.py``), so this module only sees ``(images, labels)`` with images (N, C, H, W)
float and labels (N,) float: {0, 1} for the binary task, class indices 0…k-1 for k > 2 classes.

Binary (``num_classes=2``): one PNEUMONIA logit, BCE with ``pos_weight``. k classes (the
``normal-bacterial-viral`` task): k logits, softmax cross-entropy with per-class ``class_weights``.
The validation metrics keep their names either way, so checkpoint selection (``val_auc``), early
stopping and the LR plateau (``val_loss``) and history.csv work unchanged. For k classes they mean:
``val_auc`` macro one-vs-rest AUC, ``val_acc`` accuracy of the argmax, ``val_sensitivity`` macro
recall, ``val_specificity`` macro specificity, ``val_loss`` the unweighted mean cross-entropy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryRecall,
    BinarySpecificity,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassRecall,
    MulticlassSpecificity,
)

logger = logging.getLogger(__name__)

VAL_METRICS = ("val_loss", "val_acc", "val_auc", "val_sensitivity", "val_specificity")


def plateau_scheduler(
    optimizer: torch.optim.Optimizer, factor: float, patience: int
) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """ReduceLROnPlateau with Keras' patience semantics (the reference recipe is Keras).

    Keras cuts the LR on the ``patience``-th epoch without improvement; torch cuts when the
    count EXCEEDS ``patience``, one epoch later. ``patience - 1`` makes "patience 5" mean the
    same thing in both: after 5 flat epochs the LR is multiplied by ``factor``.
    """
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=factor, patience=max(0, patience - 1)
    )


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: linear warm-up over the first 5 % of steps, then a cosine decay to 1 % of the LR.

    Why for short fine-tuning runs: a plateau scheduler with a patience of epochs never fires in
    the 3-6 epochs a CPU recipe can afford, so the LR would stay at its peak until the last step;
    the warm-up keeps the first large steps from wrecking pretrained features (the new head's
    gradients are large at the start). Every parameter group keeps its own base LR.
    """
    total = max(1, total_steps)
    warmup = max(1, round(0.05 * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(
    param_groups: Iterable[dict[str, Any]], lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Adam as in the reference; with weight decay, AdamW (decoupled decay, the sound form of L2 for Adam)."""
    groups = [g for g in param_groups if any(p.requires_grad for p in g["params"])]
    if not groups:
        raise ValueError("no trainable parameters: every parameter of the model is frozen")
    if weight_decay > 0:
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(groups, lr=lr)


class ClassifierModule(L.LightningModule):
    """Training of a model that outputs (N, 1) PNEUMONIA logits (binary) or (N, k) logits (k > 2).

    ``param_groups``: optimiser groups (dicts with "params" and optionally "lr"/"name"); default
    is every trainable parameter at ``lr``. ``pos_weight``: the BCE weight of positive samples
    (binary class-weighted loss), None for none. ``class_weights``: the cross-entropy weight of each
    of the ``num_classes`` classes (k > 2), None for none.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        pos_weight: float | None = None,
        plateau_factor: float = 0.5,
        plateau_patience: int = 5,
        param_groups: list[dict[str, Any]] | None = None,
        num_classes: int = 2,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        lr_schedule: str = "plateau",
    ):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}; a classifier needs at least 2 classes")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"{len(class_weights)} class weights for {num_classes} classes")
        self.save_hyperparameters(ignore=["model", "param_groups"])
        self.model = model
        self._param_groups = param_groups
        self.num_classes = num_classes
        self.multiclass = num_classes > 2
        weight = torch.tensor([pos_weight if pos_weight is not None else 1.0], dtype=torch.float32)
        self.register_buffer("pos_weight", weight, persistent=False)
        weights = torch.tensor(class_weights or [1.0] * num_classes, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)
        self.val_loss = MeanMetric()
        if self.multiclass:
            k = num_classes
            self.val_acc = MulticlassAccuracy(num_classes=k, average="micro")
            self.val_auc = MulticlassAUROC(num_classes=k, average="macro")  # one-vs-rest, mean over classes
            self.val_sensitivity = MulticlassRecall(num_classes=k, average="macro")
            self.val_specificity = MulticlassSpecificity(num_classes=k, average="macro")
        else:
            self.val_acc = BinaryAccuracy(threshold=0.5)
            self.val_auc = BinaryAUROC()
            self.val_sensitivity = BinaryRecall(threshold=0.5)
            self.val_specificity = BinarySpecificity(threshold=0.5)
        # When True, validation also keeps every (logit, label) so the caller can calibrate on them.
        self.collect_predictions = False
        self._collected: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N,) PNEUMONIA logits (binary) or (N, k) class logits, in float32."""
        logits = self.model(images)
        if self.multiclass:
            if logits.ndim != 2 or logits.shape[1] != self.num_classes:
                raise ValueError(
                    f"{self.num_classes}-class training needs (N, {self.num_classes}) logits, "
                    f"the model gave {tuple(logits.shape)}"
                )
            return logits.float()
        if logits.ndim != 2 or logits.shape[1] != 1:
            raise ValueError(f"binary training needs (N, 1) logits, the model gave {tuple(logits.shape)}")
        return logits[:, 0].float()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, *, weighted: bool = True) -> torch.Tensor:
        """Per-image loss (N,): BCE (binary) or softmax cross-entropy (k classes), class-weighted or not.

        Weighted per image, as the mean of the training step divides by N (Keras' class_weight
        semantics, the binary pos_weight too), not by the sum of the weights as torch's weighted
        cross-entropy ``reduction="mean"`` would.
        """
        if self.multiclass:
            weight = self.class_weights if weighted else None
            return F.cross_entropy(logits, labels.long(), weight=weight, reduction="none")
        pos_weight = self.pos_weight if weighted else None
        return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight, reduction="none")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        eps = self.hparams.label_smoothing
        if self.multiclass:
            weight = self.class_weights
            loss = F.cross_entropy(
                logits, labels.long(), weight=weight, reduction="none", label_smoothing=eps
            )
            loss = loss.mean()
        else:  # without smoothing bit-identical to the mean of self.loss
            targets = labels * (1.0 - eps) + 0.5 * eps if eps else labels
            loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight)
        self.log(
            "train_loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(labels),
            sync_dist=True,
        )
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        # val_loss is the UNweighted mean BCE over every validation image (as Keras reports it:
        # class weights shape the training objective, not the yardstick). The MeanMetric and the
        # torchmetrics states all-gather across DDP ranks, so the value is the whole set's.
        self.val_loss.update(self.loss(logits, labels, weighted=False))
        probs = torch.softmax(logits, dim=1) if self.multiclass else torch.sigmoid(logits)
        targets = labels.long()
        for metric in (self.val_acc, self.val_auc, self.val_sensitivity, self.val_specificity):
            metric.update(probs, targets)
        if self.collect_predictions:
            self._collected.append((logits.detach().float().cpu(), labels.detach().cpu()))
        for name in VAL_METRICS:
            self.log(
                name,
                getattr(self, name),
                on_step=False,
                on_epoch=True,
                prog_bar=name in ("val_loss", "val_auc"),
            )

    def on_validation_epoch_start(self) -> None:
        self._collected = []

    def collected_predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """(logits (N,) or (N, k), labels (N,)) of the last validation pass, from every DDP rank.

        Ranks hold different numbers of images (the validation sampler does not pad), so they are
        gathered as objects, which allows uneven sizes.
        """
        empty = torch.empty((0, self.num_classes) if self.multiclass else 0)
        logits = torch.cat([z for z, _ in self._collected]) if self._collected else empty
        labels = torch.cat([y for _, y in self._collected]) if self._collected else torch.empty(0)
        parts = [(logits, labels)]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, (logits, labels))
        return (
            torch.cat([z for z, _ in parts]).numpy().astype(np.float64),
            torch.cat([y for _, y in parts]).numpy().astype(np.int64),
        )

    def configure_optimizers(self) -> dict[str, Any]:
        groups = self._param_groups or [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        optimizer = make_optimizer(groups, self.hparams.lr, self.hparams.weight_decay)
        if self.hparams.lr_schedule == "cosine":
            total = int(self.trainer.estimated_stepping_batches)
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": warmup_cosine(optimizer, total), "interval": "step"},
            }
        scheduler = plateau_scheduler(optimizer, self.hparams.plateau_factor, self.hparams.plateau_patience)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": "val_loss",
                "interval": "epoch",
                "frequency": 1,
            },
        }
