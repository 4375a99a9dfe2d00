"""Intended-use checks on every input: is this the kind of film the model was made for?

The reference models were trained on Kermany et al. 2018: frontal (AP/PA) chest radiographs of
children aged 1–5 from one centre, exported as 8-bit JPEGs. An answer about anything else is at
best untested, so every prediction carries ``InputWarning`` records for inputs outside that scope,
and a ``ScopePolicy`` says which of them are refused instead (``OutOfScopeError``, code included).

| code | when | default |
|---|---|---|
| ``image_too_small`` | either side smaller than the model input (an 8×8 icon is not a radiograph) | refused |
| ``modality`` | DICOM Modality other than CR / DX (e.g. CT, MR, US, OT) | warned |
| ``lateral_view`` | DICOM ViewPosition lateral (LL, RL, LLD, RLD, LATERAL) | warned |
| ``body_part`` | DICOM BodyPartExamined present and not CHEST / THORAX / LUNG | warned |
| ``age_out_of_range`` | DICOM PatientAge outside the training population (1–5 years) | warned |
| ``inverted_polarity`` | spine dark, lungs bright: ``polarity_score`` < −0.03 | refused |

JPEG and PNG carry no header: only the size and polarity checks apply to them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pneumocxr.errors import ConfigError, OutOfScopeError

__all__ = ["CHECKS", "InputWarning", "ScopePolicy", "check_scope", "polarity_score"]

CHECKS = ("image_too_small", "modality", "lateral_view", "body_part", "age_out_of_range", "inverted_polarity")
CHEST_MODALITIES = ("CR", "DX")
LATERAL_VIEWS = ("LL", "RL", "LLD", "RLD", "LATERAL", "LAT")
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG", "LUNGS")
# below this polarity_score a film is called inverted: real films score >= 0.088 (their negatives <= -0.088);
# the margin keeps flat or noise-only test images (score ~0) from being called inverted
INVERTED_BELOW = -0.03
TRAINING_AGE_YEARS = (1.0, 5.0)  # Kermany et al. 2018: pediatric patients aged one to five


@dataclass(frozen=True)
class InputWarning:
    """One way an input falls outside the model's intended use."""

    code: str  # one of CHECKS
    message: str  # for a person: what was found and why it matters

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class ScopePolicy:
    """Which scope findings refuse the input (the rest are returned as warnings)."""

    refuse: frozenset[str] = frozenset({"image_too_small", "inverted_polarity"})

    @classmethod
    def of(cls, refuse: Iterable[str] | None) -> ScopePolicy:
        """A policy refusing ``refuse`` (None = the default policy); unknown codes are a ConfigError."""
        if refuse is None:
            return cls()
        codes = frozenset(refuse)
        unknown = sorted(codes - set(CHECKS))
        if unknown:
            raise ConfigError(f"unknown scope check(s) {', '.join(unknown)}; use any of {', '.join(CHECKS)}")
        return cls(codes)


def check_scope(
    name: str,
    width: int,
    height: int,
    header: Any,
    model_input: int,
    policy: ScopePolicy,
    square: np.ndarray | None = None,
) -> tuple[InputWarning, ...]:
    """The input's scope warnings; raises OutOfScopeError for the first one ``policy`` refuses.
    ``square``: the model's (S, S) uint8 input, for the checks that look at pixels."""
    found = list(_findings(width, height, header, model_input))
    if square is not None and min(width, height) >= model_input and polarity_score(square) < INVERTED_BELOW:
        found.append(
            InputWarning(
                "inverted_polarity",
                "the film looks inverted (spine dark, lungs bright): a MONOCHROME1 image shown without "
                "inversion or a negative export; models trained on normal polarity answer such films "
                "confidently and wrongly — re-export it with bone bright",
            )
        )
    for warning in found:
        if warning.code in policy.refuse:
            raise OutOfScopeError(name, warning.code, warning.message)
    return tuple(found)


def _findings(width: int, height: int, header: Any, model_input: int):
    if min(width, height) < model_input:
        yield InputWarning(
            "image_too_small",
            f"the image is {width}×{height} px, smaller than the model's {model_input}×{model_input} input; "
            "radiographs are exported at full resolution (1000+ px)",
        )
    if header is None:
        return
    modality = _text(header, "modality")
    if modality and modality not in CHEST_MODALITIES:
        yield InputWarning(
            "modality", f"Modality is {modality}; the model was trained on radiographs (CR/DX) only"
        )
    view = _text(header, "view_position")
    if view in LATERAL_VIEWS:
        yield InputWarning(
            "lateral_view", f"ViewPosition is {view}; the model was trained on frontal (AP/PA) films"
        )
    body_part = _text(header, "body_part_examined")
    if body_part and body_part not in CHEST_BODY_PARTS:
        yield InputWarning(
            "body_part", f"BodyPartExamined is {body_part}; the model was trained on chest films only"
        )
    age = getattr(header, "patient_age_years", None)
    low, high = TRAINING_AGE_YEARS
    if age is not None and not low <= age <= high + 1:  # "5 years" covers up to the sixth birthday
        yield InputWarning(
            "age_out_of_range",
            f"PatientAge is {age:.1f} years; the model was trained on children aged {low:.0f}–{high:.0f} "
            "(Kermany et al. 2018) and is untested outside that range (adults: external AUC 0.78)",
        )


def polarity_score(square: np.ndarray) -> float:
    """2 · spine column − lung fields − side bands of the model's (S, S) uint8 input, in [−2, 2].

    On a chest film in normal polarity the mediastinum/spine column is bright and the lung fields and
    the outer bands (air, arms) darker, so the score is positive; an inverted film gives its negative.
    Measured on all 5,232 Kermany train/val films at 128 px: minimum 0.088, 1st percentile 0.34,
    median 0.71; their negatives the opposite — so the cut at −0.03 separates every film seen.
    """
    s = np.asarray(square, dtype=np.float32) / 255.0
    n = s.shape[0]
    band, rows = max(1, n // 10), slice(n // 4, 3 * n // 4)
    spine = s[rows, 2 * n // 5 : 3 * n // 5].mean()
    lungs = (s[rows, n // 6 : n // 3].mean() + s[rows, 2 * n // 3 : 5 * n // 6].mean()) / 2
    sides = (s[:, :band].mean() + s[:, -band:].mean()) / 2
    return float(2 * spine - lungs - sides)


def _text(header: Any, attribute: str) -> str:
    return str(getattr(header, attribute, None) or "").strip().upper()
