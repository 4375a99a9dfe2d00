"""De-identification of exported films: dicognito, then an allow-list of what the model needs.

Why dicognito (docs/PACS.md has the comparison): maintained (0.19, 2025; pydicom 3; Python 3.10–3.14),
pure Python on pydicom alone, and *keyed*: seeded with the site's secret, it replaces every UID,
name and ID with the same pseudonym every time — a re-export of the same films writes the same files,
and studies, series and instances stay linked — while the pseudonyms cannot be reversed without the
secret. It shifts dates consistently and keeps PatientAge (which the intended-use check reads).

What it does not do, we do deliberately, afterwards:
- keep only an allow-list of attributes (the image pixel/presentation module, the UIDs it replaced,
  Modality, ViewPosition, BodyPartExamined, PatientAge/Sex, manufacturer and model): free text
  (ImageComments, descriptions, histories), private tags and anything unexpected go, so nothing
  identifying survives by being in an attribute no one thought of;
- PatientAge of 90 years or more becomes "090Y" (HIPAA Safe Harbor);
- PatientID and PatientName become the manifest's patient pseudonym (so a file and its manifest row
  agree); PatientBirthDate and all dates are dropped: the model needs the age, not the dates;
- films that declare text burned into the pixels (BurnedInAnnotation YES) are refused: pixel text is
  not something a header de-identifier can remove.
"""

from __future__ import annotations

import hashlib
import hmac

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from pneumocxr.errors import PneumoCXRError

PIXEL_GROUP = 0x0028  # image pixel, presentation, VOI LUT, modality LUT: geometry and intensities only
KEEP = frozenset(
    {
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "ViewPosition",
        "BodyPartExamined",
        "ImageLaterality",
        "PatientOrientation",
        "ImageType",
        "PresentationIntentType",
        "ImagerPixelSpacing",
        "PatientAge",
        "PatientSex",
        "PatientID",
        "PatientName",
        "PatientIdentityRemoved",
        "DeidentificationMethod",
        "BurnedInAnnotation",
        "Manufacturer",
        "ManufacturerModelName",
        "SeriesNumber",
        "InstanceNumber",
        "SpecificCharacterSet",
        "PixelData",
    }
)
_KEEP_TAGS = frozenset(Tag(keyword) for keyword in KEEP)


class DeidentificationRefused(PneumoCXRError):
    """This film cannot be exported de-identified (the reason names no patient data)."""


def pseudonym(key: bytes, value: str, kind: str = "patient") -> str:
    """A stable, keyed pseudonym: the same ``value`` and key give the same id; without the key it
    cannot be reversed or recomputed (HMAC-SHA256)."""
    digest = hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"P{digest[:15].upper()}"


class Deidentifier:
    """``deidentify(ds, patient_pseudonym)`` changes ``ds`` in place; one instance per export, so
    every film of a study gets the same new study UID."""

    def __init__(self, key: bytes):
        from dicognito.anonymizer import Anonymizer

        # the key seeds dicognito's keyed hash (MD5 of seed + value): the secret is what protects
        self._anonymizer = Anonymizer(seed=key.hex())
        self.method = f"pneumocxr: dicognito {_dicognito_version()} keyed + attribute allow-list"

    def __call__(self, ds: Dataset, patient_pseudonym: str) -> Dataset:
        if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
            raise DeidentificationRefused("BurnedInAnnotation YES: text in the pixels cannot be removed here")
        ds.remove_private_tags()
        self._anonymizer.anonymize(ds)
        for element in list(ds):
            if element.tag.group != PIXEL_GROUP and element.tag not in _KEEP_TAGS:
                del ds[element.tag]
        age = str(ds.get("PatientAge", "")).strip().upper()
        if age.endswith("Y") and age[:-1].isdigit() and int(age[:-1]) >= 90:
            ds.PatientAge = "090Y"
        ds.PatientID = ds.PatientName = patient_pseudonym
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = self.method[:64]
        meta = ds.file_meta
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for keyword in (
            "SourceApplicationEntityTitle",
            "SendingApplicationEntityTitle",
            "PrivateInformation",
        ):
            if keyword in meta:
                del meta[keyword]
        return ds


def _dicognito_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dicognito")
    except PackageNotFoundError:
        return "?"
