"""Slow end-to-end runs: kill-and-resume mid-epoch, the fine-tuning phase, and real chest X-rays."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tests.conftest import make_kermany_tree

from pneumocxr.cli.main import main
from pneumocxr.config import RunConfig, from_dict
from pneumocxr.data.splits import assert_no_patient_leak
from pneumocxr.models import load_checkpoint
from pneumocxr.training import split_records, train
from pneumocxr.training.callbacks import read_history

pytestmark = pytest.mark.slow


def _kill_mid_epoch(command: list[str], last: Path, steps_per_epoch: int, timeout: float = 300) -> dict:
    """Run ``command`` until last.ckpt holds a step inside epoch 2, then SIGKILL it."""
    log = last.parents[2] / "first-attempt.log"  # a file, not a pipe: a full pipe would block the child
    handle = log.open("w")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                rc, output = process.returncode, log.read_text()[-3000:]
                pytest.fail(f"the run ended (rc {rc}) before it could be killed: {output}")
            if last.is_file():
                try:
                    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
                except Exception:  # replaced while reading: look again
                    step = 0
                if step > steps_per_epoch and step % steps_per_epoch:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("no mid-epoch checkpoint appeared in time")
    finally:
        process.kill()
        process.wait()
        handle.close()
    return torch.load(last, map_location="cpu", weights_only=True)


def test_killed_run_resumes_from_its_last_checkpoint_and_completes(tmp_path):
    root = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=40, images_per_patient=4)
    config = tmp_path / "run.yaml"
    epochs, batch = 4, 8
    settings = {
        "data": {"root": str(root), "val_fraction": 0.25, "cache_dir": str(tmp_path / "cache")},
        "model": {"name": "custom_cnn", "image_size": 32},
        "train": {
            "max_epochs": epochs,
            "batch_size": batch,
            "precision": "32",
            "checkpoint_every_n_steps": 3,
        },
    }
    config.write_text(yaml.safe_dump(settings))
    n_train = len(split_records(from_dict(RunConfig, settings).data)[0])
    steps_per_epoch = math.ceil(n_train / batch)
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    command = [
        sys.executable,
        "-m",
        "pneumocxr",
        "train",
        "--config",
        str(config),
        "--out",
        str(out),
        "--no-progress",
    ]
    saved = _kill_mid_epoch(command, last, steps_per_epoch)
    assert not (out / "best.pt").exists()  # it really was interrupted
    saved_epoch, saved_step = saved["epoch"], saved["global_step"]
    assert saved_step % steps_per_epoch  # mid-epoch

    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0  # config from the run folder

    final = torch.load(last, map_location="cpu", weights_only=True)
    # Exactly the planned number of steps: the interrupted epoch was finished, not repeated or restarted.
    assert final["global_step"] == epochs * steps_per_epoch
    with open(out / "logs" / "phase1" / "version_1" / "metrics.csv") as handle:
        resumed_epochs = {int(row["epoch"]) for row in csv.DictReader(handle) if row["epoch"]}
    assert min(resumed_epochs) == saved_epoch  # the resumed process started at the saved epoch
    assert [r["epoch"] for r in read_history(out / "history.csv")] == list(range(1, epochs + 1))
    assert load_checkpoint(out / "best.pt")[1].extra["epochs_run"] == epochs


def test_finetune_phase_unfreezes_the_last_block_and_continues(tmp_path):
    root = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=12, images_per_patient=2)
    config = from_dict(
        RunConfig,
        {
            "data": {"root": str(root), "val_fraction": 0.3},
            "model": {"name": "vgg16_transfer", "image_size": 32, "pretrained": False},
            "train": {
                "max_epochs": 2,
                "finetune_epochs": 2,
                "finetune_lr": 1e-5,
                "batch_size": 8,
                "precision": "32",
            },
        },
    )
    out = tmp_path / "run"
    result = train(config, out, progress=False)
    history = read_history(out / "history.csv")
    assert [(r["phase"], r["epoch"]) for r in history] == [(1, 1), (1, 2), (2, 3), (2, 4)]
    assert result.epochs_run == 4 and result.best_phase in (1, 2)
    phase1 = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    phase2 = torch.load(out / "checkpoints" / "finetune" / "last.ckpt", weights_only=True)["state_dict"]
    last_conv = "model.net.features.28.weight"  # conv5_3: unfrozen in phase 2
    first_conv = "model.net.features.0.weight"  # conv1_1: frozen throughout
    assert not torch.equal(phase1[last_conv], phase2[last_conv])
    assert torch.equal(phase1[first_conv], phase2[first_conv])
    optimizer = torch.load(out / "checkpoints" / "finetune" / "last.ckpt", weights_only=True)[
        "optimizer_states"
    ][0]
    assert sorted(g["lr"] for g in optimizer["param_groups"]) == pytest.approx([1e-5, 1e-4])


@pytest.mark.realdata
def test_smoke_fit_on_a_patient_level_subset_of_real_chest_xrays(shared_data, tmp_path):
    config = from_dict(
        RunConfig,
        {
            "data": {"root": str(shared_data / "chest_xray"), "val_fraction": 0.25},
            "model": {"name": "custom_cnn", "image_size": 64},
            "train": {"max_epochs": 1, "batch_size": 16, "limit_train_images": 200, "lr": 3e-4},
        },
    )
    result = train(config, tmp_path / "run", progress=False)
    split = result.split
    n_images = sum(split["train_counts"]) + sum(split["val_counts"])
    assert 150 <= n_images <= 250
    assert min(split["train_counts"] + split["val_counts"]) > 0  # both classes on both sides
    train_records, val_records = split_records(config.data, 200)
    assert_no_patient_leak(train_records, val_records)
    assert all(r.split == "train" for r in train_records + val_records)
    _, meta = load_checkpoint(result.best_checkpoint)
    assert all(math.isfinite(v) for v in meta.metrics.values())
    assert meta.extra["split"]["val_patients_sha256"] == split["val_patients_sha256"]
    assert meta.preprocess.image_size == 64
