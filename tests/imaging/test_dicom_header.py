"""``read_image_with_header``: the DICOM header record, ``pydicom.Dataset`` input, lazy pydicom."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
from pathlib import Path

import dicom_factory as df
import numpy as np
import pytest
from PIL import Image

import pneumocxr
from pneumocxr.errors import UnsupportedImageError
from pneumocxr.imaging import DicomHeader, parse_age, read_image, read_image_with_header


def _chest(ds):
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.PatientAge = "004Y"
    ds.PixelSpacing = [0.139, 0.14]
    ds.ImagerPixelSpacing = [0.15, 0.15]
    ds.Manufacturer = "ACME Radiography"


@pytest.mark.parametrize(
    ("text", "years"),
    [
        ("004Y", 4.0),
        ("018M", 1.5),
        ("010W", 70 / 365.25),
        ("003D", 3 / 365.25),
        ("4Y", 4.0),  # not zero-padded, as some writers do
        ("012y", 12.0),
        (None, None),
        ("", None),
        ("045", None),  # no unit: ambiguous, not guessed
        ("4 years", None),
        ("1000Y", None),
    ],
)
def test_patient_age_strings_become_years(text, years):
    assert parse_age(text) == (pytest.approx(years) if years is not None else None)


def test_dicom_header_record_carries_uids_and_acquisition_facts(tmp_path):
    ds = df.make_dataset(df.ramp(20, 30, 4095), bits_stored=12, modality="CR")
    _chest(ds)
    path = tmp_path / "chest.dcm"
    ds.save_as(path, enforce_file_format=True)
    pixels, header = read_image_with_header(path)
    assert pixels.shape == (20, 30)
    assert header == DicomHeader(
        study_instance_uid=ds.StudyInstanceUID,
        series_instance_uid=ds.SeriesInstanceUID,
        sop_instance_uid=ds.SOPInstanceUID,
        sop_class_uid=ds.SOPClassUID,
        modality="CR",
        view_position="PA",
        body_part_examined="CHEST",
        patient_age="004Y",
        patient_age_years=4.0,
        pixel_spacing=(0.139, 0.14),
        imager_pixel_spacing=(0.15, 0.15),
        photometric_interpretation="MONOCHROME2",
        bits_stored=12,
        rows=20,
        columns=30,
        manufacturer="ACME Radiography",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        header.modality = "DX"  # type: ignore[misc]


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS:UserWarning")  # pydicom's note on "old"
def test_missing_or_malformed_header_values_are_none(tmp_path):
    def strip(ds):
        ds.PatientAge = "old"
        ds.BodyPartExamined = ""

    _, header = read_image_with_header(df.dicom_bytes(df.ramp(8, 8, 255, np.uint8), edit=strip))
    assert header is not None
    assert header.patient_age == "old" and header.patient_age_years is None
    assert header.body_part_examined is None  # empty is absent, not ""
    assert header.view_position is None and header.pixel_spacing is None and header.manufacturer is None


def test_jpeg_and_png_have_no_header():
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 100, dtype=np.uint8)).save(buffer, format="PNG")
    pixels, header = read_image_with_header(buffer.getvalue())
    assert header is None and pixels.shape == (8, 8)


def test_a_dataset_reads_like_its_file_and_is_not_modified():
    stored = df.ramp(16, 24, 4095)
    ds = df.make_dataset(stored, bits_stored=12, photometric="MONOCHROME1", window=(2000, 3000))
    _chest(ds)
    data = io.BytesIO()
    ds.save_as(data, enforce_file_format=True)
    from_file, file_header = read_image_with_header(data.getvalue())
    from_dataset, dataset_header = read_image_with_header(ds)
    np.testing.assert_array_equal(from_dataset, from_file)
    np.testing.assert_array_equal(read_image(ds), from_file)
    assert dataset_header == file_header


def test_an_in_memory_dataset_without_file_meta_is_read_and_left_untouched():
    # What a DIMSE handler or a hand-built data set looks like: no group 0002 at all.
    ds = df.make_dataset(df.ramp(8, 12, 255, np.uint8))
    del ds.file_meta
    before = ds.to_json_dict()
    pixels, header = read_image_with_header(ds)
    assert pixels.shape == (8, 12) and header is not None and header.modality == "DX"
    assert not hasattr(ds, "file_meta") and ds.to_json_dict() == before


def test_dataset_errors_name_the_instance():
    ds = df.make_dataset(np.zeros((3, 8, 8), dtype=np.uint16))  # multi-frame
    with pytest.raises(UnsupportedImageError, match=f"DICOM data set {ds.SOPInstanceUID}.*multi-frame"):
        read_image(ds)


def test_importing_imaging_does_not_import_pydicom():
    # The same pneumocxr as this test process imports, whether installed or on PYTHONPATH.
    src = str(Path(pneumocxr.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    code = "import sys, pneumocxr.imaging; print('pydicom' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == "False"
