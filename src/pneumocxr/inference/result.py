"""``PredictionResult``: the typed answer of ``Predictor.predict`` for one input.

Everything a caller needs to act on and to audit one prediction — the CLI prints it, the HTTP API
returns ``to_dict()`` as JSON, the PACS bridge writes it into a DICOM SR. Probabilities are given
per class, calibrated (temperature-scaled: the decision uses these) and raw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pneumocxr.inference.scope import InputWarning

__all__ = ["InputSummary", "ModelIdentity", "PredictionResult"]


@dataclass(frozen=True)
class ModelIdentity:
    """Which model answered: enough to find the exact file again."""

    name: str  # registry name (or "ensemble")
    sha256: str | None  # of the file that was loaded: checkpoint, ensemble or .onnx (None: never saved)
    path: str | None
    task: str
    variant: str = ""  # "", "tta", "mc_dropout=20" … : how the checkpoint was run
    runtime: str = "torch"  # "torch", or "onnx" (ONNX Runtime running an exported graph)
    source_sha256: str | None = None  # runtime "onnx": sha256 of the checkpoint it was exported from

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "path": self.path,
            "task": self.task,
            "variant": self.variant,
            "runtime": self.runtime,
            "source_sha256": self.source_sha256,
        }


@dataclass(frozen=True)
class InputSummary:
    """What was predicted on — no file name and no patient identifier (safe to log)."""

    format: str  # JPEG, PNG, DICOM or ARRAY
    width: int
    height: int
    size_bytes: int | None
    sha256: str
    dicom: dict[str, Any] = field(default_factory=dict)  # header facts used by the scope checks

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "dicom": dict(self.dicom),
        }


@dataclass(frozen=True)
class PredictionResult:
    """One input's answer (see the module docstring): ``label`` (the decided class),
    ``probabilities`` (calibrated, per class), ``threshold`` and its rule, the ``model`` that
    answered (sha256), a summary of the ``input`` (no identifiers), scope ``warnings`` and timings.
    ``to_dict()`` is the HTTP API's JSON.

    Example:
        >>> result = pneumocxr.load_predictor("runs/cpu_fast").predict("film.jpeg")  # doctest: +SKIP
        >>> result.positive_probability, [w.code for w in result.warnings]  # doctest: +SKIP
        (0.97, [])
    """

    label: str  # the decided class
    decision: int  # its index in ``class_names``
    class_names: tuple[str, ...]
    probabilities: dict[str, float]  # calibrated, every class; sums to 1
    raw_probabilities: dict[str, float]  # before temperature scaling
    threshold: float | None  # on the calibrated positive-class probability (None: argmax, k classes)
    threshold_rule: str  # how the threshold was chosen ("youden", "target_sensitivity" …) or "argmax"
    model: ModelIdentity
    input: InputSummary
    warnings: tuple[InputWarning, ...] = ()
    timings_ms: dict[str, float] = field(default_factory=dict)  # decode, model, total
    spread: float | None = None  # ensembles / MC-dropout: members' disagreement (std)

    @property
    def positive_probability(self) -> float:
        """Calibrated probability of the positive class (binary) or of the decided class (k classes)."""
        return self.probabilities[self.class_names[1] if len(self.class_names) == 2 else self.label]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (plain types only)."""
        return {
            "label": self.label,
            "decision": self.decision,
            "class_names": list(self.class_names),
            "probabilities": dict(self.probabilities),
            "raw_probabilities": dict(self.raw_probabilities),
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "model": self.model.to_dict(),
            "input": self.input.to_dict(),
            "warnings": [w.to_dict() for w in self.warnings],
            "timings_ms": dict(self.timings_ms),
            "spread": self.spread,
        }
