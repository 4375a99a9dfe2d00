"""The shortcut check's settings and results (``shortcut_check`` measures them, ``shortcut_report``
writes them): plain dataclasses, so the two modules depend on this one and not on each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pneumocxr.errors import ConfigError
from pneumocxr.explain.cam import check_method
from pneumocxr.explain.shortcut import BORDER_FILLS, LUNG_BOX, TEXT_MODES


@dataclass(frozen=True)
class ShortcutSettings:
    """What is occluded, how, and when a model is flagged."""

    band: float = 0.08  # outer fraction of the film's height/width occluded on every side
    fill: str = "inpaint"  # the border fill the verdict uses: inpaint, median or reflect (shortcut.py)
    text: str = "detect"  # "detect": only the detected marks; "corners": the four corner squares
    corner: float = 0.15  # side of a corner square (text="corners"), fraction of the film
    method: str = "gradcam"  # map for the lung-energy share (explain.METHODS)
    lung_box: tuple[float, float, float, float] = LUNG_BOX  # x0, x1, y0, y1 as fractions of the film
    max_mean_shift: float = 0.03  # flag when mean |Δp| exceeds this in any class …
    max_flip_share: float = 0.05  # … or more than this share of decisions flip at the stored threshold

    def __post_init__(self) -> None:
        if self.fill not in BORDER_FILLS:
            raise ConfigError(f"fill {self.fill!r} is not known; use one of {', '.join(BORDER_FILLS)}")
        if self.text not in TEXT_MODES:
            raise ConfigError(
                f"text occlusion {self.text!r} is not known; use one of {', '.join(TEXT_MODES)}"
            )
        if not 0.0 < self.band < 0.5:
            raise ConfigError(f"border band {self.band} must be in (0, 0.5), e.g. 0.08")
        check_method(self.method)


@dataclass(frozen=True)
class ImageResult:
    """One image: calibrated P(PNEUMONIA) clean / occluded, and the lung share of its map."""

    path: str
    label: str  # class name, or "unknown" for an unlabelled file
    p_clean: float
    p_border: float  # border band filled with settings.fill (the verdict's fill)
    p_text: float  # only the marks (or the corners) filled (inpainted)
    p_border_inpaint: float  # the border band under each fill: do the fills agree?
    p_border_median: float
    p_border_reflect: float
    marks_px: int  # pixels the text occlusion filled (0: nothing detected, p_text == p_clean)
    lung_energy_clean: float  # NaN when the map is all zero
    lung_energy_border: float
    target: str  # the class both maps explain (predicted on the clean film)


@dataclass(frozen=True)
class ShiftStats:
    """How far P(PNEUMONIA) moved under one occlusion, over a group of images."""

    n: int
    mean_abs: float
    p95_abs: float
    mean_signed: float  # occluded − clean: > 0 = towards PNEUMONIA
    flips: int  # decisions at the stored threshold that changed
    flip_share: float

    @classmethod
    def of(cls, clean: np.ndarray, occluded: np.ndarray, threshold: float) -> ShiftStats:
        if len(clean) == 0:
            return cls(0, *(float("nan"),) * 3, 0, float("nan"))
        delta = occluded - clean
        flips = int(((clean >= threshold) != (occluded >= threshold)).sum())
        return cls(
            n=len(clean),
            mean_abs=float(np.abs(delta).mean()),
            p95_abs=float(np.percentile(np.abs(delta), 95)),
            mean_signed=float(delta.mean()),
            flips=flips,
            flip_share=flips / len(clean),
        )


@dataclass(frozen=True)
class ShortcutResult:
    """What ``run_shortcut_check`` measured and wrote."""

    model: str
    checkpoint: str
    threshold: float
    temperature: float
    settings: ShortcutSettings
    images: tuple[ImageResult, ...]
    groups: dict[str, dict[str, ShiftStats]]  # group ("NORMAL", "PNEUMONIA", "all") → occlusion → stats
    lung: dict[str, dict[str, dict[str, float]]]  # group → "clean"/"border" → mean, quartiles, n
    flagged_border: bool
    flagged_text: bool
    verdict: str
    images_with_marks: int
    files: dict[str, Path] = field(default_factory=dict)  # json, csv, md, figure
