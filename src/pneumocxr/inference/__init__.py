"""Inference: ``Predictor`` (checkpoint → probabilities; the one path the CLI and the API use),
``evaluate_checkpoint`` (a split, every metric with its CI, plots, reports) and ``compare_models``
(several checkpoints on the same images, paired tests).

Matplotlib is imported only when figures are drawn, so serving can import ``Predictor`` cheaply.
"""

from pneumocxr.inference.compare import ComparisonResult, compare_models, resolve_checkpoint
from pneumocxr.inference.evaluate import EvaluationResult, evaluate_checkpoint, model_label
from pneumocxr.inference.predictor import Prediction, PredictionBatch, Predictor, resolve_device
from pneumocxr.inference.provenance import Selection

__all__ = [
    "ComparisonResult",
    "EvaluationResult",
    "Prediction",
    "PredictionBatch",
    "Predictor",
    "Selection",
    "compare_models",
    "evaluate_checkpoint",
    "model_label",
    "resolve_checkpoint",
    "resolve_device",
]
