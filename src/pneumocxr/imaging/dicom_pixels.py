"""DICOM stored values → the 8-bit grey levels a PACS export to JPEG would write, as float32 k/255.

Why this path: the models are trained on 8-bit JPEGs read as ``value / 255``. A DICOM of the same
film must reach the model as the same numbers, or the same patient scores differently by file
format (min–max stretching DICOM alone moved probabilities by up to 0.21). So DICOM follows the
pipeline of the standard (PS3.4 N.2, the grayscale pipeline) and of an export, and ends in the
same units as a JPEG:

1. **Stored values**: pydicom's ``pixel_array`` (bits above BitsStored masked, signed values
   sign-extended). PixelPaddingValue / PixelPaddingRangeLimit mark padding *in stored values*
   (PS3.3 C.7.5.1.1.2); those pixels are remembered and left out of step 3's range.
2. **Modality LUT**: RescaleSlope/Intercept or a Modality LUT Sequence.
3. **VOI** (the first of each, as a viewer shows the image by default), which fixes the range
   of modality values that spans black to white:

   - a **VOI LUT Sequence** (preferred when present: it is the modality's own curve), its output
     scaled by its declared range 2^bits − 1 (LUT Descriptor, third value);
   - else **WindowCenter/WindowWidth** with VOILUTFunction LINEAR (the default), LINEAR_EXACT or
     SIGMOID, as PS3.3 C.11.2.1.2 defines them;
   - else **no VOI**: the window implied by the bits the data use. The range is that of a
     ``b``-bit stored value (0..2^b − 1, or −2^(b−1)..2^(b−1) − 1 when signed) mapped through the
     modality LUT, where ``b`` is BitsStored, lowered to the bits the non-padding pixels actually
     need when that is fewer (never below 8). This is what an export without a window does for
     a correctly declared header (the full stored range), and it keeps an 8-bit secondary
     capture of a training JPEG at exactly ``value / 255``. The lowering handles the common
     mis-declaration of 12-bit detector data as BitsStored 16 (values 0..4095 would otherwise
     all be darker than 1/16). It is deliberately *not* a min–max or percentile window: those
     depend on the content of each image (a dark film would be brightened, a padding border or
     a collimator edge would move every grey level), which is exactly the skew being removed.
     Float pixel data have no stored bit depth and are refused without a window.
4. **8-bit quantisation**: the window's [0, 1] output is rounded to 256 levels, as an export to
   8-bit JPEG/PNG does. Matching it is what makes a DICOM of a training JPEG decode to the
   identical array; the precision given up is precision the training data never had.
5. **MONOCHROME1** inverted (255 − level), so bone is bright as in MONOCHROME2 and the JPEGs.
6. **Padding** pixels set to level 0 (black), after everything else: a padding border neither
   shifts the implied window nor shows as a bright frame after MONOCHROME1 inversion.
"""

from __future__ import annotations

import logging
import math
import struct
from typing import Any

import numpy as np
from pydicom.pixels import apply_modality_lut, apply_voi

from pneumocxr.errors import UnsupportedImageError

log = logging.getLogger(__name__)

LEVELS = 255  # 8-bit output, as a PACS export to JPEG/PNG and the training JPEGs
_MIN_IMPLIED_BITS = 8  # the implied window never narrows below an 8-bit range
_WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def display_pixels(ds: Any, stored: np.ndarray, photometric: str, name: str) -> np.ndarray:
    """Stored H×W values → float32 H×W of ``level / 255`` (levels 0..255); see the module docstring."""
    padding = padding_mask(ds, stored)
    content = stored[~padding] if padding.any() and not padding.all() else stored
    if content.size and content.min() == content.max():
        log.warning("%s: every pixel has the same value (%s); the image carries nothing", name, content.min())
    values = np.asarray(apply_modality_lut(stored, ds))
    if not np.all(np.isfinite(values)):
        raise UnsupportedImageError(name, "DICOM pixel values contain NaN or infinity after the modality LUT")
    fraction = _voi_fraction(ds, stored, values, content, name)
    levels = np.rint(np.clip(fraction, 0.0, 1.0) * LEVELS)
    if photometric == "MONOCHROME1":
        log.warning("%s is MONOCHROME1 (low values are white); inverting it to MONOCHROME2", name)
        levels = LEVELS - levels
    levels[padding] = 0
    # The very expression the JPEG reader uses (uint8 → float32, then / 255): bit-identical output.
    return levels.astype(np.uint8).astype(np.float32) / 255.0


