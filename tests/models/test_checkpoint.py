"""Self-describing checkpoints: round trip, data-only loading, atomic writes, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pneumocxr.config import Preprocess
from pneumocxr.errors import CheckpointError
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import create_model, list_models, load_checkpoint, save_checkpoint
from pneumocxr.models.checkpoint import FORMAT

TINY = 64


def _save(path: Path, model, **overrides) -> Path:
    args = {
        "model_name": model.spec.name,
        "model_kwargs": {"image_size": TINY, "in_channels": model.spec.preprocess.channels},
        "preprocess": model.spec.preprocess,
        "class_names": CLASS_NAMES,
    }
    return save_checkpoint(path, model, **{**args, **overrides})


@pytest.mark.parametrize("name", list_models())
def test_round_trip_gives_identical_outputs_and_loads_as_data(tmp_path, name):
    model = create_model(name, image_size=TINY, in_channels=1).eval()
    path = _save(
        tmp_path / "runs" / "best.pt",
        model,
        threshold=0.37,
        temperature=1.5,
        metrics={"val_auc": np.float64(0.91), "history": [np.float32(0.5), 0.6]},
        config={"train": {"lr": 1e-4, "betas": (0.9, 0.999)}, "out": Path("runs/x")},
    )
    raw = torch.load(path, weights_only=True)  # data only: nothing but tensors and plain containers
    assert raw["format"] == FORMAT and raw["model_name"] == name
    assert set(raw["versions"]) >= {"torch", "torchvision", "timm", "pneumocxr"}

    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    x = torch.randn(2, 1, TINY, TINY, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert meta.preprocess == model.spec.preprocess and isinstance(meta.preprocess, Preprocess)
    assert meta.class_names == CLASS_NAMES
    assert (meta.threshold, meta.temperature) == (0.37, 1.5)
    assert meta.metrics == {"val_auc": pytest.approx(0.91), "history": [0.5, pytest.approx(0.6)]}
    assert meta.config == {"train": {"lr": 1e-4, "betas": [0.9, 0.999]}, "out": "runs/x"}
    assert loaded.spec.kwargs == model.spec.kwargs


def test_write_is_atomic_and_a_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    model = create_model("custom_cnn", image_size=32)
    args = {
        "model_kwargs": {"image_size": 32},
        "preprocess": model.spec.preprocess,
        "class_names": CLASS_NAMES,
    }
    path = save_checkpoint(tmp_path / "last.pt", model, model_name="custom_cnn", **args)
    good = path.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full (test)")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, model_name="custom_cnn", **args)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind


def test_unstorable_values_and_inconsistent_descriptions_are_refused(tmp_path):
    model = create_model("custom_cnn", image_size=32)
    base = {"model_name": "custom_cnn", "preprocess": model.spec.preprocess, "class_names": CLASS_NAMES}
    with pytest.raises(CheckpointError, match=r"metrics\.fn of type builtin_function"):
        save_checkpoint(
            tmp_path / "a.pt", model, model_kwargs={"image_size": 32}, metrics={"fn": len}, **base
        )
    with pytest.raises(CheckpointError, match="do not describe the model"):
        save_checkpoint(tmp_path / "b.pt", model, model_kwargs={"image_size": 64}, **base)
    with pytest.raises(CheckpointError, match="class_names"):
        save_checkpoint(
            tmp_path / "c.pt",
            model,
            model_kwargs={"image_size": 32},
            **{**base, "class_names": ("normal", "bacterial", "viral")},
        )
    assert not any(tmp_path.iterdir())


def test_missing_corrupt_foreign_and_unknown_model_checkpoints_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"absent\.pt not found"):
        load_checkpoint(tmp_path / "absent.pt")

    model = create_model("custom_cnn", image_size=32)
    path = _save(tmp_path / "good.pt", model, model_kwargs={"image_size": 32})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt: not a readable checkpoint"):
        load_checkpoint(truncated)

    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match=r"plain\.pt: not a pneumocxr checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")

    data = torch.load(path, weights_only=True)
    torch.save({**data, "model_name": "vgg19_transfer"}, tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match=r"unknown\.pt: unknown model 'vgg19_transfer'"):
        load_checkpoint(tmp_path / "unknown.pt")

    torch.save({**data, "model_kwargs": {"image_size": 64}}, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match=r"mismatch\.pt: weights do not fit model custom_cnn"):
        load_checkpoint(tmp_path / "mismatch.pt")
