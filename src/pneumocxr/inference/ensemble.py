"""Ensembles and test-time augmentation, behind the ``Predictor`` interface.

**Ensemble** (``EnsemblePredictor``, from an ensemble file ``pneumocxr ensemble create`` writes):
P(PNEUMONIA) = the MEAN of the members' CALIBRATED probabilities sigmoid(z_m / T_m). Averaging
calibrated probabilities (not raw logits) lets members with different temperatures (VGG16 and a
small CNN are calibrated very differently) count equally. The ensemble's own threshold applies to
that mean; it was chosen on validation data when the file was made (``create_ensemble``): the
pooled out-of-fold predictions of a cross-validation, or the members' shared validation split.
``logits`` of an ``EnsembleBatch`` are logit(mean) with temperature 1, so every consumer of a
``PredictionBatch`` (evaluate, compare, reports) works unchanged; ``member_probabilities`` keeps
the (members, images) matrix for the spread.

**Members keep their own preprocessing**: each member decodes the image at its own ``Preprocess``
(size, resize mode) with the same ``decode_record`` as a single checkpoint, so a member gives
exactly the probabilities it gives alone. Members sharing a preprocessing share the decode.

**TTA** (``TTAModel``): the model sees the image and four small geometric variants (±6 % scale,
±2 % diagonal shift, edges replicated) and its LOGITS are averaged, so a model with TTA is still
one logit per image with its own temperature and threshold. No flips: left/right anatomy (heart on
the left) is information, not noise. The threshold was chosen without TTA unless the ensemble was
created with ``--tta``; averaging shrinks extreme logits slightly, so say which was used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pneumocxr.data.cache import PreprocessedCache, decode_record
from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import DatasetError
from pneumocxr.inference.inputs import LoadedInput
from pneumocxr.inference.predictor import (
    DEFAULT_BATCH_SIZE,
    Prediction,
    PredictionBatch,
    Predictor,
    PredictorBase,
    file_record,
    time_steps,
)
from pneumocxr.inference.probabilities import logit
from pneumocxr.models import CheckpointMeta
from pneumocxr.models.ensemble_file import is_ensemble_file, load_ensemble

logger = logging.getLogger(__name__)

DECODE_CHUNK = 256  # images decoded at a time when no cache is given
# (scale, shift_x, shift_y) in normalised image coordinates [-1, 1]: identity, zoom in/out, two shifts
TTA_VIEWS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0),
    (1.06, 0.0, 0.0),
    (0.94, 0.0, 0.0),
    (1.0, 0.04, 0.04),
    (1.0, -0.04, -0.04),
)
COMBINE_RULE = "mean of the members' calibrated probabilities sigmoid(logit / T_member)"

__all__ = [
    "COMBINE_RULE",
    "TTA_VIEWS",
    "EnsembleBatch",
    "EnsemblePredictor",
    "TTAModel",
    "is_ensemble_file",
]


class TTAModel(nn.Module):
    """``model`` applied to ``views`` of each input (one batched forward pass); logits averaged."""

    def __init__(self, model: nn.Module, views: Sequence[tuple[float, float, float]] = TTA_VIEWS):
        super().__init__()
        self.model = model
        self.spec = getattr(model, "spec", None)
        theta = torch.zeros(len(views), 2, 3)
        for i, (scale, dx, dy) in enumerate(views):
            # output pixel (x, y) samples input (x / scale - dx, y / scale - dy): zoom by `scale`, shift
            theta[i, 0, 0] = theta[i, 1, 1] = 1.0 / scale
            theta[i, 0, 2], theta[i, 1, 2] = -dx, -dy
        self.register_buffer("theta", theta, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, v = x.shape[0], self.theta.shape[0]
        theta = self.theta.to(x.dtype).repeat_interleave(n, dim=0)  # (V*N, 2, 3), view-major
        stacked = x.repeat(v, 1, 1, 1)  # (V*N, C, S, S)
        grid = F.affine_grid(theta, list(stacked.shape), align_corners=False)
        views = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if x.is_contiguous(memory_format=torch.channels_last):
            views = views.contiguous(memory_format=torch.channels_last)
        logits = self.model(views)  # (V*N, k)
        return logits.reshape(v, n, -1).mean(dim=0)  # (N, k)


@dataclass(frozen=True)
class EnsembleBatch(PredictionBatch):
    """A ``PredictionBatch`` of an ensemble, plus each member's calibrated probabilities."""

    # binary: (M, N) calibrated P(positive class) per member; k classes: (M, N, k) per member and class
    member_probabilities: np.ndarray

    @property
    def spread(self) -> np.ndarray:
        """(N,) standard deviation over members (population, ddof = 0) of the probability of the
        class the ensemble predicts: their disagreement (binary: of P(positive), the same number)."""
        members = self.member_probabilities
        if members.ndim == 3:
            members = members[:, np.arange(members.shape[1]), self.prediction]  # (M, N)
        return members.std(axis=0)


