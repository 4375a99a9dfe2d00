"""BatchNorm re-estimation with dropout off (training/bn_recalibration.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pneumocxr.config import Preprocess
from pneumocxr.models import create_model, to_model_input
from pneumocxr.training.bn_recalibration import needs_recalibration, recalibrate_batchnorm

SIZE = 16
PRE = Preprocess(image_size=SIZE, channels=1, mean=(0.0,), std=(1.0,))


def toy(p: float = 0.9) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(p),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.Linear(4 * SIZE * SIZE, 1),
    )


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.randint(
        0, 256, (40, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )


def test_only_a_dropout_feeding_a_trainable_batchnorm_needs_it():
    assert needs_recalibration(create_model("custom_cnn", image_size=32, in_channels=1))
    assert needs_recalibration(toy())
    assert not needs_recalibration(toy(p=0.0))  # dropout off: nothing to fix
    assert not needs_recalibration(create_model("resnet18", image_size=32))  # no Dropout module before a BN
    frozen = toy()
    frozen[5].requires_grad_(False)
    assert not needs_recalibration(frozen)  # a frozen BatchNorm keeps its statistics


def test_statistics_become_those_of_eval_mode_activations(pixels):
    model = toy()
    model.train()
    with torch.no_grad():  # training-mode passes: BN2 learns statistics of dropped-out activations
        for _ in range(5):
            model(to_model_input(pixels, PRE))
    weights = {
        k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k
    }
    momentum = model[5].momentum

    assert (
        recalibrate_batchnorm(
            model, pixels, PRE, device=torch.device("cpu"), batch_size=64, channels_last=False
        )
        == 2
    )

    with torch.no_grad():  # what BN2 sees at eval time: the first block in eval mode, dropout off
        model.eval()
        inputs = model[:5](to_model_input(pixels, PRE))
    expected_mean = inputs.mean(dim=(0, 2, 3))
    expected_var = inputs.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(model[5].running_mean, expected_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model[5].running_var, expected_var, rtol=1e-4, atol=1e-5)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())  # weights untouched
    assert model[5].momentum == momentum and not model.training  # settings restored, eval mode


def test_a_frozen_batchnorm_keeps_its_statistics(pixels):
    model = toy()
    model[1].requires_grad_(False)
    model[1].running_mean.fill_(3.0)
    recalibrate_batchnorm(model, pixels, PRE, device=torch.device("cpu"), channels_last=False)
    assert torch.all(model[1].running_mean == 3.0)
