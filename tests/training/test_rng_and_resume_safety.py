"""``train`` leaves the caller's random state alone yet reproduces its run from the seed, and a resume
point is read as data only (``weights_only=True``), whatever torch's default says."""

from __future__ import annotations

import os
import random

import numpy as np
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


def _global_state() -> tuple:
    python, legacy_numpy = random.getstate(), np.random.get_state()
    env = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    return python, (legacy_numpy[0], legacy_numpy[1].tolist(), *legacy_numpy[2:]), torch.get_rng_state(), env


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_train_restores_the_callers_random_state_and_reproduces_from_its_seed(tree, tmp_path):
    config = _config(tree, tmp_path / "cache")
    random.seed(11), np.random.seed(12), torch.manual_seed(13)
    before = _global_state()
    first = train(config, tmp_path / "a", progress=False)
    after = _global_state()
    assert after[0] == before[0] and after[1] == before[1] and after[3] == before[3]
    assert torch.equal(after[2], before[2])
    assert torch.initial_seed() == 13
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(11), np.random.seed(12), torch.manual_seed(13)
    assert draws == (random.random(), float(np.random.rand()), float(torch.rand(1)))  # as if never called

    torch.manual_seed(999), np.random.seed(998), random.seed(997)  # another caller state: same run
    second = train(config, tmp_path / "b", progress=False)
    a, b = _weights(first.best_checkpoint), _weights(second.best_checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert first.metrics == second.metrics


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
