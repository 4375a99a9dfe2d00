"""``recorded_augmentation``: a checkpoint's recipe as the AugmentParams the stress flags come from."""

from __future__ import annotations

from dataclasses import asdict

from pneumocxr.training.augment import PRESETS
from pneumocxr.training.stress_augmentation import recorded_augmentation


def test_the_preset_is_resolved_with_its_overrides():
    assert recorded_augmentation({"train": {"augment": "anatomy"}}) == asdict(PRESETS["anatomy"])
    resolved = recorded_augmentation({"train": {"augment": "none", "augment_overrides": {"zoom": 0.3}}})
    assert resolved == {**asdict(PRESETS["none"]), "zoom": 0.3}


def test_unknown_when_no_preset_is_recorded_or_it_is_not_known():
    assert recorded_augmentation({}) is None
    assert recorded_augmentation(None) is None
    assert recorded_augmentation({"train": {"augment": "no-such-preset"}}) is None
