"""DDP: ``torchrun`` with two CPU processes (gloo) trains, and scores every validation image exactly once.

Two real launches in subprocesses on a tiny synthetic set: ``torchrun --standalone --nproc_per_node 2
-m pneumocxr train`` and the same config in one process. The two runs' weights may differ (each
DDP rank sees half the batches), so the invariant checked is that the DDP run's logged validation
metrics are exactly what one process computes from its best.pt on the whole validation split: a
padding sampler would have scored one image twice (the split has an odd number of images).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score
from tests.conftest import make_kermany_tree

from pneumocxr.config import RunConfig, from_dict
from pneumocxr.data.cache import PreprocessedCache
from pneumocxr.errors import ConfigError
from pneumocxr.models import load_checkpoint, to_model_input
from pneumocxr.training import hardware
from pneumocxr.training.callbacks import read_history
from pneumocxr.training.datamodule import split_records
from pneumocxr.training.train import operating_point

BATCH = 4
SETTINGS = {
    "model": {"name": "custom_cnn", "image_size": 32},
    "train": {"max_epochs": 1, "batch_size": BATCH, "lr": 1e-3, "precision": "32", "augment": "none"},
}
# Launcher variables of an enclosing torchrun/SLURM job would make the child processes join it.
_LAUNCHER_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
)


def _launch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _LAUNCHER_ENV and not k.startswith(("SLURM_", "TORCHELASTIC_"))
    }
    env["OMP_NUM_THREADS"] = "1"  # two processes on a small machine: one thread each
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(DDP run folder, single-process run folder, DDP stdout) for one config on one dataset."""
    base = tmp_path_factory.mktemp("ddp")
    root = make_kermany_tree(
        base / "cx", splits=("train",), patients_per_class=10, images_per_patient=3, size=(36, 36)
    )
    # Two fewer NORMAL patients give an odd validation split (15 images): two ranks can only get
    # equal shares of it by repeating an image, which is what the unpadded sampler must not do.
    for pid in ("IM-0100", "IM-0101"):
        for path in (root / "train" / "NORMAL").glob(f"{pid}-*"):
            path.unlink()
    config = base / "run.yaml"
    config.write_text(yaml.safe_dump({**SETTINGS, "data": {"root": str(root), "val_fraction": 0.3}}))
    # train.devices stays "auto": under torchrun it becomes the launcher's processes per node.
    common = ["train", "--config", str(config), "--no-progress", "--set", "train.accelerator=cpu"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ddp = _launch([*torchrun, "-m", "pneumocxr", *common, "--out", "ddp"], base)
    _launch([sys.executable, "-m", "pneumocxr", *common, "--out", "single"], base)
    return base / "ddp", base / "single", ddp.stdout


def _val_records(run: Path):
    meta = load_checkpoint(run / "best.pt")[1]
    config = from_dict(RunConfig, meta.config)
    return split_records(config.data, config.train.limit_train_images)


def _steps(run: Path) -> int:
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return int(state["global_step"])


@pytest.mark.slow
def test_two_gloo_processes_share_the_training_batches_and_only_rank_zero_writes(runs):
    ddp, single, stdout = runs
    raw = torch.load(ddp / "best.pt", map_location="cpu", weights_only=True)  # plain data
    assert (raw["extra"]["world_size"], raw["extra"]["distributed_backend"]) == (2, "gloo")
    single_meta = load_checkpoint(single / "best.pt")[1]
    assert (single_meta.extra["world_size"], single_meta.extra["distributed_backend"]) == (1, "none")
    n_train = len(_val_records(ddp)[0])
    # each rank trains on its half of the (padded) training set: half the optimiser steps
    assert _steps(ddp) == math.ceil(math.ceil(n_train / 2) / BATCH)
    assert _steps(single) == math.ceil(n_train / BATCH)
    assert stdout.count("best epoch") == 1  # rank 1 prints nothing
    assert [r["epoch"] for r in read_history(ddp / "history.csv")] == [1]
    assert sorted(p.name for p in (ddp / "logs" / "phase1").iterdir()) == ["version_0"]
    assert (ddp / "training_curves.png").is_file()


@pytest.mark.slow
def test_every_validation_image_is_scored_exactly_once(runs):
    ddp, single, _ = runs
    val = _val_records(ddp)[1]
    assert len(val) % 2 == 1  # else this test could not tell padding from no padding
    meta, single_meta = (load_checkpoint(run / "best.pt")[1] for run in (ddp, single))
    assert meta.extra["val_images_scored"] == len(val) == single_meta.extra["val_images_scored"]
    assert meta.extra["split"]["val_patients_sha256"] == single_meta.extra["split"]["val_patients_sha256"]


@pytest.mark.slow
def test_ddp_metrics_equal_one_process_scoring_its_best_checkpoint(runs):
    ddp, _, _ = runs
    model, meta = load_checkpoint(ddp / "best.pt")
    val = _val_records(ddp)[1]
    pre = meta.preprocess
    pixels = PreprocessedCache(ddp / "cache", pre.image_size, pre.resize_mode).load(val)  # (N, S, S)
    with torch.no_grad():
        logits = model.eval()(to_model_input(pixels, pre))[:, 0].double()  # (N,)
    labels = torch.tensor([float(r.label) for r in val], dtype=torch.float64)
    y = labels.numpy().astype(bool)
    probs = torch.sigmoid(logits).numpy()
    predicted = probs >= 0.5  # the logged metrics are raw sigmoid cut at 0.5
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    expected = {
        "val_loss": float(loss),
        "val_auc": roc_auc_score(y, probs),
        "val_acc": float(np.mean(predicted == y)),
        "val_sensitivity": float(predicted[y].mean()),
        "val_specificity": float((~predicted[~y]).mean()),
    }
    assert meta.metrics == pytest.approx(expected, abs=1e-5)
    # the temperature and threshold were fitted on the gathered predictions: the same N logits
    op = operating_point(logits.numpy(), labels.numpy().astype(np.int64))
    stored = meta.extra["operating_point"]
    assert stored["temperature"] == pytest.approx(op["temperature"], rel=1e-3)
    assert (stored["sensitivity"], stored["specificity"]) == pytest.approx(
        (op["sensitivity"], op["specificity"]), abs=1e-9
    )


# ---- the launcher decides devices and num_nodes (fast, no processes started) ----------------

_TORCHRUN = {"TORCHELASTIC_RUN_ID": "x", "RANK": "5", "GROUP_RANK": "1", "LOCAL_RANK": "1"}


@pytest.fixture
def plain_env(monkeypatch):
    """No launcher variables, whatever job runs the tests."""
    for key in list(os.environ):
        if key in _LAUNCHER_ENV or key.startswith(("SLURM_", "TORCHELASTIC_")):
            monkeypatch.delenv(key)
    return monkeypatch


def test_a_plain_process_leaves_devices_to_lightning_on_one_node(plain_env):
    assert hardware.launcher_layout() is None
    assert (hardware.resolve_devices("auto"), hardware.resolve_num_nodes()) == ("auto", 1)
    assert hardware.resolve_devices("3") == 3


def test_torchrun_sets_processes_per_node_and_node_count(plain_env):
    for key, value in {**_TORCHRUN, "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8"}.items():
        plain_env.setenv(key, value)  # torchrun --nnodes 2 --nproc_per_node 4
    assert (hardware.resolve_devices("auto"), hardware.resolve_num_nodes()) == (4, 2)
    assert hardware.resolve_devices("4") == 4
    with pytest.raises(ConfigError, match="--nproc_per_node 2"):
        hardware.resolve_devices("2")


def test_srun_sets_processes_per_node_and_node_count(plain_env):
    env = {"SLURM_NTASKS": "6", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "3", "SLURM_JOB_NAME": "train"}
    for key, value in env.items():
        plain_env.setenv(key, value)
    assert (hardware.resolve_devices("auto"), hardware.resolve_num_nodes()) == (2, 3)
    plain_env.setenv("SLURM_JOB_NAME", "interactive")  # Lightning's opt-out: not a SLURM launch
    assert hardware.launcher_layout() is None
