"""``Prediction`` / ``PredictionBatch``: what a ``Predictor`` returns, and the one place logits
become decisions (``PredictionBatch.from_logits``; the probabilities come from ``probabilities``).

Binary checkpoint (one logit z per image): ``probability = sigmoid(z)``, ``calibrated_probability =
sigmoid(z / T)``, ``prediction = calibrated_probability >= threshold``. k-class checkpoint (k logits):
``probabilities = softmax(z / T)`` (N, k), ``prediction = argmax``; ``probability`` /
``calibrated_probability`` are the raw / calibrated probability of the predicted class. Float64
throughout (see ``predictor``'s module docstring for why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pneumocxr.inference.probabilities import sigmoid, softmax
from pneumocxr.labels import CLASS_NAMES

__all__ = ["Prediction", "PredictionBatch"]


@dataclass(frozen=True)
class Prediction:
    """One image's result."""

    logit: float  # raw PNEUMONIA logit z
    probability: float  # sigmoid(z)
    calibrated_probability: float  # sigmoid(z / temperature)
    prediction: int  # 1 = PNEUMONIA when calibrated_probability >= threshold, else 0 (k classes: argmax)
    label: str  # class name of ``prediction``
    # class name -> calibrated probability, every class (binary: NORMAL = 1 - p, PNEUMONIA = p)
    probabilities: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PredictionBatch:
    """Results for N images, in input order (arrays of shape (N,); k-class logits are (N, k))."""

    logits: np.ndarray  # float64 raw PNEUMONIA logits (k classes: (N, k) class logits)
    probability: np.ndarray  # float64 sigmoid(logits) (k classes: softmax of the predicted class)
    calibrated_probability: np.ndarray  # float64 sigmoid(logits / T) (k: calibrated, predicted class)
    prediction: np.ndarray  # int64, 1 = PNEUMONIA: calibrated_probability >= threshold (k: argmax)
    threshold: float  # applied to calibrated_probability (binary only)
    temperature: float
    # keyword-only (after the fields of subclasses such as ensemble.EnsembleBatch): index -> name
    class_names: tuple[str, ...] = field(default=CLASS_NAMES, kw_only=True)

    @classmethod
    def from_logits(
        cls,
        logits: Sequence[float] | np.ndarray,
        temperature: float,
        threshold: float,
        class_names: Sequence[str] = CLASS_NAMES,
    ):
        """The only place logits become probabilities and decisions (see the module docstring)."""
        names = tuple(str(c) for c in class_names)
        if len(names) > 2:
            z = np.asarray(logits, dtype=np.float64).reshape(-1, len(names))  # (N, k)
            calibrated = softmax(z / temperature, axis=1)
            pred = calibrated.argmax(axis=1).astype(np.int64)
            rows = np.arange(len(z))
            return cls(
                logits=z,
                probability=softmax(z, axis=1)[rows, pred],
                calibrated_probability=calibrated[rows, pred],
                prediction=pred,
                threshold=float(threshold),
                temperature=float(temperature),
                class_names=names,
            )
        z = np.asarray(logits, dtype=np.float64).reshape(-1)
        calibrated = sigmoid(z / temperature)
        return cls(
            logits=z,
            probability=sigmoid(z),
            calibrated_probability=calibrated,
            prediction=(calibrated >= threshold).astype(np.int64),
            threshold=float(threshold),
            temperature=float(temperature),
            class_names=names,
        )

    @property
    def multiclass(self) -> bool:
        return len(self.class_names) > 2

    @property
    def probabilities(self) -> np.ndarray:
        """(N, k) calibrated probability of every class; rows sum to 1 (binary: [1 - p, p])."""
        if self.multiclass:
            return softmax(self.logits / self.temperature, axis=1)
        p = self.calibrated_probability
        return np.stack([1.0 - p, p], axis=1)

    @property
    def raw_probabilities(self) -> np.ndarray:
        """(N, k) probability of every class before temperature scaling (binary: [1 - p, p] with
        p = ``probability``). An ensemble's k-class rows are its mean calibrated rows (T = 1)."""
        if self.multiclass:
            return softmax(self.logits, axis=1)
        p = self.probability
        return np.stack([1.0 - p, p], axis=1)

    def __len__(self) -> int:
        return len(self.logits)

    def __getitem__(self, i: int) -> Prediction:
        pred = int(self.prediction[i])
        row = self.probabilities[i]
        return Prediction(
            logit=float(self.logits[i, pred] if self.multiclass else self.logits[i]),
            probability=float(self.probability[i]),
            calibrated_probability=float(self.calibrated_probability[i]),
            prediction=pred,
            label=self.class_names[pred],
            probabilities={name: float(v) for name, v in zip(self.class_names, row)},
        )
