"""The shift catalogue of the stress suite: realistic acquisition differences, each at a few severities.

Why: the patient-level validation split carved from ``train`` cannot show the shift to the
withheld Kermany test split (older children, chest filling the frame, burned-in text, slight
rotation), where specificity collapsed from ~0.99 to ~0.6. Re-rendering validation images under
the shifts below shows which kinds of difference a model silently mis-scores, before a test set or
a new hospital does.

Each ``Shift`` has severities 1..k (``levels``: mild, moderate, severe; one level for polarity
inversion) and severity 0, the clean image (identity, for every shift). ``apply_shift`` works on
a decoded grayscale image (float32 H×W in [0, 1], as ``imaging.read_image`` gives) and returns
the same shape and dtype in [0, 1]. The stress runner applies it to the image as ``decode_record``
decodes it, BEFORE the model's resize, so the resize acts on the artefacts as it would on a real
film (see ``inference.stress``). Spatial parameters are given in model-input pixels or as
fractions of the image, and scaled by ``reference_size`` (the model's input side), so a severity
means the same whatever resolution an image was decoded at.

Implementation: albumentations (seeded ``Compose``, no global RNG) for every shift it has; only the
burned-in text is hand-written (``stress_text``: albumentations' ``TextImage`` needs a font file).
Determinism: the same ``seed`` gives the same pixels; the runner derives a seed per image and
shift, so the subsample does not change any image's noise.

``covered_by`` names the ``training.augment.AugmentParams`` fields whose non-zero range means the
training augmentation covers this kind of shift (``in_training_augmentation``); a shift covered by
no field is "blind": the recipe never showed the model anything like it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pneumocxr.data.stress_text import TEXT_LEVELS, burn_in_text
from pneumocxr.errors import ConfigError

__all__ = [
    "SEVERITY_NAMES",
    "SHIFTS",
    "Shift",
    "apply_shift",
    "in_training_augmentation",
    "resolve_shifts",
]

SEVERITY_NAMES = ("clean", "mild", "moderate", "severe")
_Apply = Callable[[np.ndarray, int], np.ndarray]  # (image, seed) -> image


@dataclass(frozen=True)
class Shift:
    """One kind of acquisition difference; ``levels[s - 1]`` is the parameter at severity s."""

    name: str
    simulates: str  # the real-world difference, in words
    parameter: str  # what a level value means
    levels: tuple[float, ...]  # severity 1..k
    covered_by: tuple[str, ...]  # AugmentParams fields that cover it when non-zero (empty: blind)
    implementation: str  # the library transform, or why it is hand-written

    @property
    def severities(self) -> tuple[int, ...]:
        return tuple(range(1, len(self.levels) + 1))

    def level(self, severity: int) -> float | None:
        """The parameter at ``severity`` (None at 0, the clean image)."""
        _check_severity(self, severity)
        return None if severity == 0 else self.levels[severity - 1]

    def severity_name(self, severity: int) -> str:
        _check_severity(self, severity)
        if len(self.levels) == 1 and severity == 1:
            return "on"
        return SEVERITY_NAMES[severity] if severity < len(SEVERITY_NAMES) else f"level {severity}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "simulates": self.simulates,
            "parameter": self.parameter,
            "levels": {self.severity_name(s): v for s, v in zip(self.severities, self.levels)},
            "covered_by": list(self.covered_by),
            "implementation": self.implementation,
        }


def _shift(name, simulates, parameter, levels, covered_by=(), implementation="") -> Shift:
    return Shift(
        name, simulates, parameter, tuple(float(v) for v in levels), tuple(covered_by), implementation
    )


_CATALOGUE = (
    # -- acquisition and processing: intensities --
    _shift("gamma", "a different detector response / LUT", "gamma exponent (>1 darkens mid-tones)",
           (1.3, 1.6, 2.0), (), "albumentations.RandomGamma"),
    _shift("contrast", "a flatter, washed-out film", "contrast factor around mid-grey (1 = unchanged)",
           (0.8, 0.65, 0.5), ("contrast",), "albumentations.RandomBrightnessContrast"),
    _shift("brightness", "an exposure difference", "offset added on the [0, 1] scale",
           (0.05, 0.1, 0.2), ("brightness",), "albumentations.RandomBrightnessContrast"),
    _shift("noise", "a low-dose / noisier detector", "Gaussian noise std at the model's input grain",
           (0.02, 0.05, 0.1), ("noise",), "albumentations.GaussNoise"),
    _shift("blur", "motion or a softer detector", "Gaussian blur sigma in model-input pixels",
           (0.75, 1.5, 2.5), ("blur",), "albumentations.GaussianBlur"),
    _shift("sharpen", "edge-enhancement post-processing", "unsharp-mask strength (sigma 2 model pixels)",
           (0.3, 0.6, 1.0), (), "albumentations.Sharpen(method='gaussian')"),
    _shift("jpeg", "lossy re-compression by an export or PACS", "JPEG quality (at the decode resolution)",
           (50, 25, 10), (), "albumentations.ImageCompression"),
    _shift("downsample", "a low-resolution source, upsampled", "effective side, fraction of the model input",
           (0.5, 0.35, 0.25), (), "albumentations.Downscale(area down, linear up)"),
    # -- geometry: positioning, collimation, field of view --
    _shift("rotation", "a patient rotated on the detector", "degrees (sign drawn per image)",
           (3, 6, 10), ("rotation_deg",), "albumentations.Rotate (reflected border)"),
    _shift("zoom_in", "an older child: the chest fills the frame", "fraction of the side kept (centre crop)",
           (0.85, 0.75, 0.7), ("zoom",), "albumentations.CropAndPad(keep_size)"),
    _shift("zoom_out", "a small child in a wide field", "scale of the image inside a black field",
           (0.9, 0.8, 0.7), ("zoom",), "albumentations.CropAndPad(keep_size)"),
    _shift("border_crop", "tighter lateral collimation", "fraction cropped from each side (left, right)",
           (0.05, 0.1, 0.15), ("zoom",), "albumentations.CropAndPad(keep_size)"),
    _shift("border_pad", "black bars from an export or scanner", "bar width per side, fraction of the width",
           (0.05, 0.1, 0.2), ("zoom",), "albumentations.CropAndPad(keep_size)"),
    _shift("crop_top", "the apices cut off", "fraction of the height removed at the top",
           (0.1, 0.2, 0.3), ("shift",), "albumentations.CropAndPad(keep_size)"),
    _shift("crop_bottom", "the costophrenic angles cut off", "fraction of the height removed at the bottom",
           (0.1, 0.2, 0.3), ("shift",), "albumentations.CropAndPad(keep_size)"),
    # -- annotations and polarity --
    _shift("text", "burned-in markers, date stamps, exposure values",
           "; ".join(f"{k} = {v}" for k, v in TEXT_LEVELS.items()), (1, 2, 3), (),
           "hand-written: cv2.putText (albumentations' TextImage needs a font file)"),
    _shift("invert", "inverted polarity (a MONOCHROME1 film read as MONOCHROME2)", "1 = grey levels inverted",
           (1,), (), "albumentations.InvertImg"),
)  # fmt: skip
SHIFTS: dict[str, Shift] = {s.name: s for s in _CATALOGUE}


def resolve_shifts(names: str | Sequence[str] | None = None) -> tuple[Shift, ...]:
    """The shifts called ``names`` (comma-separated text or a list; None/empty/"all": every one),
    in catalogue order. An unknown name is a ConfigError listing the valid ones."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names or list(names) == ["all"]:
        return tuple(SHIFTS.values())
    unknown = [n for n in names if n not in SHIFTS]
    if unknown:
        raise ConfigError(
            f"unknown stress shift(s) {', '.join(map(repr, unknown))}; use a comma-separated subset of "
            f"{', '.join(SHIFTS)} (or 'all')"
        )
    return tuple(s for s in SHIFTS.values() if s.name in set(names))


