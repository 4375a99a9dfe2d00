"""How each model of ``pneumocxr run`` gets its recipe: presets, extra models, ``--set`` for all or one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pneumocxr.errors import ConfigError
from pneumocxr.workflows.run.recipes import model_names, plan_models, resolve_preset, split_overrides

MODELS = ("custom_cnn", "vgg16_transfer")
CPU_MODELS = ("efficientnet_lite0", "custom_cnn", "vgg16_transfer")


def test_presets_pick_the_reference_or_cpu_recipes(tmp_path):
    names = model_names([], "reference")
    assert names == list(MODELS)
    reference = plan_models(names, "reference", tmp_path, tmp_path / "cache", [])
    assert [Path(p.recipe).name for p in reference] == ["seed_custom_cnn.yaml", "seed_vgg16.yaml"]
    assert reference[1].config.model.pretrained is True
    assert all(p.config.data.root == str(tmp_path.resolve()) for p in reference)
    assert all(p.config.data.cache_dir == str((tmp_path / "cache").resolve()) for p in reference)
    assert resolve_preset("reference") == ("reference", "asked for")
    with pytest.raises(ConfigError, match="--preset"):
        resolve_preset("gpu")


@pytest.mark.parametrize("cuda", [True, False])
def test_auto_preset_follows_whether_a_cuda_gpu_is_present(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU 80GB")
    preset, why = resolve_preset("auto")
    if cuda:
        assert (preset, why) == ("reference", "auto: CUDA GPU found (Fake GPU 80GB)")
    else:
        assert (preset, why) == ("cpu", "auto: no CUDA GPU, CPU-sized recipes")
    assert resolve_preset("cpu") == ("cpu", "asked for")  # an explicit preset ignores the hardware


def test_the_cpu_preset_trains_cpu_accurate_and_the_two_seed_models(tmp_path):
    names = model_names([], "cpu")
    assert names == list(CPU_MODELS)
    cpu = plan_models(names, "cpu", tmp_path, tmp_path / "cache", [])
    assert [Path(p.recipe).name for p in cpu] == [
        "cpu_accurate.yaml",
        "cpu_custom_cnn.yaml",
        "cpu_vgg16.yaml",
    ]
    assert [p.label for p in cpu] == [
        "efficientnet_lite0 (cpu_accurate)",
        "custom_cnn (cpu_custom_cnn)",
        "vgg16_transfer (cpu_vgg16)",
    ]
    assert [p.config.model.name for p in cpu] == list(CPU_MODELS)  # the model key every table shows
    assert [p.config.model.pretrained for p in cpu] == [True, False, True]
    assert model_names(["efficientnet_lite0", "resnet18"], "cpu") == [*CPU_MODELS, "resnet18"]


def test_extra_models_get_a_borrowed_recipe_and_one_shared_split(tmp_path):
    names = model_names(["efficientnet_lite0", "custom_cnn"], "reference")
    assert names == [*MODELS, "efficientnet_lite0"]
    plans = plan_models(names, "reference", tmp_path, tmp_path / "c", ["data.val_fraction=0.3"])
    extra = plans[2]
    assert extra.config.model.name == "efficientnet_lite0" and extra.config.model.pretrained is True
    assert "defaults" in extra.recipe
    assert {p.config.data.val_fraction for p in plans} == {0.3}
    with pytest.raises(ConfigError, match="did you mean 'custom_cnn'"):
        model_names(["custom_cn"], "reference")


def test_set_applies_to_all_models_or_to_one(tmp_path):
    overrides = ["train.lr=0.01", "vgg16_transfer:model.weights=/w/vgg16.pth"]
    plans = plan_models(list(MODELS), "reference", tmp_path, tmp_path / "c", overrides)
    assert [p.config.train.lr for p in plans] == [0.01, 0.01]
    assert [p.config.model.weights for p in plans] == ["", "/w/vgg16.pth"]
    with pytest.raises(ConfigError, match="not one of this run's models"):
        split_overrides(["resnet:train.lr=1"], list(MODELS))
    with pytest.raises(ConfigError, match="comes from --data"):
        split_overrides(["data.root=/elsewhere"], list(MODELS))
