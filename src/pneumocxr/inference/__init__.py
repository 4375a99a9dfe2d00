"""The prediction core: ``Predictor`` (checkpoint → probabilities and a decision), the one path the
CLI, the HTTP service and the PACS worker use, with TTA, MC-dropout and ensembles as wrappers.

Cheap to import on purpose (torch + numpy; no scikit-learn, scipy, lightning, optuna or matplotlib —
a test asserts it): a service process loads this and nothing of training or evaluation.
Evaluation, comparison and the other workflows live one layer up in ``pneumocxr.workflows``.
"""

from pneumocxr.inference.backends import resolve_device
from pneumocxr.inference.loading import load_predictor
from pneumocxr.inference.predictions import Prediction, PredictionBatch
from pneumocxr.inference.predictor import Predictor, PredictorBase
from pneumocxr.inference.result import InputSummary, ModelIdentity, PredictionResult
from pneumocxr.inference.scope import InputWarning, ScopePolicy

__all__ = [
    "InputSummary",
    "InputWarning",
    "ModelIdentity",
    "Prediction",
    "PredictionBatch",
    "PredictionResult",
    "Predictor",
    "PredictorBase",
    "ScopePolicy",
    "load_predictor",
    "resolve_device",
]
