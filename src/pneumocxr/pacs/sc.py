"""The film with the heat map burned in, as a Secondary Capture (highdicom ``SCImage``).

Common viewers (OHIF) do not draw an image-level SR, so the evidence travels as pixels a viewer
shows anywhere: the film in its original geometry, the Grad-CAM of the decided class blended on
top, and a banner across the top that no one can miss — "RESEARCH USE — NOT FOR DIAGNOSIS", the
decision and probability, and any intended-use warning.
"""

from __future__ import annotations

import numpy as np
from highdicom.sc import SCImage
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from pneumocxr.explain.overlay import blend
from pneumocxr.inference import PredictionResult
from pneumocxr.pacs.identity import MANUFACTURER, SERIES_DESCRIPTION_SC, SERIES_NUMBER_SC, output_uids

BANNER_HEADLINE = "RESEARCH USE - NOT FOR DIAGNOSIS"


def banner_lines(result: PredictionResult) -> list[str]:
    """What the banner says: the headline, the answer, then every intended-use warning."""
    rule = f" (threshold {result.threshold:.2f})" if result.threshold is not None else ""
    lines = [
        BANNER_HEADLINE,
        f"pneumocxr {result.model.name}: {result.label}, p = {result.positive_probability:.2f}{rule}",
    ]
    lines += [f"WARNING: {w.message}" for w in result.warnings]
    return lines


def burn_in(film: np.ndarray, heatmap: np.ndarray | None, lines: list[str]) -> np.ndarray:
    """(H, W, 3) uint8: ``film`` (H, W) in [0, 1] with ``heatmap`` (same size, [0, 1]) blended on
    and ``lines`` written in a black band over the top of the image."""
    rgb = (
        blend(film, heatmap)
        if heatmap is not None
        else np.repeat(np.rint(film[..., None] * 255), 3, 2).astype(np.uint8)
    )
    image = Image.fromarray(rgb)
    height, width = film.shape
    size = max(10, width // 48)
    font = ImageFont.load_default(size=size)
    wrapped = [chunk for line in lines for chunk in _wrap(line, max(20, int(width / (0.55 * size))))]
    band = int(len(wrapped) * size * 1.3 + size)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, width, min(band, height)], fill=(0, 0, 0))
    for i, text in enumerate(wrapped):
        colour = (255, 64, 64) if i == 0 or text.startswith("WARNING") else (255, 255, 255)
        draw.text((size // 2, size // 2 + int(i * size * 1.3)), text, fill=colour, font=font)
    return np.asarray(image)


def build_sc(
    source: Dataset, result: PredictionResult, film: np.ndarray, heatmap: np.ndarray | None
) -> SCImage:
    """The Secondary Capture of ``source`` (deterministic UIDs, same study and patient)."""
    uids = output_uids(source.StudyInstanceUID, source.SOPInstanceUID, result.model.sha256 or "unsaved-model")
    pixels = burn_in(film, heatmap, banner_lines(result))
    image = SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=uids.sc_series,
        series_number=SERIES_NUMBER_SC,
        sop_instance_uid=uids.sc_instance,
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),
        series_description=SERIES_DESCRIPTION_SC,
    )
    image.BurnedInAnnotation = (
        "YES"  # the banner is text in the pixels: say so (de-identification tools look)
    )
    return image


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines
