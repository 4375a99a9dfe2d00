"""The stress suite end to end on real Kermany films: the recorded validation split, every shift."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.inference.test_stress import stress_checkpoint

from pneumocxr.data.stress_shifts import SHIFTS
from pneumocxr.training.stress_augmentation import recorded_augmentation
from pneumocxr.workflows.stress import run_stress


@pytest.mark.realdata
@pytest.mark.slow
def test_every_shift_runs_on_a_few_real_validation_films(shared_data, tmp_path):
    root = shared_data / "chest_xray"
    ckpt = stress_checkpoint(tmp_path / "run" / "best.pt", root, val_fraction=0.15)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        augmentation = recorded_augmentation({"train": {"augment": "anatomy"}})
        result = run_stress(
            ckpt,
            root,
            n_images=16,
            out_dir=tmp_path / "o",
            augmentation=augmentation,
            n_boot=50,
            device="cpu",
        )
    finally:
        torch.set_num_threads(before)
    assert 10 <= result.n_images <= 24 and min(result.class_counts.values()) >= 2
    expected = 1 + sum(len(s.levels) for s in SHIFTS.values())
    assert len(result.rows) == expected
    assert all(math.isfinite(r["auc"]) for r in result.rows)  # both classes in every condition
    summary = json.loads((tmp_path / "o" / "stress.json").read_text())
    assert summary["split"].startswith("validation") and len(summary["rows"]) == expected
    assert all(r["in_training_augmentation"] is not None for r in summary["rows"][1:])
