"""``gradcam_visualizations.png``: most confident true/false positives/negatives, with data beside it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pneumocxr.data.records import ImageRecord
from pneumocxr.explain import gradcam_grid, select_cases
from pneumocxr.models import load_checkpoint


def test_cases_are_the_most_confident_of_each_outcome():
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    probs = [0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.95, 0.5]
    cases = select_cases(labels, probs, threshold=0.5, per_category=2)
    assert cases == {"TP": [6, 0], "FP": [3, 7], "FN": [2], "TN": [4, 5]}
    with pytest.raises(ValueError, match="labels"):
        select_cases([1, 0], [0.5], 0.5, 1)


def test_grid_draws_every_outcome_and_writes_its_data(tmp_path, checkpoint, make_png):
    model, meta = load_checkpoint(checkpoint)
    records, probs = [], []
    for i, (label, p) in enumerate([(1, 0.9), (1, 0.2), (0, 0.8), (0, 0.1), (0, 0.05)]):
        path = make_png(tmp_path / "img" / f"x{i}.png", 40 + 10 * i, 60, seed=i)
        records.append(ImageRecord(path, label, "val", f"p{i}", "unknown"))
        probs.append(p)
    out = gradcam_grid(
        model, records, probs, tmp_path / "plots" / "gradcam_visualizations.png",
        threshold=0.5, preprocess=meta.preprocess, per_category=2,
    )  # fmt: skip
    assert out.name == "gradcam_visualizations.png"
    width, height = Image.open(out).size
    assert width > 300 and height > 600  # 4 rows × 2 columns
    data = json.loads(out.with_suffix(".json").read_text())
    by_category = {}
    for case in data["cases"]:
        by_category.setdefault(case["category"], []).append(case)
    assert [c["probability"] for c in by_category["TN"]] == [0.05, 0.1]
    assert by_category["TP"][0]["explained_class"] == "PNEUMONIA"
    assert by_category["FN"][0]["explained_class"] == "NORMAL"  # the predicted class is explained
    assert by_category["FP"][0]["label"] == "NORMAL"
    assert sum(len(v) for v in by_category.values()) == 5


def test_grid_with_no_cases_still_draws(tmp_path, checkpoint):
    model, _ = load_checkpoint(checkpoint)
    out = gradcam_grid(model, [], np.array([]), tmp_path / "g.png")
    assert out.is_file()
    assert json.loads(out.with_suffix(".json").read_text())["cases"] == []


def test_grid_for_an_ensemble_file_averages_the_members_maps(tmp_path, make_checkpoint, make_png):
    from pneumocxr.explain.grid import _panels, gradcam_grid_for
    from pneumocxr.models.ensemble_file import checkpoint_payload, save_ensemble

    small = make_checkpoint(tmp_path / "small.pt", image_size=32, seed=1)
    big = make_checkpoint(tmp_path / "big.pt", image_size=48, resize_mode="letterbox", seed=2)
    ensemble = save_ensemble(
        tmp_path / "ens.pt",
        [checkpoint_payload(small), checkpoint_payload(big)],
        ["small", "big"],
        threshold=0.5,
    )
    records, probs = [], [0.9, 0.2, 0.7, 0.1]
    for i, label in enumerate([1, 1, 0, 0]):
        path = make_png(tmp_path / "img" / f"x{i}.png", 50 + 8 * i, 70, seed=i)
        records.append(ImageRecord(path, label, "val", f"p{i}", "unknown"))
    out = gradcam_grid_for(ensemble, records, probs, tmp_path / "plots" / "grid.png", per_category=1)
    data = json.loads(out.with_suffix(".json").read_text())
    assert out.is_file() and data["members"] == 2 and data["model"].startswith("ensemble of 2")
    assert data["threshold"] == 0.5 and len(data["cases"]) == 4
    # each cell's map is the mean of the members' maps, each taken in the original image geometry
    members = [load_checkpoint(small), load_checkpoint(big)]
    order, names = [0, 1, 2, 3], ("NORMAL", "PNEUMONIA")
    pairs = [(model, meta.preprocess) for model, meta in members]
    both = _panels(pairs, records, probs, order, names, 0.5, "gradcam")
    alone = [_panels([pair], records, probs, order, names, 0.5, "gradcam") for pair in pairs]
    assert any(not np.allclose(alone[0][i].cam, alone[1][i].cam) for i in order)  # members disagree
    for i in order:
        assert both[i].cam.shape == both[i].image.shape
        np.testing.assert_allclose(both[i].cam, (alone[0][i].cam + alone[1][i].cam) / 2, atol=1e-6)
    plain = gradcam_grid_for(small, records, probs, tmp_path / "plain.png", per_category=1)
    assert json.loads(plain.with_suffix(".json").read_text())["threshold"] == 0.4  # the file's own