def in_training_augmentation(shift: Shift, augmentation: Mapping[str, Any] | None) -> bool | None:
    """Does the training augmentation (``AugmentParams`` fields → ranges) cover this shift?

    True when any field in ``shift.covered_by`` is non-zero; None when the augmentation is unknown.
    """
    if augmentation is None:
        return None
    return any(bool(augmentation.get(field)) for field in shift.covered_by)


def apply_shift(
    image: np.ndarray, shift: Shift | str, severity: int, *, seed: int, reference_size: int | None = None
) -> np.ndarray:
    """``image`` (float32 H×W in [0, 1]) under ``shift`` at ``severity``: same shape and dtype, in [0, 1].

    Severity 0 returns an unchanged copy. ``reference_size``: the model's input side, the unit of
    the spatial parameters (default: the image's shorter side, i.e. parameters in image pixels).
    """
    shift = SHIFTS[shift] if isinstance(shift, str) and shift in SHIFTS else shift
    if not isinstance(shift, Shift):
        resolve_shifts([str(shift)])  # raises the ConfigError naming the valid shifts
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 2 or array.size == 0:
        raise ConfigError(f"apply_shift needs a 2-D grayscale image, got shape {array.shape}")
    value = shift.level(severity)
    if value is None:
        return np.clip(array, 0.0, 1.0)  # a fresh array
    scale = min(array.shape) / float(reference_size or min(array.shape))  # image px per model px
    out = _BUILDERS[shift.name](value, scale)(np.ascontiguousarray(array), int(seed) % 2**32)
    return np.clip(np.asarray(out, dtype=np.float32).reshape(array.shape), 0.0, 1.0)


