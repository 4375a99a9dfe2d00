""" "Uncertain — refer": when an answer should go to a person rather than be acted on.

An answer is flagged when any of these holds, and says which:
- the calibrated probability lies within ``BAND`` (0.10) of the decision threshold (k classes: the top
  two classes lie within ``BAND`` of each other) — the model is close to its own cut;
- the input has scope warnings (age outside 1–5 years, lateral view, other modality …);
- the checkpoint stores conformal calibration (ensemble files do) and the image's conformal set at
  1 − α is not a single class (both classes, or none).
The web page draws the same band. A flag is advice for a workflow, not a second model.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pneumocxr.inference import PredictionResult, PredictorBase

logger = logging.getLogger(__name__)

BAND = 0.10


class Referral:
    def __init__(self, predictor: PredictorBase):
        self.calibration = None
        if predictor.num_classes == 2:
            from pneumocxr.workflows.uncertainty_outputs import stored_calibration

            self.calibration, note = stored_calibration(predictor.meta)
            logger.info("conformal sets: %s", note if self.calibration is not None else "none stored")

    def assess(self, result: PredictionResult) -> dict[str, Any]:
        reasons: list[str] = []
        band = None
        probabilities = sorted(result.probabilities.values(), reverse=True)
        if result.threshold is not None:
            p, t = result.positive_probability, result.threshold
            band = [max(0.0, t - BAND), min(1.0, t + BAND)]
            if band[0] <= p <= band[1]:
                reasons.append(f"probability {p:.2f} is within {BAND:.2f} of the threshold {t:.2f}")
        elif len(probabilities) > 1 and probabilities[0] - probabilities[1] <= BAND:
            reasons.append(f"the two most likely classes are within {BAND:.2f} of each other")
        if result.warnings:
            reasons.append("outside the intended use: " + ", ".join(w.code for w in result.warnings))
        conformal = self._conformal(result)
        if conformal is not None and len(conformal["set"]) != 1:
            shown = " and ".join(conformal["set"]) or "no class"
            reasons.append(f"the {1 - conformal['alpha']:.0%} conformal set holds {shown}")
        return {"refer": bool(reasons), "reasons": reasons, "band": band, "conformal": conformal}

    def _conformal(self, result: PredictionResult) -> dict[str, Any] | None:
        if self.calibration is None:
            return None
        from pneumocxr.evaluation.conformal import prediction_sets

        keep = prediction_sets(np.array([result.positive_probability]), self.calibration)[0]
        names = [name for name, kept in zip(result.class_names, keep) if kept]
        return {"set": names, "alpha": self.calibration.alpha, "method": self.calibration.method}