def combine(batches: Sequence[PredictionBatch], threshold: float) -> EnsembleBatch:
    """The ensemble's batch: mean of the members' calibrated class probabilities; a binary ensemble
    decides at ``threshold``, a k-class one by argmax. Every member must have the same classes."""
    names = batches[0].class_names
    for batch in batches[1:]:
        if batch.class_names != names:
            raise DatasetError(
                f"ensemble members predict different classes ({', '.join(names)} vs "
                f"{', '.join(batch.class_names)}); combine only models of the same task"
            )
    if len(names) > 2:  # k classes: average the (N, k) rows, logits = log(mean) with T = 1
        members = np.stack([b.probabilities for b in batches])  # (M, N, k)
        with np.errstate(divide="ignore"):
            merged = PredictionBatch.from_logits(np.log(members.mean(axis=0)), 1.0, threshold, names)
        rows = np.arange(len(merged))
        raw = np.stack([_raw_class_probabilities(b) for b in batches]).mean(axis=0)  # (N, k)
        return EnsembleBatch(
            logits=merged.logits,
            probability=raw[rows, merged.prediction],
            calibrated_probability=merged.calibrated_probability,
            prediction=merged.prediction,
            threshold=float(threshold),
            temperature=1.0,
            member_probabilities=members,
            class_names=names,
        )
    calibrated = np.stack([b.calibrated_probability for b in batches])  # (M, N)
    mean = calibrated.mean(axis=0)
    return EnsembleBatch(
        logits=logit(mean),
        probability=np.stack([b.probability for b in batches]).mean(axis=0),
        calibrated_probability=mean,
        prediction=(mean >= threshold).astype(np.int64),
        threshold=float(threshold),
        temperature=1.0,
        member_probabilities=calibrated,
        class_names=names,
    )


def _raw_class_probabilities(batch: PredictionBatch) -> np.ndarray:
    """(N, k) uncalibrated (T = 1) class probabilities of a k-class batch."""
    return PredictionBatch.from_logits(batch.logits, 1.0, batch.threshold, batch.class_names).probabilities


