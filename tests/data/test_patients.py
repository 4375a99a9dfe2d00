"""Patient ids and sub-labels from every naming scheme we know, and odd names that must not break."""

from __future__ import annotations

import logging

import pytest

from pneumocxr.data.patients import parse_filename
from pneumocxr.labels import NORMAL, PNEUMONIA


@pytest.mark.parametrize(
    ("name", "label", "expected"),
    [
        # Kaggle release
        ("person1000_bacteria_2931.jpeg", None, ("person1000", "bacterial")),
        ("person1000_virus_1681.jpeg", None, ("person1000", "viral")),
        ("person447_virus_921_1.jpeg", None, ("person447", "viral")),
        ("IM-0115-0001.jpeg", None, ("IM-0115", "normal")),
        ("IM-0429-0001-0002.jpeg", None, ("IM-0429", "normal")),
        ("NORMAL2-IM-1427-0001.jpeg", None, ("NORMAL2-IM-1427", "normal")),
        # Mendeley release (CellData/chest_xray)
        ("NORMAL-1049278-0001.jpeg", None, ("NORMAL-1049278", "normal")),
        ("BACTERIA-1351146-0002.jpeg", None, ("BACTERIA-1351146", "bacterial")),
        ("VIRUS-614452-0001.jpeg", None, ("VIRUS-614452", "viral")),
        # case-insensitive names and extensions, directories ignored
        ("Person12_Bacteria_3.JPEG", None, ("person12", "bacterial")),
        ("im-0001-0002.JPG", None, ("IM-0001", "normal")),
        ("bacteria-77-0003.PNG", None, ("BACTERIA-77", "bacterial")),
        ("some/dir/person5_virus_9.jpeg", None, ("person5", "viral")),
        ("C:\\data\\IM-0002-0001.jpeg", None, ("IM-0002", "normal")),
        # unknown patterns: each file its own patient, sub-label from the label
        ("scan_01.png", NORMAL, ("scan_01", "normal")),
        ("scan_01.png", PNEUMONIA, ("scan_01", "unknown")),
        ("scan_01.png", None, ("scan_01", "unknown")),
        ("1.2.840.113619.2.55.3", PNEUMONIA, ("1.2.840.113619.2.55.3", "unknown")),
        ("no_extension", NORMAL, ("no_extension", "normal")),
        ("study.DCM", NORMAL, ("study", "normal")),
        ("person_bacteria.jpeg", PNEUMONIA, ("person_bacteria", "unknown")),
    ],
)
def test_parse_filename_known_and_unknown_patterns(name, label, expected):
    assert parse_filename(name, label) == expected


@pytest.mark.parametrize(
    "name", ["", ".", "...", "-", "_", "person", "IM-", "ñandú.jpeg", " spaced name .png"]
)
def test_parse_filename_never_raises_on_odd_names(name):
    patient_id, sublabel = parse_filename(name, NORMAL)
    assert isinstance(patient_id, str)
    assert sublabel == "normal"


def test_label_wins_over_a_contradicting_name_and_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="pneumocxr.data.patients"):
        assert parse_filename("person3_bacteria_1.jpeg", NORMAL) == ("person3", "normal")
        assert parse_filename("IM-0003-0001.jpeg", PNEUMONIA) == ("IM-0003", "unknown")
    assert len(caplog.records) == 2
    assert "person3_bacteria_1.jpeg" in caplog.records[0].getMessage()


def test_consistent_label_keeps_the_name_sublabel():
    assert parse_filename("person3_virus_1.jpeg", PNEUMONIA) == ("person3", "viral")
    assert parse_filename("NORMAL2-IM-0003-0001.jpeg", NORMAL) == ("NORMAL2-IM-0003", "normal")
