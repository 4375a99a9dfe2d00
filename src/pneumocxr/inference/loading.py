"""``load_predictor``: any file pneumocxr writes, loaded as the right predictor.

A training checkpoint becomes a ``Predictor``, an ensemble file (``pneumocxr ensemble create``) an
``EnsemblePredictor``; ``tta`` wraps the model(s) in test-time augmentation and ``mc_dropout``
runs N stochastic passes. Every caller loads through here, so the CLI, the API and the PACS worker
cannot disagree on what a file means. Checkpoints are data (``weights_only=True``), never code.
"""

from __future__ import annotations

import logging
import os

from pneumocxr.inference.ensemble import EnsemblePredictor, TTAModel, is_ensemble_file
from pneumocxr.inference.mc_dropout import with_mc_dropout
from pneumocxr.inference.predictor import DEFAULT_BATCH_SIZE, Predictor, PredictorBase
from pneumocxr.models import load_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["load_predictor"]


def load_predictor(
    path: str | os.PathLike,
    *,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    tta: bool | None = None,
    mc_dropout: int = 0,
) -> PredictorBase:
    """Load a checkpoint or ensemble file onto ``device`` (see the module docstring).

    ``tta``: test-time augmentation (``ensemble.TTAModel``); None = off for a checkpoint, as
    created for an ensemble. ``mc_dropout``: N >= 2 stochastic passes (``mc_dropout``, seed 0).
    """
    if mc_dropout:
        plain = load_predictor(path, device=device, batch_size=batch_size, tta=tta)
        return with_mc_dropout(plain, mc_dropout)
    if is_ensemble_file(path):
        return EnsemblePredictor.from_file(path, device=device, batch_size=batch_size, tta=tta)
    model, meta = load_checkpoint(path, map_location="cpu")
    if tta:
        model = TTAModel(model)
    predictor = Predictor(model, meta, device=device, batch_size=batch_size)
    predictor.variant = "tta" if tta else ""
    rule = (
        f"threshold {meta.threshold:.4g} on the calibrated probability"
        if predictor.num_classes == 2
        else f"argmax over {', '.join(meta.class_names)}"
    )
    logger.info(
        "loaded %s (%s) on %s: %s, temperature %.4g",
        path,
        meta.model_name,
        predictor.device,
        rule,
        meta.temperature,
    )
    return predictor
