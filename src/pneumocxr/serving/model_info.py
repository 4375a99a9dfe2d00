"""``GET /v1/model``: what answers, how it decides, what it is for — and its model card."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pneumocxr._version import __version__
from pneumocxr.inference import PredictorBase
from pneumocxr.inference.scope import CHECKS, ScopePolicy
from pneumocxr.serving.settings import ServeSettings

logger = logging.getLogger(__name__)

INTENDED_USE = (
    "Research use only, not a medical device. Trained on frontal pediatric chest radiographs (ages 1-5, "
    "Guangzhou Women and Children's Medical Center, Kermany et al. 2018); untested on adults, lateral views "
    "and other hospitals' equipment — on the withheld test split and an adult external set it scored below "
    "its validation numbers (see the model card)."
)


def model_info(predictor: PredictorBase, settings: ServeSettings) -> dict[str, Any]:
    described = predictor.describe()
    policy = ScopePolicy.of(settings.refuse)
    return {
        "identity": predictor.identity.to_dict(),
        # Which pneumocxr answers, and the versions the model was trained with (from the checkpoint).
        "versions": {"pneumocxr": __version__, "trained_with": dict(predictor.meta.versions or {})},
        "name": predictor.meta.model_name,
        "task": predictor.meta.task,
        "class_names": list(predictor.class_names),
        "operating_point": {
            "threshold": predictor.threshold if predictor.num_classes == 2 else None,
            "applies_to": described.get("threshold_applies_to"),
            "rule": predictor.threshold_rule,
            "temperature": predictor.temperature,
        },
        "validation_metrics": dict(predictor.meta.metrics or {}),
        "preprocess": described.get("preprocess"),
        "inputs": {"formats": ["JPEG", "PNG", "DICOM"], "max_upload_bytes": settings.max_upload_bytes},
        "scope_checks": {code: ("refused" if code in policy.refuse else "warned") for code in CHECKS},
        "intended_use": INTENDED_USE,
        "model_card": None,  # filled in by the first GET /v1/model (model_card below): not at start-up
        "parameters": described.get("parameters"),
    }


def model_card(settings: ServeSettings, checkpoint_sha256: str | None) -> str | None:
    """The model card: the file named by --card; else the card ``pneumocxr run`` wrote beside the
    checkpoint (``<out>/model_cards/<model>.md`` for ``<out>/models/<model>.pt``: it carries the run's
    evaluations and stress results) when it names this checkpoint's sha256; else one built from the
    checkpoint. None if that fails: a card is information, not a reason to refuse to serve.

    Building imports the training stack (~300 MB, seconds), so the service does it on the first
    request that asks, not at start-up.
    """
    if settings.card is not None:
        return Path(settings.card).read_text(encoding="utf-8")
    model = Path(settings.model)
    written = model.parent.parent / "model_cards" / f"{model.stem}.md"
    if checkpoint_sha256 and written.is_file():
        text = written.read_text(encoding="utf-8")
        if checkpoint_sha256 in text:
            return text
        logger.info("%s describes another checkpoint (sha256 differs): building a card instead", written)
    try:
        from pneumocxr.training.model_card import build_model_card

        return build_model_card(model)
    except Exception as exc:
        logger.warning("no model card for %s (%s); pass --card", model, type(exc).__name__)
        return None
