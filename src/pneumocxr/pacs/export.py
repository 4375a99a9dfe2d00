"""``pneumocxr pacs export``: a site's own labelled films, de-identified, in the layout ``evaluate`` reads.

Before the watcher is switched on, a hospital measures the model on its own population:
QIDO-RS finds the studies (``--query StudyDate=20240101-``), ``labels.csv`` says which are NORMAL or
PNEUMONIA (by StudyInstanceUID or AccessionNumber), and each labelled study's frontal CR/DX chest
films (the watcher's own selection rules) are retrieved by WADO-RS, de-identified (``deid.py``) and
written as ``OUT/images/<new SOP UID>.dcm`` with ``OUT/manifest.csv`` (``path,label,patient_id,split``).
``patient_id`` is a keyed pseudonym of the site's patient key (or PatientID), stable across exports,
so ``evaluate``'s patient-level bootstrap groups a child's films — and never the real id.
``OUT/export.json`` records counts and skip reasons, never patient data. Re-running is idempotent.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.labels import CLASS_NAMES, SPLITS
from pneumocxr.pacs.deid import DeidentificationRefused, Deidentifier, pseudonym
from pneumocxr.pacs.dicomweb import DicomWebPacs, InstanceGone
from pneumocxr.pacs.selection import is_own_output, skip_reason

logger = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
_STUDY_COLUMNS = {"studyinstanceuid": "study", "study_instance_uid": "study", "accessionnumber": "accession"}
_PATIENT_COLUMNS = ("patient", "patient_key", "patient_id", "patientid")


@dataclass(frozen=True)
class LabelledStudy:
    label: str  # NORMAL | PNEUMONIA
    study_uid: str | None
    accession: str | None
    patient_key: str | None  # the site's patient identifier; pseudonymised before it is written
    split: str


@dataclass(frozen=True)
class ExportOptions:
    query: dict[str, str]  # QIDO-RS study filters, DICOM keyword → value
    key: bytes  # the site's pseudonym secret (never written into the export)
    deidentify: bool = True  # False: identifiable films, for use inside the hospital only
    include_lateral: bool = False


@dataclass
class ExportSummary:
    out: Path
    exported: Counter = field(default_factory=Counter)  # label → films
    skipped: Counter = field(default_factory=Counter)  # reason → films (reasons name attributes only)
    studies: int = 0  # labelled studies found by the query
    labelled_not_found: int = 0  # labels whose study the query did not return
    unlabelled: int = 0  # studies the query returned without a label

    @property
    def manifest(self) -> Path:
        return self.out / MANIFEST


def parse_query(pairs: list[str]) -> dict[str, str]:
    """``["StudyDate=20240101-", "ModalitiesInStudy=CR"]`` → QIDO filters; keys must be DICOM keywords."""
    filters: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--query {pair!r}: expected KEYWORD=VALUE, e.g. StudyDate=20240101-")
        if tag_for_keyword(key) is None:
            raise ConfigError(
                f"--query {pair!r}: {key!r} is not a DICOM keyword (e.g. StudyDate, ModalitiesInStudy)"
            )
        filters[key] = value.strip()
    return filters


def read_labels(path: Path) -> list[LabelledStudy]:
    """The labels CSV: a StudyInstanceUID or AccessionNumber column, ``label`` (NORMAL/PNEUMONIA),
    optionally a patient key column (patient, patient_key or patient_id) and ``split``."""
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read the labels ({exc}); save it as UTF-8 CSV") from None
    keys = {kind: columns[c] for c, kind in _STUDY_COLUMNS.items() if c in columns}
    if "label" not in columns or not keys:
        raise DatasetError(
            f"{path}: the header needs 'label' and 'StudyInstanceUID' or 'AccessionNumber' "
            f"(has {list(columns)}); optional: patient_key, split"
        )
    patient_column = next((columns[c] for c in _PATIENT_COLUMNS if c in columns), None)
    labelled, errors, seen = [], [], set()
    for line, row in rows:
        label = (row.get(columns["label"]) or "").strip().upper()
        study = (row.get(keys.get("study", ""), "") or "").strip() or None
        accession = (row.get(keys.get("accession", ""), "") or "").strip() or None
        split = (row.get(columns.get("split", ""), "") or "").strip().lower() or "test"
        if label not in CLASS_NAMES:
            errors.append(f"line {line}: label {label!r} is not NORMAL or PNEUMONIA")
        elif not (study or accession):
            errors.append(f"line {line}: no StudyInstanceUID or AccessionNumber")
        elif split not in SPLITS:
            errors.append(f"line {line}: split {split!r} is not train, val or test")
        elif (study, accession) in seen:
            errors.append(f"line {line}: the same study is labelled twice")
        else:
            seen.add((study, accession))
            patient = ((row.get(patient_column) or "").strip() or None) if patient_column else None
            labelled.append(LabelledStudy(label, study, accession, patient, split))
    if errors:
        raise DatasetError(f"{path}: {len(errors)} bad row(s): {'; '.join(errors[:5])}. Fix them and rerun")
    if not labelled:
        raise DatasetError(f"{path}: no labelled studies")
    return labelled


def load_or_create_key(path: Path, out: Path) -> bytes:
    """The pseudonym secret: read from ``path``, or created there (0600) on the first export.

    Keep it: the same key gives the same pseudonyms next time. It must not travel with the export."""
    path, out = Path(path).expanduser().resolve(), Path(out).expanduser().resolve()
    if path == out or out in path.parents:
        raise ConfigError(
            f"--key-file {path} is inside --out {out}: the secret must not travel with the export"
        )
    if path.exists():
        text = path.read_text().strip()
        if len(text) < 32:
            raise ConfigError(f"--key-file {path}: too short to be a secret; delete it to make a new one")
        return text.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    logger.info("created the pseudonym key %s: keep it (same key, same pseudonyms), never share it", path)
    return path.read_text().strip().encode()


def export_site_data(
    pacs: DicomWebPacs, labels: list[LabelledStudy], out: Path, options: ExportOptions
) -> ExportSummary:
    """Retrieve, select, de-identify and write the labelled studies; the manifest last."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(out)
    deidentify = Deidentifier(options.key) if options.deidentify else None
    by_uid = {item.study_uid: item for item in labels if item.study_uid}
    by_accession = {item.accession: item for item in labels if item.accession}
    found: set[int] = set()
    rows: list[dict[str, str]] = []
    for study_uid, accession in pacs.find_studies(options.query):
        item = by_uid.get(study_uid) or (by_accession.get(accession) if accession else None)
        if item is None:
            summary.unlabelled += 1
            continue
        found.add(id(item))
        summary.studies += 1
        rows += _export_study(pacs, study_uid, item, out, options, deidentify, summary)
    summary.labelled_not_found = len(labels) - len(found)
    _write_manifest(out / MANIFEST, rows)
    _write_json(out / "export.json", _record(summary, options, deidentify))
    return summary