class EnsemblePredictor(PredictorBase):
    """Several loaded members on one device, used exactly like a ``Predictor`` (module docstring)."""

    def __init__(self, members: Sequence[Predictor], meta: CheckpointMeta, *, tta: bool = False):
        if not members:
            raise DatasetError("an ensemble needs at least one member")
        self.members = tuple(members)
        self.meta = meta
        self.device = members[0].device
        self.batch_size = members[0].batch_size
        self.channels_last = members[0].channels_last
        self.model = nn.ModuleList([m.model for m in members])  # parameter counts, .to(); not called
        self.tta = tta
        self.variant = "tta" if tta else ""
        groups: dict[tuple[int, str], list[int]] = {}
        for i, member in enumerate(members):
            groups.setdefault((member.preprocess.image_size, member.preprocess.resize_mode), []).append(i)
        self.groups = groups  # (size, resize mode) → member indices: one decode per group

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        *,
        device: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        tta: bool | None = None,
        bf16: bool = False,
    ) -> EnsemblePredictor:
        """Load an ensemble file; ``tta=None`` uses what the file was created with; ``bf16``: every
        member under bf16 autocast (``backends.TorchBackend``)."""
        members, meta = load_ensemble(path)
        use_tta = bool(meta.extra.get("tta", False)) if tta is None else bool(tta)
        predictors = [
            Predictor(
                TTAModel(model) if use_tta else model, m, device=device, batch_size=batch_size, bf16=bf16
            )
            for model, m in members
        ]
        logger.info(
            "loaded ensemble %s: %d members (%s) on %s, threshold %.4g on the mean calibrated probability%s",
            path,
            len(members),
            ", ".join(meta.model_kwargs["members"]),
            predictors[0].device,
            meta.threshold,
            ", with TTA" if use_tta else "",
        )
        return cls(predictors, meta, tta=use_tta)

    @property
    def num_parameters(self) -> tuple[int, int]:
        """(total, trainable) over all members."""
        counts = [m.num_parameters for m in self.members]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            combine=COMBINE_RULE,
            tta=self.tta,
            members=[
                {
                    "name": name,
                    "model_name": m.meta.model_name,
                    "image_size": m.preprocess.image_size,
                    "threshold": m.threshold,
                    "temperature": m.temperature,
                }
                for name, m in zip(self.meta.model_kwargs.get("members", []), self.members)
            ],
        )
        return info

    # ---- prediction ------------------------------------------------------------------------

    def predict_arrays(self, pixels: np.ndarray) -> EnsembleBatch:
        """(N, S, S) uint8 → predictions; only when every member takes the same input size."""
        if len(self.groups) > 1:
            sizes = ", ".join(f"{s}px {mode}" for s, mode in self.groups)
            raise DatasetError(
                f"this ensemble's members take different inputs ({sizes}), so one pixel array cannot feed "
                "them all; use predict_file or predict_records, which decode per member"
            )
        return combine([m.predict_arrays(pixels) for m in self.members], self.threshold)

    def predict_per_input(self, pixels: Mapping[tuple[int, str], np.ndarray]) -> EnsembleBatch:
        """Predictions from one (N, S, S) uint8 array per member input (each key of ``self.groups``):
        for callers that render the pixels themselves, e.g. the stress suite, whose shifted film must
        be the same for every member before each member's own resize."""
        missing = [f"{s}px {mode}" for s, mode in self.groups if (s, mode) not in pixels]
        if missing:
            raise DatasetError(f"no pixels given for the member input(s) {', '.join(missing)}")
        parts: list[PredictionBatch | None] = [None] * len(self.members)
        for key, indices in self.groups.items():
            for i in indices:
                parts[i] = self.members[i].predict_arrays(pixels[key])
        return combine(parts, self.threshold)

    def predict_records(
        self, records: Sequence[ImageRecord], *, cache: PreprocessedCache | None = None
    ) -> EnsembleBatch:
        """Like ``Predictor.predict_records``; with ``cache``, each preprocessing has its own cache
        under the same folder. A bad image raises, never skipped."""
        parts: list[list[PredictionBatch]] = [[] for _ in self.members]
        if not records:
            return combine([m.predict_records([]) for m in self.members], self.threshold)
        for (size, mode), indices in self.groups.items():
            if cache is not None:
                chunks = [PreprocessedCache(cache.directory.parent, size, mode).load(records)]  # (N, S, S)
            else:
                chunks = (
                    np.stack([decode_record(r, size, mode) for r in records[i : i + DECODE_CHUNK]])
                    for i in range(0, len(records), DECODE_CHUNK)
                )
            for pixels in chunks:
                for i in indices:
                    parts[i].append(self.members[i].predict_arrays(pixels))
        return combine([_concatenate(p) for p in parts], self.threshold)

    def _predict_input(self, loaded: LoadedInput) -> EnsembleBatch:
        """One loaded input, decoded once per member preprocessing."""
        parts: list[PredictionBatch] = [None] * len(self.members)  # type: ignore[list-item]
        for (size, mode), indices in self.groups.items():
            square = loaded.square(size, mode)[None]  # (1, S, S)
            for i in indices:
                parts[i] = self.members[i].predict_arrays(square)
        return combine(parts, self.threshold)

    def predict_file(self, path: str | os.PathLike) -> Prediction:
        """One image file, decoded once per member preprocessing."""
        return self.predict_file_batch(path)[0]

    def predict_file_batch(self, path: str | os.PathLike) -> EnsembleBatch:
        """One image file as a one-image ``EnsembleBatch`` (with the members' probabilities)."""
        return self.predict_records([file_record(path)])

    def measure_throughput(
        self, *, seconds: float = 2.0, batch_size: int | None = None, seed: int = 0
    ) -> dict[str, Any]:
        """Images per second of the whole ensemble step (every member), decoding excluded."""
        batch_size = self._speed_batch(batch_size)
        rng = np.random.default_rng(seed)
        pixels = {
            key: rng.integers(0, 256, (batch_size, key[0], key[0]), dtype=np.uint8) for key in self.groups
        }

        def step() -> None:
            for key, indices in self.groups.items():
                for i in indices:
                    self.members[i].predict_arrays(pixels[key])

        return time_steps(step, batch_size, seconds, self.device)


def _concatenate(batches: list[PredictionBatch]) -> PredictionBatch:
    first = batches[0]
    if len(batches) == 1:
        return first
    logits = np.concatenate([b.logits for b in batches])
    return PredictionBatch.from_logits(logits, first.temperature, first.threshold, first.class_names)
