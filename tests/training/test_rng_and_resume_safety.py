"""``train`` leaves the caller's random state alone yet reproduces its run from the seed, and a resume
point is read as data only (``weights_only=True``), whatever torch's default says."""

from __future__ import annotations

import os

import pytest
import torch
from tests.conftest import make_kermany_tree

from pneumocxr.config import RunConfig, from_dict
from pneumocxr.errors import CheckpointError
from pneumocxr.training import train


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_kermany_tree(tmp_path_factory.mktemp("rng") / "cx", splits=("train",), size=(32, 32))


def _config(tree, cache) -> RunConfig:
    return from_dict(
        RunConfig,
        {
            "data": {"root": str(tree), "val_fraction": 0.3, "cache_dir": str(cache)},
            "model": {"name": "custom_cnn", "image_size": 32},
            "train": {"max_epochs": 1, "batch_size": 8, "precision": "32", "accelerator": "cpu", "seed": 7},
        },
    )


class Planted:
    """A pickled object that runs code when unpickled (here: makes a directory)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_resume_reads_last_ckpt_as_data_never_as_code(tree, tmp_path, monkeypatch):
    config = _config(tree, tmp_path / "cache")
    out = tmp_path / "run"
    train(config, out, progress=False)
    last = out / "checkpoints" / "last.ckpt"
    clean = torch.load(last, map_location="cpu", weights_only=True)
    (out / "checkpoints" / "phase1.json").unlink()  # as if killed before the phase finished
    (out / "best.pt").unlink()
    torch.save({**clean, "planted": Planted(tmp_path / "code-ran")}, last)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's default would now unpickle it
    with pytest.raises(CheckpointError, match=r"last\.ckpt: not a plain-data resume point"):
        train(config, out, resume=True, progress=False)
    assert not (tmp_path / "code-ran").exists()

    torch.save(clean, last)  # what training writes loads as data: the resume completes
    result = train(config, out, resume=True, progress=False)
    assert result.best_checkpoint.is_file() and result.epochs_run == 1