def _export_study(pacs, study_uid, item, out, options, deidentify, summary) -> list[dict[str, str]]:
    rows = []
    for ref in pacs.instances(study_uid):
        if is_own_output(ref.sop_class, ref.series_description):
            continue
        try:
            ds = pacs.retrieve(ref)
        except InstanceGone:
            summary.skipped["gone from the PACS while exporting"] += 1
            continue
        reason = skip_reason(ds, include_lateral=options.include_lateral)
        if reason is not None:
            summary.skipped[reason] += 1
            continue
        patient = pseudonym(options.key, item.patient_key or str(ds.get("PatientID") or "") or study_uid)
        if deidentify is not None:
            try:
                deidentify(ds, patient)
            except DeidentificationRefused as exc:
                summary.skipped[str(exc)] += 1
                continue
        relative = Path("images") / f"{ds.SOPInstanceUID}.dcm"
        _save(ds, out / relative)
        summary.exported[item.label] += 1
        rows.append(
            {"path": relative.as_posix(), "label": item.label, "patient_id": patient, "split": item.split}
        )
    return rows


def _save(ds: Dataset, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        ds.save_as(temporary, enforce_file_format=True)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    temporary = path.with_name(f".{path.name}.part")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "patient_id", "split"])
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["split"], r["label"], r["path"])))
    os.replace(temporary, path)


def _record(summary: ExportSummary, options: ExportOptions, deidentify: Deidentifier | None) -> dict:
    """What export.json says: counts and reasons; the query's keys but not its values (a filter may
    name a patient)."""
    return {
        "exported": dict(summary.exported),
        "skipped": dict(summary.skipped),
        "studies": summary.studies,
        "labelled_not_found": summary.labelled_not_found,
        "unlabelled_studies": summary.unlabelled,
        "query_keys": sorted(options.query),
        "deidentification": deidentify.method if deidentify is not None else "none (identifiable)",
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
