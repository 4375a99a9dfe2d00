"""``pacs export`` against a real Orthanc: labelled studies → de-identified films + manifest that
``evaluate`` reads; no original name, ID, accession or UID anywhere in the files; stable pseudonyms."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from tests.inference.conftest import write_checkpoint
from tests.pacs.conftest import film_dataset

from pneumocxr.cli.main import main
from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.imaging import read_image
from pneumocxr.inference import load_predictor
from pneumocxr.pacs.dicomweb import DicomWebPacs
from pneumocxr.pacs.export import load_or_create_key, parse_query, read_labels

PSEUDONYM = re.compile(r"^P[0-9A-F]{15}$")


@pytest.fixture
def films(shared_data):
    train = shared_data / "chest_xray" / "train"
    paths = sorted((train / "NORMAL").glob("*.jpeg"))[:2] + sorted((train / "PNEUMONIA").glob("*.jpeg"))[:2]
    return [np.rint(read_image(p) * 255).astype(np.uint8) for p in paths]


def study(levels, n: int, *, date: str = "20240301", **kwargs) -> Dataset:
    """A film of patient ``n`` with identifiers in the usual places and in some unusual ones."""
    ds = film_dataset(levels, **kwargs)
    ds.PatientID, ds.PatientName = f"MRN-{n:05d}", f"Doe{n}^Jane"
    ds.AccessionNumber, ds.StudyDate = f"ACC-{n:05d}", date
    ds.PatientBirthDate, ds.InstitutionName = "20210101", "St Elsewhere Hospital"
    ds.ImageComments = f"portable film of Doe{n}, MRN-{n:05d}"  # free text: names end up here
    block = ds.private_block(0x0029, "SITE PRIVATE", create=True)
    block.add_new(0x01, "LO", f"MRN-{n:05d}")
    return ds


def identifiers(sources: list[Dataset]) -> set[str]:
    found = {"St Elsewhere", "SITE PRIVATE"}
    for ds in sources:
        found |= {str(ds.PatientID), str(ds.AccessionNumber), "Doe", "Jane"}
        found |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}
    return found


def text_values(ds: Dataset):
    """Every non-binary value of every element (nested sequences and the file meta included)."""
    for element in [*ds.file_meta, *ds.iterall()]:
        if element.VR not in ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ"):
            yield str(element.value)


@pytest.mark.slow
def test_export_writes_deidentified_films_evaluate_reads(orthanc, films, tmp_path, capsys):
    normal_a = study(films[0], 1, modality="CR", age="004Y")
    normal_b = study(films[1], 2, modality="DX", bits=12, monochrome1=True, age="095Y")
    lateral_b = study(films[1], 2, view="LL", study_uid=normal_b.StudyInstanceUID)
    pneumonia_c = study(films[2], 3, modality="CR")
    pneumonia_c_again = study(films[3], 33, modality="CR")  # the site says: same child as 3 (patient_key)
    pneumonia_e = study(films[3], 5, modality="DX")
    unlabelled = study(films[0], 6)
    too_old = study(films[2], 7, date="20231201")
    sources = [
        normal_a,
        normal_b,
        lateral_b,
        pneumonia_c,
        pneumonia_c_again,
        pneumonia_e,
        unlabelled,
        too_old,
    ]
    DicomWebPacs(orthanc.dicomweb).store(sources)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "StudyInstanceUID,AccessionNumber,label,patient_key\n"
        f"{normal_a.StudyInstanceUID},,NORMAL,\n"
        f",{normal_b.AccessionNumber},normal,\n"  # by accession number
        f"{pneumonia_c.StudyInstanceUID},,PNEUMONIA,K-3\n"
        f"{pneumonia_c_again.StudyInstanceUID},,PNEUMONIA,K-3\n"
        f"{pneumonia_e.StudyInstanceUID},,PNEUMONIA,\n"
        f"{too_old.StudyInstanceUID},,PNEUMONIA,\n"
    )
    out, key = tmp_path / "site_data", tmp_path / "secret" / "export.key"
    argv = ["pacs", "export", "--dicomweb", orthanc.dicomweb, "--query", "StudyDate=20240101-",
            "--labels", str(labels), "--out", str(out), "--deidentify", "--key-file", str(key)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "exported 2 NORMAL, 3 PNEUMONIA" in printed and "lateral" in printed
    assert "1 labelled study(ies) not returned" in printed

    with (out / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["label"] for r in rows) == ["NORMAL"] * 2 + ["PNEUMONIA"] * 3
    assert {r["split"] for r in rows} == {"test"}
    patients = [r["patient_id"] for r in rows]
    assert all(PSEUDONYM.match(p) for p in patients)
    assert len(set(patients)) == 4  # C's two studies are one patient (patient_key), the rest distinct

    originals = identifiers(sources)
    files = sorted((out / "images").glob("*.dcm"))
    assert len(files) == 5 and not any(p.name.startswith(".") for p in (out / "images").iterdir())
    by_age = {}
    for path in files:
        ds = pydicom.dcmread(path)
        leaks = {o for o in originals for value in text_values(ds) if o in value}
        assert not leaks, f"{path.name} still carries {leaks}"
        assert not any(element.tag.is_private for element in ds.iterall())
        assert ds.PatientIdentityRemoved == "YES" and PSEUDONYM.match(str(ds.PatientID))
        assert "PatientBirthDate" not in ds and "StudyDate" not in ds
        assert ds.ViewPosition == "AP" and ds.BodyPartExamined == "CHEST" and ds.Modality in ("CR", "DX")
        by_age[str(ds.PatientAge)] = ds
    assert "090Y" in by_age and "095Y" not in by_age  # ages over 89 are capped (Safe Harbor)
    for text in ((out / "export.json").read_text(), (out / "manifest.csv").read_text()):
        assert not [o for o in originals if o in text]

    # what the model needs survived: the de-identified film scores exactly like the original
    predictor = load_predictor(write_checkpoint(tmp_path / "model.pt"), device="cpu")
    dx_12_bit = by_age["090Y"]
    assert dx_12_bit.PhotometricInterpretation == "MONOCHROME1" and dx_12_bit.BitsStored == 12
    assert predictor.predict(dx_12_bit).positive_probability == pytest.approx(
        predictor.predict(normal_b).positive_probability, abs=1e-9
    )

    # a re-export with the same key writes the same files and pseudonyms
    assert main(argv) == 0
    with (out / "manifest.csv").open() as handle:
        assert list(csv.DictReader(handle)) == rows
    assert sorted((out / "images").glob("*.dcm")) == files

    # and evaluate reads it (manifest layout, patient-level bootstrap on the pseudonyms)
    report = tmp_path / "report"
    checkpoint = str(tmp_path / "model.pt")
    assert main(["evaluate", "--checkpoint", checkpoint, "--data", str(out), "--out", str(report),
                 "--n-boot", "50"]) == 0  # fmt: skip
    metrics = json.loads((report / "metrics.json").read_text())
    assert (metrics["layout"], metrics["n_images"], metrics["n_patients"]) == ("manifest", 5, 4)


def test_labels_query_and_key_are_checked(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("StudyInstanceUID,label\n1.2.3,MAYBE\n,NORMAL\n")
    with pytest.raises(DatasetError, match=r"line 2.*MAYBE.*line 3"):
        read_labels(bad)
    (tmp_path / "no_key.csv").write_text("PatientName,label\nx,NORMAL\n")
    with pytest.raises(DatasetError, match="StudyInstanceUID"):
        read_labels(tmp_path / "no_key.csv")
    assert parse_query(["StudyDate=20240101-", "ModalitiesInStudy=CR"]) == {
        "StudyDate": "20240101-",
        "ModalitiesInStudy": "CR",
    }
    with pytest.raises(ConfigError, match="not a DICOM keyword"):
        parse_query(["StudyDay=2024"])
    with pytest.raises(ConfigError, match="must not travel"):
        load_or_create_key(tmp_path / "out" / "export.key", tmp_path / "out")
    key = load_or_create_key(tmp_path / "k" / "export.key", tmp_path / "out")
    assert (tmp_path / "k" / "export.key").stat().st_mode & 0o077 == 0
    assert load_or_create_key(tmp_path / "k" / "export.key", tmp_path / "out") == key
