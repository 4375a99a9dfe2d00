"""FGSM adversarial training (Goodfellow et al., ICLR 2015), off by default.

``train.adversarial_eps`` > 0 turns it on: in every training step a share
(``train.adversarial_fraction``) of the batch is replaced by its FGSM examples, computed on the
current weights just before the step, and the step trains on the mixed batch (clean and
adversarial images, one loss).

Units and space. ε is in 1/255 pixel units on the [0, 1] image BEFORE the model's normalisation
(``adversarial_eps: 2`` = every pixel moves by at most 2 grey levels of the 8-bit film), the
unit the robustness bench (``bench/adversarial.py``) attacks in. Batches arrive already
normalised (the DataModule normalises on the device), so the callback maps channel 0 back to the
gray plane (x·std + mean), takes the signed gradient step there, clips to [0, 1] and normalises
again with the one ``models.inputs.normalise``. That is the same as a step of ε/std in normalised
space on every channel, with the perturbation identical across the repeated channels, as a real
gray image's would be.

The attack's view of the model: BatchNorm uses the batch's statistics (as the training step
does) without updating its running statistics; Dropout is off (the gradient of the model's
function, not of one random mask, and no random numbers drawn, so enabling this changes nothing
else in the run's random streams). The gradient is taken with ``torch.autograd.grad`` with
respect to the pixels only: the parameters' ``.grad`` and the optimiser never see the attack.
The loss is the module's own (class-weighted) loss, on float64 logits: in float32 σ(z) rounds to
1 beyond |z| ≈ 17, the gradient of a confidently right image is exactly 0 and FGSM would leave it
clean (in float64 that happens beyond |z| ≈ 36). (k classes: unweighted cross-entropy, since the
module's class weights are float32; a weight only scales an image's own gradient.) FGSM keeps
only the sign of each image's gradient, so it equals the attack libraries' cross-entropy step
(a test checks it against ART's FastGradientMethod).

Why a callback: it leaves the LightningModule untouched; ``adversarial_callbacks(config.train)``
is what ``training/phases.py`` appends to a phase's callbacks. Two instances in one Trainer (the
phase's and one passed to ``train(..., callbacks=...)``) act once: the first one found.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from pneumocxr.config import TrainConfig
from pneumocxr.errors import ConfigError
from pneumocxr.models.inputs import normalise
from pneumocxr.models.pixel_space import to_pixels

logger = logging.getLogger(__name__)

__all__ = ["AdversarialTraining", "adversarial_callbacks", "adversarial_count", "attack_view", "fgsm_batch"]


def adversarial_count(batch_size: int, fraction: float) -> int:
    """How many images of a batch are replaced: ``fraction`` of it rounded up (at least one)."""
    return min(batch_size, max(1, math.ceil(fraction * batch_size))) if batch_size else 0


@contextmanager
def attack_view(model: nn.Module) -> Iterator[None]:
    """Dropout off and BatchNorm running statistics frozen, for the attack's forward pass.

    Training-mode BatchNorm keeps normalising with the batch's statistics (``track_running_stats``
    off skips the update only); eval-mode layers (a frozen backbone's) are left as they are.
    Everything is restored on exit.
    """
    dropouts = [m for m in model.modules() if isinstance(m, _DropoutNd) and m.training]
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    for module in dropouts:
        module.train(False)
    for module in norms:
        module.track_running_stats = False
    try:
        yield
    finally:
        for module in dropouts:
            module.train(True)
        for module in norms:
            module.track_running_stats = True


def fgsm_batch(
    module: L.LightningModule, images: torch.Tensor, labels: torch.Tensor, eps: float
) -> torch.Tensor:
    """FGSM examples of a normalised batch: (N, C, S, S) → (N, C, S, S), ε in [0, 1] pixel units.

    ``module`` is a ``ClassifierModule`` (anything with ``.model`` carrying a registry spec,
    ``forward`` → logits and ``loss(logits, labels)`` → per-image losses).
    """
    preprocess = module.model.spec.preprocess
    pixels = to_pixels(images, preprocess).requires_grad_(True)  # (N, 1, S, S) in [0, 1]
    with torch.enable_grad(), attack_view(module.model):
        logits = module(normalise(pixels, preprocess)).double()  # float64: no saturation (docstring)
        if logits.ndim == 2:  # k classes
            loss = F.cross_entropy(logits, labels.long(), reduction="sum")
        else:
            loss = module.loss(logits, labels.double()).sum()
        (grad,) = torch.autograd.grad(loss, pixels)
    adversarial = (pixels.detach() + eps * grad.sign()).clamp_(0.0, 1.0)
    return normalise(adversarial, preprocess).to(images.dtype)


class AdversarialTraining(L.Callback):
    """Replace the first ``fraction`` of every training batch by its FGSM examples at ``eps``/255.

    The loader shuffles, so the first images are a random share. The batch is changed in place
    (``on_train_batch_start`` receives the very tensors ``training_step`` will).
    """

    def __init__(self, eps: float, fraction: float = 0.5):
        if not eps > 0 or not 0.0 < fraction <= 1.0:
            raise ConfigError(
                f"adversarial training needs eps > 0 (1/255 units) and a fraction in (0, 1]; "
                f"got eps={eps}, fraction={fraction}"
            )
        self.eps = float(eps)  # in 1/255 pixel units
        self.fraction = float(fraction)
        self.active = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        first = next(cb for cb in trainer.callbacks if isinstance(cb, AdversarialTraining))
        self.active = first is self
        if self.active and stage == "fit":
            logger.info(
                "FGSM adversarial training: %.3g of each batch replaced by examples at ε = %g/255",
                self.fraction,
                self.eps,
            )

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int):
        if not self.active:
            return
        images, labels = batch
        if images.ndim != 4:
            raise ConfigError(
                f"adversarial training needs image batches (N, C, H, W), got {tuple(images.shape)}; "
                "it cannot run on cached features (train.frozen_features)"
            )
        k = adversarial_count(len(labels), self.fraction)
        with trainer.precision_plugin.forward_context():  # the step's autocast: same cost, same numerics
            adversarial = fgsm_batch(pl_module, images[:k], labels[:k], self.eps / 255.0)
        images[:k] = adversarial


def adversarial_callbacks(train: TrainConfig) -> list[L.Callback]:
    """The callbacks ``train`` asks for: [AdversarialTraining] when ``adversarial_eps`` > 0, else []."""
    if train.adversarial_eps <= 0:
        return []
    return [AdversarialTraining(train.adversarial_eps, train.adversarial_fraction)]
