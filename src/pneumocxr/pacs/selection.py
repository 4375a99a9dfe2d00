"""Which images the worker reads, and which it leaves alone.

- **Its own outputs** (SR and Secondary Capture instances, or anything in a series it describes as
  its own) are never jobs: Orthanc fires StableStudy again when a result lands in the study, and a
  worker that processed its own results would loop.
- **Not a chest radiograph** (Modality other than CR/DX, a BodyPartExamined that is not the chest)
  → skipped, with the reason recorded.
- **Lateral views** → skipped by default (the models saw frontal films only); with
  ``include_lateral`` they are scored and the warning is written into the SR and the SC banner.
Everything else goes to the core, whose scope checks (age outside 1–5 years, inverted film …) are
written into the SR and the banner — never silently passed.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from pneumocxr.inference.scope import CHEST_BODY_PARTS, CHEST_MODALITIES, LATERAL_VIEWS
from pneumocxr.pacs.identity import MANUFACTURER, OUR_SERIES_DESCRIPTIONS

SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."  # every Structured Report storage class
SC_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture (and its multi-frame variants)


def is_own_output(
    sop_class_uid: str | None, series_description: str | None = None, manufacturer: str | None = None
) -> bool:
    """True for instances the worker must not process: results (SR/SC) and its own series."""
    sop_class = str(sop_class_uid or "")
    # SC is 1.2.840.10008.5.1.4.1.1.7 and its .7.x variants — not .77.x (VL photographs) or .78.x
    secondary_capture = sop_class == SC_CLASS_PREFIX or sop_class.startswith(SC_CLASS_PREFIX + ".")
    if sop_class.startswith(SR_CLASS_PREFIX) or secondary_capture:
        return True
    return series_description in OUR_SERIES_DESCRIPTIONS or manufacturer == MANUFACTURER


def skip_reason(ds: Dataset, *, include_lateral: bool = False) -> str | None:
    """Why ``ds`` is not scored (None: score it). Reasons name DICOM attributes, never patient data."""
    if is_own_output(ds.get("SOPClassUID"), ds.get("SeriesDescription"), ds.get("Manufacturer")):
        return "own output (SR / Secondary Capture)"
    modality = str(ds.get("Modality", "")).upper()
    if modality not in CHEST_MODALITIES:
        return f"Modality {modality or 'missing'}: not a radiograph (CR/DX)"
    body_part = str(ds.get("BodyPartExamined", "")).strip().upper()
    if body_part and body_part not in CHEST_BODY_PARTS:
        return f"BodyPartExamined {body_part}: not a chest film"
    view = str(ds.get("ViewPosition", "")).strip().upper()
    if view in LATERAL_VIEWS and not include_lateral:
        return f"ViewPosition {view}: lateral view; --include-lateral scores it, with a warning"
    if "PixelData" not in ds:
        return "no pixel data"
    return None
