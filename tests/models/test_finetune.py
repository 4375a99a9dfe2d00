"""Frozen bases, the fine-tuning phase and its parameter groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pneumocxr.errors import ConfigError
from pneumocxr.models import create_model, param_groups, set_finetune

TINY = 64


def _backward(model: nn.Module, channels: int = 3) -> None:
    model.train()
    x = torch.randn(2, channels, TINY, TINY, generator=torch.Generator().manual_seed(0))
    model(x).sum().backward()


def _trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_vgg16_base_is_frozen_and_only_the_head_learns():
    model = create_model("vgg16_transfer", image_size=TINY)
    assert all(n.startswith("net.classifier.") for n in _trainable(model))
    _backward(model)
    for name, param in model.named_parameters():
        assert (param.grad is not None) == name.startswith("net.classifier."), name


def test_finetune_unfreezes_exactly_the_last_conv_block():
    model = create_model("vgg16_transfer", image_size=TINY)
    layers = set_finetune(model, True)
    assert layers == ["net.features.24", "net.features.26", "net.features.28"]
    features = {n for n in _trainable(model) if n.startswith("net.features.")}
    assert features == {f"net.features.{i}.{w}" for i in (24, 26, 28) for w in ("weight", "bias")}
    _backward(model)
    for name, param in model.named_parameters():
        if name.startswith("net.features."):
            assert (param.grad is not None) == (name in features), name

    set_finetune(model, False)
    assert all(n.startswith("net.classifier.") for n in _trainable(model))


def test_param_groups_put_the_unfrozen_block_at_the_lower_rate():
    model = create_model("vgg16_transfer", image_size=TINY)
    set_finetune(model, True)
    groups = param_groups(model, lr=1e-4, finetune_lr=1e-5)
    assert [(g["name"], g["lr"]) for g in groups] == [("head", 1e-4), ("finetune", 1e-5)]
    head_ids = {id(p) for p in model.get_submodule("net.classifier").parameters()}
    assert {id(p) for p in groups[0]["params"]} == head_ids
    assert len(groups[1]["params"]) == 6  # three convs × (weight, bias)
    optimizer = torch.optim.Adam(groups)  # the groups are what an optimizer takes
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-5]


def test_param_groups_without_finetune_rate_is_one_group_of_trainable_params():
    model = create_model("custom_cnn", image_size=TINY)
    (group,) = param_groups(model, lr=1e-3)
    assert len(group["params"]) == sum(1 for _ in model.parameters())


def test_models_without_a_frozen_base_refuse_finetune():
    with pytest.raises(ConfigError, match="custom_cnn has no frozen base"):
        set_finetune(create_model("custom_cnn", image_size=TINY), True)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_frozen_base_keeps_batchnorm_statistics_fixed_in_train_mode(name):
    model = create_model(name, image_size=TINY, freeze_base=True)
    assert _trainable(model) and all(n.startswith(model.spec.classifier + ".") for n in _trainable(model))
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    _backward(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # unfreezing the last stage lets its BatchNorm layers train (and update statistics) again
    set_finetune(model, True)
    model.train()
    bn_modes = [m.training for m in model.get_submodule(model.spec.finetune_layers[-1]).modules()]
    assert any(bn_modes)
