"""MC-dropout: N stochastic forward passes of one checkpoint, reported like an ensemble of N members.

Monte-Carlo dropout (Gal & Ghahramani, 2016) keeps the model's Dropout layers ON at inference, so
each pass drops different units; the spread of the N answers is a cheap uncertainty estimate of a
single model. Here each pass is one "member" of the existing ``EnsemblePredictor`` machinery, so:

- P(PNEUMONIA) = the MEAN of the N passes' CALIBRATED probabilities sigmoid(z_i / T) (T: the
  checkpoint's temperature), decided at the checkpoint's threshold;
- ``EnsembleBatch.member_probabilities`` is the (N, images) matrix and ``spread`` its per-image
  standard deviation: the ``spread`` column of predictions.csv and the ``ensemble_spread``
  risk–coverage curve of ``evaluate`` (there it is the spread of the passes).

Only ``torch.nn`` Dropout modules (``Dropout``, ``Dropout2d`` …, p > 0) are switched to train
mode, and only while a pass runs; BatchNorm and everything else stays in eval mode (its running
statistics are never updated). Functional dropout inside a model's ``forward`` (timm heads use
``F.dropout(..., training=self.training)``) is not a module and stays off: such a model is refused
when it has no Dropout module, rather than repeating one deterministic answer N times.

Reproducible: pass i of a batch of pixels is seeded from (seed, i, the pixels' bytes), inside
``torch.random.fork_rng`` so the caller's global RNG state is restored afterwards. The same images
in the same batches give the same numbers. The threshold and temperature were chosen on plain
(non-MC) validation predictions: the mean of the passes is usually a little less extreme.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from pneumocxr.errors import ConfigError
from pneumocxr.inference.ensemble import EnsemblePredictor, TTAModel
from pneumocxr.inference.predictor import Predictor, PredictorBase

logger = logging.getLogger(__name__)

COMBINE_RULE_MC = "mean of {n} MC-dropout passes' calibrated probabilities sigmoid(logit / T)"

__all__ = ["MCDropoutPredictor", "dropout_layers", "with_mc_dropout"]


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The Dropout modules of ``model`` that drop anything (p > 0)."""
    return [m for m in model.modules() if isinstance(m, _DropoutNd) and m.p > 0]


@contextlib.contextmanager
def _dropout_on(layers: list[nn.Module]) -> Iterator[None]:
    """``layers`` in train mode for the block, then back to the mode each was in."""
    before = [layer.training for layer in layers]
    try:
        for layer in layers:
            layer.train()
        yield
    finally:
        for layer, mode in zip(layers, before):
            layer.train(mode)


def _pass_seed(seed: int, index: int, pixels: np.ndarray) -> int:
    """A 63-bit seed for pass ``index`` over ``pixels``: independent of call order and threads."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{seed}:{index}:{pixels.shape}".encode())
    digest.update(np.ascontiguousarray(pixels).data)
    return int.from_bytes(digest.digest(), "little") >> 1


class _Pass(Predictor):
    """One stochastic pass: the shared loaded model with its Dropout layers on, seeded per batch."""

    def __init__(self, base: Predictor, index: int, seed: int, layers: list[nn.Module], lock):
        # The base predictor's model, already placed: moving it again and eval() are no-ops.
        super().__init__(
            base.model,
            base.meta,
            device=str(base.device),
            batch_size=base.batch_size,
            channels_last=base.channels_last,
            bf16=getattr(base.backend, "bf16", False),
        )
        self.index, self.seed, self.layers, self.lock = index, seed, layers, lock

    def _logits(self, pixels: np.ndarray) -> np.ndarray:
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        # One pass at a time: the dropout switch and the global RNG seed are shared state.
        with self.lock, _dropout_on(self.layers), torch.random.fork_rng(devices, device_type="cuda"):
            torch.manual_seed(_pass_seed(self.seed, self.index, pixels))
            return super()._logits(pixels)


class MCDropoutPredictor(EnsemblePredictor):
    """``passes`` MC-dropout passes of one loaded ``Predictor``, used like any predictor."""

    def __init__(self, base: Predictor, passes: int, *, seed: int = 0):
        if isinstance(passes, bool) or not isinstance(passes, int) or passes < 2:
            raise ConfigError(f"--mc-dropout {passes!r}: use 2 or more passes (20-50 is usual)")
        if isinstance(base, EnsemblePredictor):
            raise ConfigError(
                f"--mc-dropout with the ensemble file {base.meta.path}: an ensemble already reports its "
                "members' spread; use MC-dropout with a single checkpoint"
            )
        if base.model is None:
            raise ConfigError(
                f"--mc-dropout with {base.meta.path}: it runs on {base.runtime}, without the torch module "
                "whose Dropout layers the passes switch on; use the source checkpoint (--runtime torch)"
            )
        layers = dropout_layers(base.model)
        if not layers:
            raise ConfigError(
                f"--mc-dropout: {base.meta.path} ({base.meta.model_name}) has no Dropout layer "
                "(torch.nn.Dropout with p > 0), so every pass would give the same answer; drop "
                "--mc-dropout, or use a model with dropout (custom_cnn, vgg16)"
            )
        lock = threading.Lock()
        members = [_Pass(base, i, seed, layers, lock) for i in range(passes)]
        super().__init__(members, base.meta, tta=isinstance(base.model, TTAModel))
        self.model = base.model  # one model, run ``passes`` times
        self.mc_passes, self.mc_seed = passes, seed
        self.variant = f"mc_dropout={passes}" + (",tta" if self.tta else "")
        self.dropout_layers = layers
        logger.info(
            "MC-dropout: %d passes of %s with %d Dropout layer(s) on, seed %d",
            passes,
            base.meta.path,
            len(layers),
            seed,
        )

    def describe(self) -> dict[str, Any]:
        info = PredictorBase.describe(self)
        info.update(
            combine=COMBINE_RULE_MC.format(n=self.mc_passes),
            tta=self.tta,
            mc_dropout={
                "passes": self.mc_passes,
                "seed": self.mc_seed,
                "dropout_layers": len(self.dropout_layers),
            },
        )
        return info


def with_mc_dropout(predictor: Predictor, passes: int, *, seed: int = 0) -> MCDropoutPredictor:
    """``predictor`` run as ``passes`` MC-dropout passes (ConfigError when it has no Dropout layer)."""
    return MCDropoutPredictor(predictor, passes, seed=seed)
