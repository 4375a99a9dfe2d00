"""FGSM adversarial training: off by default, changes only its share of a batch, ε in pixel units,
leaves the model's state alone, matches ART's FGSM, and runs inside a real fit."""

from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tests.conftest import make_kermany_tree

from pneumocxr.config import RunConfig, TrainConfig, from_dict
from pneumocxr.errors import ConfigError
from pneumocxr.models import create_model, to_model_input
from pneumocxr.models.pixel_space import PixelSpaceModel, to_pixels
from pneumocxr.training.adversarial import (
    AdversarialTraining,
    adversarial_callbacks,
    adversarial_count,
    fgsm_batch,
)
from pneumocxr.training.module import ClassifierModule


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trainer(*callbacks):
    """What the callback reads from a Trainer: its callbacks and the precision plugin's context."""
    return SimpleNamespace(
        callbacks=list(callbacks), precision_plugin=SimpleNamespace(forward_context=nullcontext)
    )


def _batch(model, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised, channels_last batch as the DataModule hands it over, and 0/1 labels."""
    size = model.spec.preprocess.image_size
    pixels = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8))
    images = to_model_input(pixels, model.spec.preprocess, channels_last=True)
    return images, (torch.arange(n) % 2).float()


def _module(name: str, size: int = 32) -> ClassifierModule:
    torch.manual_seed(0)
    return ClassifierModule(create_model(name, image_size=size), pos_weight=2.0).train()


def test_off_by_default_and_no_callback_when_off():
    assert TrainConfig().adversarial_eps == 0.0
    assert adversarial_callbacks(TrainConfig()) == []
    [callback] = adversarial_callbacks(TrainConfig(adversarial_eps=2.0, adversarial_fraction=0.25))
    assert isinstance(callback, AdversarialTraining)
    assert (callback.eps, callback.fraction) == (2.0, 0.25)


@pytest.mark.parametrize(
    "size, fraction, expected", [(32, 0.5, 16), (5, 0.5, 3), (1, 0.5, 1), (4, 1.0, 4), (0, 0.5, 0)]
)
def test_adversarial_count_rounds_up_to_at_least_one(size, fraction, expected):
    assert adversarial_count(size, fraction) == expected


@pytest.mark.parametrize("name", ["custom_cnn", "efficientnet_lite0"])  # mean 0 / std 1, and 0.498 / 0.502
def test_replaces_only_its_share_within_eps_in_pixel_units(name):
    module = _module(name)
    images, labels = _batch(module.model)
    before = images.clone()
    callback = AdversarialTraining(eps=4.0, fraction=0.5)
    trainer = _trainer(callback)
    callback.setup(trainer, module, "fit")
    callback.on_train_batch_start(trainer, module, (images, labels), 0)

    assert images.shape == before.shape and images.dtype == before.dtype
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(images[4:], before[4:])  # the clean share is untouched
    preprocess = module.model.spec.preprocess
    new, old = to_pixels(images[:4], preprocess), to_pixels(before[:4], preprocess)
    assert new.min() >= 0.0 and new.max() <= 1.0
    step = (new - old).abs()
    assert step.max() <= 4 / 255 + 1e-5
    inside = (old > 4 / 255) & (old < 1 - 4 / 255)  # pixels the [0, 1] clip cannot touch
    assert (step[inside] - 4 / 255).abs().max() < 1e-5  # every free pixel moved by exactly ε (FGSM)
    std, mean = torch.tensor(preprocess.std), torch.tensor(preprocess.mean)
    for c in range(images.shape[1]):  # the same perturbation on every channel: still a gray image
        plane = images[:4, c : c + 1] * std[c % len(std)] + mean[c % len(mean)]
        torch.testing.assert_close(plane.clamp(0, 1), new, rtol=0, atol=1e-5)


def test_leaves_weights_statistics_modes_and_random_streams_alone():
    module = _module("custom_cnn")
    images, labels = _batch(module.model)
    buffers = {k: v.clone() for k, v in module.model.state_dict().items()}
    rng = torch.get_rng_state()
    callback = AdversarialTraining(eps=2.0)
    trainer = _trainer(callback)
    callback.setup(trainer, module, "fit")
    callback.on_train_batch_start(trainer, module, (images, labels), 0)
    for key, value in module.model.state_dict().items():  # weights and BN running statistics
        assert torch.equal(value, buffers[key]), key
    assert all(p.grad is None for p in module.model.parameters())
    assert all(m.training for m in module.model.modules())
    assert all(m.track_running_stats for m in module.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(torch.get_rng_state(), rng)  # dropout was off: no random numbers drawn


def test_fgsm_matches_art_fast_gradient_method():
    from art.attacks.evasion import FastGradientMethod
    from art.estimators.classification import PyTorchClassifier

    module = _module("custom_cnn")
    module.model.eval()  # ART differentiates the eval-mode function: compare like with like
    images, labels = _batch(module.model, n=6, seed=1)
    preprocess = module.model.spec.preprocess
    ours = to_pixels(fgsm_batch(module, images, labels, 3 / 255), preprocess).numpy()
    classifier = PyTorchClassifier(
        model=PixelSpaceModel(module.model, preprocess),
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 32, 32),
        nb_classes=2,
        clip_values=(0.0, 1.0),
        preprocessing=None,
        device_type="cpu",
    )
    onehot = np.eye(2, dtype=np.float32)[labels.long().numpy()]
    theirs = FastGradientMethod(classifier, eps=3 / 255, eps_step=3 / 255).generate(
        x=to_pixels(images, preprocess).numpy(), y=onehot
    )
    # the class weight scales each image's gradient by a positive number: the signs agree
    assert np.mean(np.abs(ours - theirs) < 1e-5) > 0.999


def test_confidently_right_images_are_attacked_too():
    """A saturated logit (σ(z) = 1 in float32) still gives a gradient: every image moves by ε."""
    module = _module("custom_cnn")
    module.model.eval()
    head = module.model.get_submodule(module.model.spec.classifier)[-1]
    with torch.no_grad():
        head.bias.fill_(30.0)  # z ≈ 30: σ(z) is exactly 1 in float32
    images, _ = _batch(module.model, n=4, seed=2)
    labels = torch.ones(4)  # every image confidently right
    with torch.no_grad():
        z = module(images)
    preprocess = module.model.spec.preprocess
    old = to_pixels(images, preprocess)
    new = to_pixels(fgsm_batch(module, images, labels, 2 / 255), preprocess)
    moved = (new - old).abs().flatten(1).amax(1)
    assert z.min() > 25 and torch.sigmoid(z).eq(1.0).all() and torch.all(moved > 1.9 / 255)


def test_k_class_batches_are_attacked():
    torch.manual_seed(0)
    model = create_model("custom_cnn", image_size=32, num_classes=3)
    module = ClassifierModule(model, num_classes=3, class_weights=[1.0, 2.0, 3.0]).train()
    images, _ = _batch(model, n=6)
    labels = (torch.arange(6) % 3).float()
    out = fgsm_batch(module, images, labels, 2 / 255)
    step = (to_pixels(out, model.spec.preprocess) - to_pixels(images, model.spec.preprocess)).abs()
    assert out.shape == images.shape and step.max() <= 2 / 255 + 1e-5 and step.max() > 1.9 / 255


def test_a_second_instance_in_the_same_trainer_does_nothing():
    module = _module("custom_cnn")
    images, labels = _batch(module.model)
    first, second = AdversarialTraining(2.0), AdversarialTraining(2.0)
    trainer = _trainer(first, second)
    first.setup(trainer, module, "fit")
    second.setup(trainer, module, "fit")
    assert first.active and not second.active
    before = images.clone()
    second.on_train_batch_start(trainer, module, (images, labels), 0)
    assert torch.equal(images, before)


@pytest.mark.parametrize(
    "train, match",
    [
        ({"adversarial_eps": -1.0}, "adversarial_eps"),
        ({"adversarial_eps": 100.0}, "adversarial_eps"),
        ({"adversarial_eps": "two"}, "adversarial_eps"),
        ({"adversarial_fraction": 0.0}, "adversarial_fraction"),
        ({"adversarial_fraction": 1.5}, "adversarial_fraction"),
        ({"adversarial_eps": 2.0, "frozen_features": True}, "frozen_features"),
        ({"adversarial_epsilon": 2.0}, "did you mean 'adversarial_eps'"),
    ],
)
def test_bad_config_values_are_config_errors(train, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(RunConfig, {"train": train})


@pytest.mark.parametrize("eps, fraction", [(0.0, 0.5), (2.0, 0.0), (2.0, 2.0)])
def test_the_callback_refuses_values_that_do_nothing(eps, fraction):
    with pytest.raises(ConfigError, match="adversarial"):
        AdversarialTraining(eps, fraction)


class _Counting(AdversarialTraining):
    calls = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        before = batch[0].clone()
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        k = 2  # adversarial_count(4, 0.5)
        assert not torch.equal(batch[0][:k], before[:k]) and torch.equal(batch[0][k:], before[k:])
        type(self).calls += 1


@pytest.mark.slow
def test_a_real_fit_trains_on_the_adversarial_batches(tmp_path):
    from pneumocxr.training import train

    root = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=8, size=(36, 36))
    config = from_dict(
        RunConfig,
        {
            "data": {"root": str(root), "val_fraction": 0.25},
            "model": {"name": "custom_cnn", "image_size": 32},
            "train": {"max_epochs": 1, "batch_size": 4, "precision": "32", "adversarial_eps": 2.0},
        },
    )
    callback = _Counting(config.train.adversarial_eps, config.train.adversarial_fraction)
    result = train(config, tmp_path / "run", progress=False, callbacks=[callback])
    assert result.best_checkpoint.is_file()
    n_train = sum(result.split["train_counts"])
    assert n_train % 4 == 0 and _Counting.calls == n_train // 4  # every training batch, once