def padding_mask(ds: Any, stored: np.ndarray) -> np.ndarray:
    """Where the stored value is PixelPaddingValue (or within it..PixelPaddingRangeLimit)."""
    value = _padding_value(ds, "PixelPaddingValue")
    if value is None:
        return np.zeros(stored.shape, dtype=bool)
    limit = _padding_value(ds, "PixelPaddingRangeLimit")
    if limit is None:
        return stored == value
    low, high = min(value, limit), max(value, limit)
    return (stored >= low) & (stored <= high)


def implied_bits(ds: Any, content: np.ndarray) -> int:
    """The bit depth of the no-VOI window: BitsStored, or fewer when the data need fewer (>= 8)."""
    declared = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if content.size == 0:
        return declared
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    low, high = int(content.min()), int(content.max())
    used = max(high.bit_length(), (-low - 1).bit_length() if low < 0 else 0) + (1 if signed else 0)
    return min(declared, max(_MIN_IMPLIED_BITS, used))


# ----------------------------------------------------------------------------- VOI


def _voi_fraction(
    ds: Any, stored: np.ndarray, values: np.ndarray, content: np.ndarray, name: str
) -> np.ndarray:
    """Modality values → [0, 1] by the first VOI LUT, else the first window, else the implied window."""
    if ds.get("VOILUTSequence"):
        return _voi_lut(ds, values, name)
    window = _first_window(ds, name)
    if window is not None:
        return _window(values, *window)
    if not np.issubdtype(stored.dtype, np.integer):
        raise UnsupportedImageError(
            name, "float pixel data without a VOI window has no defined display range; add WindowCenter/Width"
        )
    bits = implied_bits(ds, content)
    declared = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if bits < declared:
        log.info("%s: no VOI window; data need %d of %d stored bits", name, bits, declared)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    first = -(2 ** (bits - 1)) if signed else 0
    every_value = np.arange(first, first + 2**bits, dtype=np.int64)  # at most 65,536: cheap
    ends = np.asarray(apply_modality_lut(every_value, ds), dtype=np.float64)
    low, high = float(ends.min()), float(ends.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float64)
    return (values - low) / (high - low)


def _voi_lut(ds: Any, values: np.ndarray, name: str) -> np.ndarray:
    """First VOI LUT Sequence item, output scaled by the range its LUT Descriptor declares."""
    item = ds.VOILUTSequence[0]
    bits = int(item.LUTDescriptor[2])
    indices = np.rint(values).astype(np.int64)  # modality values index the LUT; they are integral
    try:
        mapped = apply_voi(indices, ds, index=0)
    except (ValueError, NotImplementedError, AttributeError, struct.error) as exc:
        raise UnsupportedImageError(name, f"DICOM VOI LUT Sequence cannot be applied ({exc})") from None
    return np.asarray(mapped, dtype=np.float64) / (2**bits - 1)


def _first_window(ds: Any, name: str) -> tuple[float, float, str] | None:
    """(center, width, function) of the first window in the header, or None when there is none."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = _first_number(ds.WindowCenter), _first_number(ds.WindowWidth)
    if center is None or width is None:
        return None
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in _WINDOW_FUNCTIONS:
        log.warning("%s: VOILUTFunction %s is not defined by DICOM; using LINEAR", name, function)
        function = "LINEAR"
    if (width < 1) if function == "LINEAR" else (width <= 0):  # PS3.3 C.11.2.1.2.1 / C.11.2.1.3
        raise UnsupportedImageError(name, f"DICOM WindowWidth {width:g} is invalid for {function} windowing")
    return center, width, function


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 / C.11.2.1.3, as a fraction of the output range."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (values - center) / width, -700, 700)))
    if function == "LINEAR_EXACT":
        return (values - center) / width + 0.5
    if width == 1:  # LINEAR with width 1 is a threshold at center - 0.5
        return (values > center - 0.5).astype(np.float64)
    return (values - (center - 0.5)) / (width - 1) + 0.5


def _first_number(value: Any) -> float | None:
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        value = value[0] if len(value) else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _padding_value(ds: Any, keyword: str) -> int | None:
    """An US-or-SS attribute as int: pydicom may leave the ambiguous VR as raw bytes."""
    value = ds.get(keyword)
    if value is None or value == b"" or value == "":
        return None
    if isinstance(value, bytes):
        signed = int(ds.get("PixelRepresentation") or 0) == 1
        if len(value) != 2:
            return None
        return struct.unpack("<h" if signed else "<H", value)[0]
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
