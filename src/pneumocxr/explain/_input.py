"""Pixels → model input, and logits → probabilities, exactly as training and inference do them.

The cache's ``decode_record`` gives the (S, S) uint8 square the model was trained on, and
``models.to_model_input`` normalises it: the same two functions training and inference use, so an
explanation sees exactly the input the model was trained on.
"""

from __future__ import annotations

import numpy as np
import torch

from pneumocxr.config import Preprocess
from pneumocxr.data.cache import decode_record
from pneumocxr.data.records import ImageRecord
from pneumocxr.data.sources import load_pixels
from pneumocxr.inference.probabilities import class_probabilities
from pneumocxr.models import to_model_input

__all__ = ["decide", "load_record", "probabilities", "to_model_input"]


def load_record(record: ImageRecord, preprocess: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """(model square (S, S) uint8, the image as the user has it (H, W) float32 in [0, 1]).

    The square comes from the cache's own function, so it is the training input byte for byte;
    the full image is decoded separately because the square may come from a reduced-scale decode.
    """
    square = decode_record(record, preprocess.image_size, preprocess.resize_mode)
    return square, load_pixels(record)


def probabilities(logits: torch.Tensor, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(uncalibrated, temperature-calibrated) class probabilities, each (N, classes).

    A one-logit binary head gives [P(class 0), P(class 1)] with P(class 1) = sigmoid(logit). The
    prediction core's function, so an explanation reports the probabilities ``predict`` gives.
    """
    z = logits.detach().float().cpu().numpy()  # (N, 1) or (N, k)
    return class_probabilities(z, 1.0), class_probabilities(z, temperature)


def decide(calibrated: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) predicted class indices: P(class 1) >= threshold for a binary head, else argmax."""
    if calibrated.shape[1] == 2:
        return (calibrated[:, 1] >= threshold).astype(np.int64)
    return calibrated.argmax(1)
