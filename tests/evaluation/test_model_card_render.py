"""The pure parts of the model card: table cells, numbers, the Hanley–McNeil interval, shift coverage,
and reading stress results of several shapes."""

from __future__ import annotations

import math

import pytest

from pneumocxr.evaluation.model_card import (
    augmentation_text,
    cell,
    fmt_ci,
    hanley_mcneil_interval,
    shift_coverage,
)
from pneumocxr.evaluation.model_card_inputs import split_label
from pneumocxr.evaluation.model_card_stress import read_stress, stress_row

RANGES = {"rotation_deg": 7.0, "shift": 0.05, "shear_deg": 0.0, "zoom": 0.1, "hflip": False}


def test_cells_escape_pipes_and_flatten_line_breaks():
    assert cell("a|b\nc") == r"a\|b c"
    assert cell(None) == "—" and cell("") == "—"
    assert cell(1234) == "1,234" and cell(0.12345) == "0.123"


def test_estimates_print_with_their_interval_or_alone():
    assert fmt_ci(0.9, 0.85, 0.95) == "0.900 (0.850–0.950)"
    assert fmt_ci(0.9) == "0.900" and fmt_ci(0.9, float("nan"), 0.95) == "0.900"
    assert fmt_ci(None) == "n/a" and fmt_ci(float("nan")) == "n/a"


def test_hanley_mcneil_matches_the_formula_by_hand():
    # A = 0.8, 50 + 50: Q1 = 0.8 / 1.2, Q2 = 1.28 / 1.8 → SE = sqrt(4.95111 / 2500) = 0.044502
    low, high = hanley_mcneil_interval(0.8, 50, 50)
    assert (high - low) / 2 == pytest.approx(1.959964 * 0.044502, rel=1e-4)
    assert hanley_mcneil_interval(0.999, 500, 200)[1] == 1.0  # clipped
    assert all(math.isnan(v) for v in hanley_mcneil_interval(0.9, 0, 10))


def test_shift_coverage_follows_the_suite_definition_then_the_name():
    assert shift_coverage("zoom_in", RANGES, ["zoom"]) == "yes (zoom 1 ± 0.1 per axis)"
    assert shift_coverage("crop_top", RANGES, ["shift"]) == "yes (shift ±0.05 of the side)"
    assert shift_coverage("jpeg", RANGES, []) == "no (no augmentation of this kind)"
    assert shift_coverage("shear", RANGES) == "no (range 0)"
    assert shift_coverage("Rotation", RANGES) == "yes (rotation ±7°)"
    assert shift_coverage("flip", RANGES) == "no (range 0)"
    assert shift_coverage("zoom_in", None, flag=True) == "yes"
    assert "unknown" in shift_coverage("zoom_in", None)
    assert augmentation_text("anatomy", RANGES).endswith("no flips")
    # cpu_accurate's noise/blur ranges are said, and cover those shifts
    textured = {**RANGES, "noise": 0.03, "blur": 1.0}
    text = augmentation_text("fov", textured)
    assert "Gaussian noise std up to 0.03, Gaussian blur sigma up to 1 px" in text
    assert shift_coverage("noise", textured, ["noise"]) == "yes (Gaussian noise std up to 0.03)"
    assert shift_coverage("blur", textured) == "yes (Gaussian blur sigma up to 1 px)"
    assert shift_coverage("noise", RANGES) == "no (range 0)"


def test_stress_rows_accept_several_spellings_and_refuse_nonsense():
    row = stress_row({"shift": "noise", "severity_name": "mild", "level": 0.02, "auc": 0.9, "auc_lo": 0.8,
                      "auc_hi": 0.95, "in_training_augmentation": "False"})  # fmt: skip
    assert row == {
        "shift": "noise",
        "severity": "mild (0.02)",
        "auc": (0.9, 0.8, 0.95),
        "sensitivity": None,
        "specificity": None,
        "covered": False,
    }
    assert stress_row({"name": "blur", "specificity": {"value": 0.5, "ci": [0.4, 0.6]}})["specificity"] == (
        0.5,
        0.4,
        0.6,
    )
    assert stress_row({"shift": "blur"}) is None and stress_row(["blur"]) is None


def test_read_stress_reports_why_it_has_nothing(tmp_path):
    assert read_stress(None)["ok"] is False
    assert "not found" in read_stress(tmp_path / "nope.json")["reason"]
    (tmp_path / "bad.json").write_text("{not json")
    assert "unreadable" in read_stress(tmp_path / "bad.json")["reason"]
    (tmp_path / "other.json").write_text('{"rows": [{"x": 1}]}')
    assert "shape" in read_stress(tmp_path / "other.json")["reason"]


def test_split_labels_say_what_the_numbers_are_worth():
    assert split_label(
        "test", {"could_have_been_used_for_selection": False, "same_dataset": True}
    ).startswith("test — withheld")
    external = {"could_have_been_used_for_selection": False, "same_dataset": False}
    assert "external validation (/x)" in split_label("test", external, "/x")
    assert "optimistic" in split_label("train", {"could_have_been_used_for_selection": True})
    assert "not recorded" in split_label("test", {})
