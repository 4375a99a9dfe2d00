"""Real Kermany files: an original-aspect JPEG is explained in its own geometry; the grid draws."""

from __future__ import annotations

import json

import pytest

from pneumocxr.cli.main import main
from pneumocxr.data.discovery import discover
from pneumocxr.explain import gradcam_grid
from pneumocxr.imaging import image_info
from pneumocxr.models import load_checkpoint


@pytest.mark.realdata
def test_real_wide_film_and_val_grid(shared_data, make_checkpoint, tmp_path):
    checkpoint = make_checkpoint(tmp_path / "c.pt", image_size=64)
    train_normal = sorted((shared_data / "chest_xray" / "train" / "NORMAL").iterdir())
    wide = next(p for p in train_normal if image_info(p).width > 1.5 * image_info(p).height)
    info = image_info(wide)
    out = tmp_path / "out"
    assert main(["explain", "--checkpoint", str(checkpoint), str(wide), "--out", str(out)]) == 0
    report = json.loads((out / f"{wide.stem}.json").read_text())
    assert report["image_size"] == {"height": info.height, "width": info.width}

    model, meta = load_checkpoint(checkpoint)
    val = discover(shared_data / "chest_xray").in_split("val")[::2]  # 8 of the 16 official val images
    probs = [0.9 if i % 3 else 0.2 for i in range(len(val))]
    grid = gradcam_grid(model, val, probs, tmp_path / "grid.png", preprocess=meta.preprocess, per_category=2)
    assert grid.is_file()
