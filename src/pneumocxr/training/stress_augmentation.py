"""Which augmentation a checkpoint was trained with, as plain data for the stress suite.

``inference.stress`` flags each shift ``in_training_augmentation`` from the training
``AugmentParams`` (``data.stress_shifts.Shift.covered_by`` names the fields). The presets live
here in ``training`` and ``inference`` may not import it (import-linter layers), so callers that
know the recipe resolve it with this function and hand the dict to ``run_stress``: the CLI from the
checkpoint's recorded config, training code from its own ``AugmentParams`` (``dataclasses.asdict``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from pneumocxr.errors import ConfigError
from pneumocxr.training.augment import augment_params

logger = logging.getLogger(__name__)

__all__ = ["recorded_augmentation"]


def recorded_augmentation(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``AugmentParams`` fields a resolved run config trained with (``train.augment`` preset with
    ``train.augment_overrides`` on top, when present), or None when the config records no preset
    (an ensemble file, a checkpoint not written by ``train``) or one this version does not know."""
    train = (config or {}).get("train") or {}
    name = train.get("augment") if isinstance(train, Mapping) else None
    if not name:
        return None
    overrides = train.get("augment_overrides") or None
    try:
        params = augment_params(name, overrides) if overrides else augment_params(name)
    except ConfigError as exc:
        logger.warning("the training augmentation cannot be resolved (%s): coverage flags unknown", exc)
        return None
    return dataclasses.asdict(params)
