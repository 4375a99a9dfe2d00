"""``scripts/attention_maps.py``: one overlay per attention block and the raw maps, per image."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumocxr.models import create_model, save_checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "attention_maps.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("attention_maps_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_writes_an_overlay_per_block_and_the_raw_maps(script, kermany_tree, tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("custom_cnn_attention", image_size=32, in_channels=1)
    checkpoint = save_checkpoint(
        tmp_path / "run" / "best.pt",
        model,
        model_name="custom_cnn_attention",
        model_kwargs={"image_size": 32, "in_channels": 1},
        preprocess=model.spec.preprocess,
        class_names=["NORMAL", "PNEUMONIA"],
    )
    out = tmp_path / "maps"
    assert (
        script.main(
            [
                "--checkpoint",
                str(checkpoint.parent),
                str(kermany_tree / "val"),
                "--out",
                str(out),
                "--limit",
                "2",
            ]
        )
        == 0
    )
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 2 * 4 and all(".block" in name for name in pngs)
    raw = np.load(next(out.glob("*.attention.npz")))
    assert [raw[f"block{i}"].shape for i in range(1, 5)] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert all(raw[k].min() >= 0.0 and raw[k].max() <= 1.0 for k in raw.files)
    assert "8 overlays" in capsys.readouterr().out


def test_stretched_maps_fill_the_unit_range_and_flat_maps_stay_zero(script):
    ramp = np.linspace(0.4, 0.6, 16, dtype=np.float32).reshape(4, 4)
    out = script.stretched(ramp, 8)
    assert (
        out.shape == (8, 8)
        and out.min() == pytest.approx(0.0, abs=0.05)
        and out.max() == pytest.approx(1.0, abs=0.05)
    )
    assert not script.stretched(np.full((4, 4), 0.5, np.float32), 8).any()
