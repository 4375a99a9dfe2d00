"""What a DICOM header says about a radiograph, as a frozen record the rest of the code can trust.

Callers above ``imaging`` (scope checks, the SR writer, the API's input metadata) need the UIDs and
the acquisition facts (Modality, ViewPosition, BodyPartExamined, PatientAge, spacing) without
touching pydicom. This module reads them from a data set by keyword only, so it does not import
pydicom itself: importing ``pneumocxr.imaging`` stays cheap.

Missing or empty attributes are ``None`` rather than "" so "absent" is never mistaken for a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# DICOM AS (Age String): "nnnD", "nnnW", "nnnM" or "nnnY". Written strictly it is 4 characters;
# real headers also carry "4Y" or "4 Y", which mean the same and are accepted.
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
_DAYS_PER_YEAR = 365.25
_YEARS_PER_UNIT = {"D": 1 / _DAYS_PER_YEAR, "W": 7 / _DAYS_PER_YEAR, "M": 1 / 12, "Y": 1.0}


@dataclass(frozen=True)
class DicomHeader:
    """Identifying and acquisition attributes of one DICOM image (None where the header lacks them)."""

    study_instance_uid: str | None  # (0020,000D)
    series_instance_uid: str | None  # (0020,000E)
    sop_instance_uid: str | None  # (0008,0018)
    sop_class_uid: str | None  # (0008,0016), e.g. 1.2.840.10008.5.1.4.1.1.1.1 (DX for presentation)
    modality: str | None  # (0008,0060) "CR", "DX", "CT" …
    view_position: str | None  # (0018,5101) "PA", "AP", "LL" …
    body_part_examined: str | None  # (0018,0015) "CHEST" …
    patient_age: str | None  # (0010,1010) as written, e.g. "004Y"
    patient_age_years: float | None  # the same in years (months /12, weeks 7/365.25, days /365.25)
    pixel_spacing: tuple[float, float] | None  # (0028,0030) row, column spacing in mm at the patient
    imager_pixel_spacing: tuple[float, float] | None  # (0018,1164) row, column spacing in mm at the detector
    photometric_interpretation: str | None  # (0028,0004) "MONOCHROME1" / "MONOCHROME2"
    bits_stored: int | None  # (0028,0101)
    rows: int | None  # (0028,0010)
    columns: int | None  # (0028,0011)
    manufacturer: str | None  # (0008,0070)

    @classmethod
    def from_dataset(cls, ds: Any) -> DicomHeader:
        """Read the record from a ``pydicom.Dataset`` (anything with ``.get(keyword)`` works)."""
        age = _text(ds, "PatientAge")
        return cls(
            study_instance_uid=_text(ds, "StudyInstanceUID"),
            series_instance_uid=_text(ds, "SeriesInstanceUID"),
            sop_instance_uid=_text(ds, "SOPInstanceUID"),
            sop_class_uid=_text(ds, "SOPClassUID"),
            modality=_text(ds, "Modality"),
            view_position=_text(ds, "ViewPosition"),
            body_part_examined=_text(ds, "BodyPartExamined"),
            patient_age=age,
            patient_age_years=parse_age(age),
            pixel_spacing=_pair(ds, "PixelSpacing"),
            imager_pixel_spacing=_pair(ds, "ImagerPixelSpacing"),
            photometric_interpretation=_text(ds, "PhotometricInterpretation"),
            bits_stored=_int(ds, "BitsStored"),
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
            manufacturer=_text(ds, "Manufacturer"),
        )


def parse_age(text: str | None) -> float | None:
    """A DICOM Age String ("004Y", "018M", "010W", "003D") in years; None when absent or malformed.

    Malformed ages are None rather than an error: the age only informs the "outside the intended
    population" warning, and a bad header must not stop a prediction.
    """
    if not text:
        return None
    match = _AGE.match(text)
    if match is None:
        return None
    return int(match.group(1)) * _YEARS_PER_UNIT[match.group(2).upper()]


# ----------------------------------------------------------------------------- helpers


def _value(ds: Any, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
        return None  # an unparseable value (bad DS/IS text) is treated as absent


def _text(ds: Any, keyword: str) -> str | None:
    value = _value(ds, keyword)
    if value is None:
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__") and len(value) > 0:
        value = value[0]  # a multi-valued string keeps its first value
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    text = text.strip().strip("\0").strip()
    return text or None


def _int(ds: Any, keyword: str) -> int | None:
    value = _value(ds, keyword)
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _pair(ds: Any, keyword: str) -> tuple[float, float] | None:
    """A two-valued DS (row spacing, column spacing); one value means square pixels."""
    value = _value(ds, keyword)
    if value is None or value == "":
        return None
    items = value if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)) else [value]
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        return None
    if len(values) == 1:
        values = values * 2
    return (values[0], values[1]) if len(values) >= 2 else None
