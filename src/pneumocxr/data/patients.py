"""Patient ids and bacterial/viral sub-labels from file names.

Patient-level splitting is only as good as the patient ids, and the public releases carry them
only in file names. One function handles every naming scheme we know, so discovery, manifests
and checks cannot disagree about who a patient is:

- Kaggle release (``paultimothymooney/chest-xray-pneumonia``):
  ``personN_bacteria_M.jpeg`` / ``personN_virus_M.jpeg`` (also ``personN_virus_M_K.jpeg``) → ``personN``;
  ``IM-XXXX-YYYY.jpeg`` (also ``IM-XXXX-YYYY-ZZZZ.jpeg``) → ``IM-XXXX``;
  ``NORMAL2-IM-XXXX-YYYY.jpeg`` → ``NORMAL2-IM-XXXX``.
- Mendeley release (Kermany et al., "Labeled Optical Coherence Tomography (OCT) and Chest X-Ray
  Images", the ``CellData/chest_xray`` tree): ``NORMAL-<id>-<n>.jpeg``, ``BACTERIA-<id>-<n>.jpeg``,
  ``VIRUS-<id>-<n>.jpeg`` → ``NORMAL-<id>`` / ``BACTERIA-<id>`` / ``VIRUS-<id>``.

Anything else is treated as its own patient (the file stem): the safe choice, since grouping
unrelated images can only make a split more conservative, never leak.

A patient id is only meaningful *within* one release folder: the same ``personN`` number occurs
in the Kaggle train and test folders without any image in common.
"""

from __future__ import annotations

import logging
import re
from pathlib import PurePath

from pneumocxr.labels import (
    CLASS_NAMES,
    NORMAL,
    PNEUMONIA,
    SUBLABEL_BACTERIAL,
    SUBLABEL_NORMAL,
    SUBLABEL_UNKNOWN,
    SUBLABEL_VIRAL,
)

logger = logging.getLogger(__name__)

# Kaggle pneumonia: person1000_bacteria_2931 / person447_virus_921_1
_KAGGLE_PERSON = re.compile(r"^person(\d+)_(bacteria|virus)(?:_\d+)+$", re.IGNORECASE)
# Kaggle normal: IM-0115-0001, IM-0429-0001-0002, NORMAL2-IM-1427-0001
_KAGGLE_IM = re.compile(r"^((?:normal\d*-)?im-\d+)(?:-\d+)+$", re.IGNORECASE)
# Mendeley: NORMAL-1049278-0001, BACTERIA-1351146-0002, VIRUS-614452-0001
_MENDELEY = re.compile(r"^(normal|bacteria|virus)-(\d+)(?:-\d+)+$", re.IGNORECASE)

_KIND_TO_SUBLABEL = {"bacteria": SUBLABEL_BACTERIAL, "virus": SUBLABEL_VIRAL, "normal": SUBLABEL_NORMAL}


def parse_filename(name: str, label: int | None = None) -> tuple[str, str]:
    """``(patient_id, sublabel)`` for a file name (a bare name or a path; only the name is used).

    ``label`` (0 NORMAL, 1 PNEUMONIA), when known, supplies the sub-label for names that do not
    carry one, and wins over a name that contradicts it (a ``person*_bacteria`` file filed under
    NORMAL): the folder or manifest is the label of record, and a wrong sub-label would poison
    the three-class task. Never raises: an odd name becomes its own patient.
    """
    stem = _stem(name)
    patient_id, sublabel = _match_known(stem)
    if patient_id is None:
        return stem, _sublabel_from_label(label)
    if label is not None and _contradicts(sublabel, label):
        logger.warning(
            "%s: the name says %r but the label is %s; using the label (sub-label set to %r)",
            name,
            sublabel,
            _class_name(label),
            _sublabel_from_label(label),
        )
        sublabel = _sublabel_from_label(label)
    return patient_id, sublabel


def _stem(name: str) -> str:
    """The file name without directories and without its image extension (any case).

    Only the last suffix is dropped, and only when it looks like an extension, so an
    extension-less DICOM file named ``1.2.840.113619`` keeps its full name.
    """
    base = PurePath(str(name).replace("\\", "/")).name.strip()
    root, dot, ext = base.rpartition(".")
    if dot and root and ext.lower() in {"jpg", "jpeg", "png", "dcm", "dicom", "bmp", "tif", "tiff"}:
        return root
    return base


def _match_known(stem: str) -> tuple[str | None, str]:
    """Patient id and sub-label for a known naming scheme, ``(None, "")`` otherwise."""
    match = _KAGGLE_PERSON.match(stem)
    if match:
        return f"person{match.group(1)}", _KIND_TO_SUBLABEL[match.group(2).lower()]
    match = _KAGGLE_IM.match(stem)
    if match:
        return match.group(1).upper(), SUBLABEL_NORMAL
    match = _MENDELEY.match(stem)
    if match:
        kind = match.group(1).lower()
        return f"{kind.upper()}-{match.group(2)}", _KIND_TO_SUBLABEL[kind]
    return None, ""


def _sublabel_from_label(label: int | None) -> str:
    """What the class alone says: NORMAL is ``normal``; PNEUMONIA's cause is unknown."""
    return SUBLABEL_NORMAL if label == NORMAL else SUBLABEL_UNKNOWN


def _contradicts(sublabel: str, label: int) -> bool:
    """True when a sub-label from the name is impossible for the class."""
    if label == NORMAL:
        return sublabel != SUBLABEL_NORMAL
    if label == PNEUMONIA:
        return sublabel == SUBLABEL_NORMAL
    return False


def _class_name(label: int) -> str:
    return CLASS_NAMES[label] if 0 <= label < len(CLASS_NAMES) else str(label)