def _check_severity(shift: Shift, severity: int) -> None:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)):
        raise ConfigError(f"severity={severity!r}; use a whole number 0..{len(shift.levels)}")
    if not 0 <= severity <= len(shift.levels):
        raise ConfigError(f"{shift.name} has severities 0..{len(shift.levels)} (0 = clean); got {severity}")


# ---- the transforms: (level, image px per model px) -> (image, seed) -> image ----------------------


def _albumentations():
    """albumentations, imported on first use (it pulls in pydantic) and told not to phone PyPI for a
    newer version on import: an inference host may have no network, and should not try."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def _albu(*transforms: Callable[[Any], Any]) -> Callable[[float, float], _Apply]:
    """A builder from factories ``A -> transform``: a seeded ``Compose`` (its own generator) per call."""

    def build(value: float, scale: float) -> _Apply:
        A = _albumentations()
        steps = [make(A, value, scale) for make in transforms]

        def apply(image: np.ndarray, seed: int) -> np.ndarray:
            return A.Compose(steps, seed=seed)(image=image)["image"]

        return apply

    return build


def _fixed(v: float) -> tuple[float, float]:
    return (v, v)


def _crop_pad(top: float, right: float, bottom: float, left: float, **kw):
    """CropAndPad by fractions of the side (negative crops, positive pads), resized back to the input size."""
    return lambda A, v, s: A.CropAndPad(
        percent=(top * v, right * v, bottom * v, left * v), keep_size=True, fill=0, p=1.0, **kw
    )


def _odd(x: float) -> int:
    return int(2 * np.ceil(x / 2) + 1)


def _rotation(A, degrees: float, scale: float):
    import cv2

    one_way = [
        A.Rotate(limit=_fixed(sign * degrees), border_mode=cv2.BORDER_REFLECT_101, p=1.0) for sign in (-1, 1)
    ]
    return A.OneOf(one_way, p=1.0)  # the sign drawn per image, from the Compose's seed


def _downscale(A, fraction: float, scale: float):
    import cv2

    factor = float(np.clip(fraction / scale, 0.01, 0.99))
    pair = {"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}
    return A.Downscale(scale_range=_fixed(factor), interpolation_pair=pair, p=1.0)


def _text(value: float, scale: float) -> _Apply:
    return lambda image, seed: burn_in_text(image, int(value), seed)


_BUILDERS: dict[str, Callable[[float, float], _Apply]] = {
    "gamma": _albu(lambda A, v, s: A.RandomGamma(gamma_limit=_fixed(100 * v), p=1.0)),
    # a·x + (1 - a)/2: contrast scaled around mid-grey (albumentations scales around 0; the offset re-centres)
    "contrast": _albu(
        lambda A, v, s: A.RandomBrightnessContrast(
            brightness_limit=_fixed((1 - v) / 2), contrast_limit=_fixed(v - 1), ensure_safe_range=False, p=1.0
        )
    ),
    "brightness": _albu(
        lambda A, v, s: A.RandomBrightnessContrast(
            brightness_limit=_fixed(v), contrast_limit=_fixed(0.0), ensure_safe_range=False, p=1.0
        )
    ),
    # noise drawn on the model-input grid (noise_scale_factor), so the model's resize does not average it away
    "noise": _albu(
        lambda A, v, s: A.GaussNoise(
            std_range=_fixed(v), mean_range=_fixed(0.0), noise_scale_factor=min(1.0, 1.0 / s), p=1.0
        )
    ),
    "blur": _albu(lambda A, v, s: A.GaussianBlur(sigma_limit=_fixed(v * s), blur_limit=0, p=1.0)),
    "sharpen": _albu(
        lambda A, v, s: A.Sharpen(
            alpha=_fixed(v), method="gaussian", sigma=2.0 * s, kernel_size=_odd(6 * 2.0 * s), p=1.0
        )
    ),
    "jpeg": _albu(lambda A, v, s: A.ImageCompression(quality_range=_fixed(int(v)), p=1.0)),
    "downsample": _albu(_downscale),
    "rotation": _albu(_rotation),
    "zoom_in": _albu(lambda A, v, s: _crop_pad(-1, -1, -1, -1)(A, (1 - v) / 2, s)),
    "zoom_out": _albu(lambda A, v, s: _crop_pad(1, 1, 1, 1)(A, (1 / v - 1) / 2, s)),
    "border_crop": _albu(_crop_pad(0, -1, 0, -1)),
    "border_pad": _albu(_crop_pad(0, 1, 0, 1)),
    "crop_top": _albu(_crop_pad(-1, 0, 0, 0)),
    "crop_bottom": _albu(_crop_pad(0, 0, -1, 0)),
    "text": _text,
    "invert": _albu(lambda A, v, s: A.InvertImg(p=1.0)),
}
