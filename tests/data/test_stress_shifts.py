"""The stress suite's shift catalogue: deterministic, shape-preserving, identity at severity 0, and
each transform does what its name says."""

from __future__ import annotations

import numpy as np
import pytest

from pneumocxr.data.stress_shifts import (
    SHIFTS,
    apply_shift,
    in_training_augmentation,
    resolve_shifts,
)
from pneumocxr.errors import ConfigError

CONDITIONS = [(name, s) for name, shift in SHIFTS.items() for s in shift.severities]
SEEDED = {"noise", "text", "rotation"}  # shifts with a random draw per image


@pytest.fixture(scope="module")
def film() -> np.ndarray:
    """A 90×110 float32 'film': a gradient, a bright blob and a little texture, nothing saturated."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:90, 0:110]
    image = 0.2 + 0.3 * xx / 110 + 0.3 * np.exp(-((xx - 50) ** 2 + (yy - 40) ** 2) / 300.0)
    return np.clip(image + rng.normal(0, 0.02, image.shape), 0.05, 0.95).astype(np.float32)


@pytest.mark.parametrize(("name", "severity"), CONDITIONS)
def test_every_shift_is_deterministic_keeps_shape_and_range_and_changes_the_image(film, name, severity):
    out = apply_shift(film, name, severity, seed=7, reference_size=64)
    again = apply_shift(film, SHIFTS[name], severity, seed=7, reference_size=64)
    assert np.array_equal(out, again)
    assert out.shape == film.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - film).max() > 0.02  # visibly changed somewhere


@pytest.mark.parametrize("name", list(SHIFTS))
def test_severity_zero_is_the_clean_image_for_every_shift(film, name):
    out = apply_shift(film, name, 0, seed=3, reference_size=64)
    assert np.array_equal(out, film) and out is not film


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_the_seed_decides_the_random_draws(film, name):
    top = SHIFTS[name].severities[-1]
    draws = {apply_shift(film, name, top, seed=s, reference_size=64).tobytes() for s in range(6)}
    assert len(draws) > 1


def test_the_transforms_mean_what_their_names_say(film):
    ramp = np.tile(np.linspace(0.0, 1.0, 201, dtype=np.float32), (101, 1))  # x coordinate
    zoomed = apply_shift(ramp, "zoom_in", 3, seed=0)  # keep the central 0.7 of the side
    assert zoomed[50, 0] == pytest.approx(0.15, abs=0.01) and zoomed[50, -1] == pytest.approx(0.85, abs=0.01)
    small = apply_shift(film, "zoom_out", 3, seed=0)  # shrunk into a black field
    assert small[0, 0] == 0.0 and small[45, 55] > 0.1
    assert np.allclose(apply_shift(film, "invert", 1, seed=0), 1.0 - film, atol=1e-6)
    assert np.allclose(apply_shift(film, "brightness", 2, seed=0), film + 0.1, atol=1e-5)
    flat = apply_shift(film, "contrast", 3, seed=0)  # a·x + (1 - a)/2 with a = 0.5: around mid-grey
    assert np.allclose(flat, 0.5 * film + 0.25, atol=1e-5)
    top = apply_shift(ramp.T.copy(), "crop_top", 3, seed=0)  # y ramp: the top 30 % are gone
    assert top[0, 50] == pytest.approx(0.3, abs=0.01)


def test_burned_in_text_touches_only_the_corners(film):
    out = apply_shift(film, "text", 3, seed=1)
    changed = np.abs(out - film) > 0.05
    assert changed.any() and out[changed].mean() > film[changed].mean()  # white text
    assert not changed[30:60, 30:80].any()  # the middle of the film is untouched


def test_shift_names_resolve_in_catalogue_order_and_unknown_ones_name_the_fix():
    assert resolve_shifts(None) == resolve_shifts("all") == tuple(SHIFTS.values())
    assert [s.name for s in resolve_shifts("zoom_in, jpeg")] == ["jpeg", "zoom_in"]
    with pytest.raises(ConfigError, match=r"unknown stress shift\(s\) 'zoom'.*zoom_in.*'all'"):
        resolve_shifts(["zoom", "jpeg"])
    with pytest.raises(ConfigError, match="unknown stress shift"):
        apply_shift(np.zeros((4, 4), np.float32), "nope", 1, seed=0)
    with pytest.raises(ConfigError, match=r"severities 0\.\.1"):
        apply_shift(np.zeros((4, 4), np.float32), "invert", 2, seed=0)


def test_training_coverage_follows_the_augmentation_ranges():
    anatomy = {"rotation_deg": 7.0, "shift": 0.05, "zoom": 0.1, "brightness": 0.1, "contrast": 0.15}
    assert in_training_augmentation(SHIFTS["zoom_in"], anatomy) is True
    assert in_training_augmentation(SHIFTS["rotation"], anatomy) is True
    assert in_training_augmentation(SHIFTS["jpeg"], anatomy) is False
    assert in_training_augmentation(SHIFTS["zoom_in"], {**anatomy, "zoom": 0.0}) is False
    assert in_training_augmentation(SHIFTS["zoom_in"], None) is None
    # cpu_accurate's noise/blur ranges (train.augment_overrides) cover those shifts; anatomy's do not
    assert in_training_augmentation(SHIFTS["noise"], anatomy) is False
    assert in_training_augmentation(SHIFTS["noise"], {**anatomy, "noise": 0.03}) is True
    assert in_training_augmentation(SHIFTS["blur"], {**anatomy, "blur": 1.0}) is True


def test_every_shift_documents_itself():
    for shift in SHIFTS.values():
        described = shift.to_dict()
        assert described["simulates"] and described["parameter"] and described["implementation"]
        assert len(described["levels"]) == len(shift.levels) >= 1
