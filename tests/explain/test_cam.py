"""Maps for every registered model and method; binary-target sign; hooks; state; determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumocxr.errors import ConfigError
from pneumocxr.explain import METHODS, compute_cam, resolve_targets
from pneumocxr.models import create_model, list_models

HEAVY = {"resnet50", "vgg16_transfer", "densenet121", "efficientnet_b0"}  # Score-CAM: a pass per channel


def _assert_valid_maps(maps: np.ndarray, n: int, size: int) -> None:
    assert maps.shape == (n, size, size)
    assert maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    for one in maps:  # each map is min-max scaled: its peak is 1 unless there is no evidence at all
        assert one.max() == pytest.approx(1.0, abs=1e-4) or one.max() == 0.0


@pytest.mark.parametrize("name", list_models())
def test_every_model_gives_maps_of_input_size_in_unit_range(name):
    torch.manual_seed(0)
    model = create_model(name, image_size=64).eval()
    x = torch.randn(2, model.spec.preprocess.channels, 64, 64)
    for method in ("gradcam", "gradcam++", "eigencam"):
        result = compute_cam(model, x, method=method, target="pneumonia")
        _assert_valid_maps(result.maps, 2, 64)
        assert result.layer == model.spec.cam_layer
        assert result.logits.shape == (2, 1)
        assert result.target_classes == ("PNEUMONIA", "PNEUMONIA")


def _scorecam_case(name):
    return pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name


@pytest.mark.parametrize("name", [_scorecam_case(n) for n in list_models()])
def test_every_model_gives_scorecam_maps(name):
    torch.manual_seed(0)
    model = create_model(name, image_size=32).eval()
    x = torch.randn(1, model.spec.preprocess.channels, 32, 32)
    _assert_valid_maps(compute_cam(model, x, method="scorecam", target="normal").maps, 1, 32)


def test_grayscale_input_through_the_channel_adapter():
    model = create_model("resnet18", image_size=64, in_channels=1).eval()
    result = compute_cam(model, torch.randn(1, 1, 64, 64), method="gradcam")
    _assert_valid_maps(result.maps, 1, 64)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam"])
def test_pneumonia_and_normal_maps_light_up_their_own_evidence(method, bright_dark, half_bright_image):
    # +logit evidence = bright left half, −logit evidence = dark right half (see BrightDarkModel)
    kw = {"method": method, "layer": bright_dark.layer}
    pneumonia = compute_cam(bright_dark, half_bright_image, target="pneumonia", **kw).maps[0]
    normal = compute_cam(bright_dark, half_bright_image, target="normal", **kw).maps[0]
    assert pneumonia[:, :6].mean() > pneumonia[:, 10:].mean() + 0.5
    assert normal[:, 10:].mean() > normal[:, :6].mean() + 0.5
    assert not np.allclose(pneumonia, normal)


def test_eigencam_is_class_agnostic(bright_dark, half_bright_image):
    kw = {"method": "eigencam", "layer": bright_dark.layer}
    pneumonia = compute_cam(bright_dark, half_bright_image, target="pneumonia", **kw).maps
    normal = compute_cam(bright_dark, half_bright_image, target="normal", **kw).maps
    np.testing.assert_array_equal(pneumonia, normal)


def test_predicted_target_follows_the_threshold_on_the_calibrated_probability():
    logits = torch.tensor([[2.0], [-2.0], [0.2]])  # calibrated with T=2: 0.73, 0.27, 0.525
    assert resolve_targets(logits, "predicted", threshold=0.5, temperature=2.0) == (
        "PNEUMONIA",
        "NORMAL",
        "PNEUMONIA",
    )
    assert resolve_targets(logits, "predicted", threshold=0.6, temperature=2.0)[2] == "NORMAL"
    assert resolve_targets(logits, ["normal", "Pneumonia", "NORMAL"]) == ("NORMAL", "PNEUMONIA", "NORMAL")


def _hook_count(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize("method", METHODS)
def test_no_hook_is_left_on_the_model(method):
    model = create_model("custom_cnn", image_size=32).eval()
    before = _hook_count(model)
    compute_cam(model, torch.randn(1, 3, 32, 32), method=method)
    assert _hook_count(model) == before == 0


def test_hooks_are_released_when_the_computation_fails(bright_dark, half_bright_image):
    calls = {"n": 0}
    original = bright_dark.head.forward

    def fail_on_second_call(x):
        calls["n"] += 1
        if calls["n"] == 2:  # the first call decides the target; the second is the library's hooked pass
            raise RuntimeError("boom")
        return original(x)

    bright_dark.head.forward = fail_on_second_call
    with pytest.raises(RuntimeError, match="boom"):
        compute_cam(bright_dark, half_bright_image, layer=bright_dark.layer)
    assert _hook_count(bright_dark) == 0


def test_callers_model_state_is_restored():
    model = create_model("custom_cnn", image_size=32).train()
    frozen = model.net.features.block1.conv1.weight
    frozen.requires_grad_(False)
    marker = torch.ones_like(model.net.classifier[1].weight)
    model.net.classifier[1].weight.grad = marker
    compute_cam(model, torch.randn(1, 3, 32, 32), method="gradcam")
    assert model.training
    assert not frozen.requires_grad
    assert model.net.classifier[1].weight.requires_grad
    assert model.net.classifier[1].weight.grad is marker
    assert model.net.features.block2.conv1.weight.grad is None  # nothing accumulated


def test_frozen_backbone_still_gets_gradient_maps():
    model = create_model("vgg16_transfer", image_size=32).eval()  # features frozen by default
    maps = compute_cam(model, torch.randn(1, 3, 32, 32), method="gradcam", target="pneumonia").maps
    _assert_valid_maps(maps, 1, 32)


@pytest.mark.parametrize("method", METHODS)
def test_maps_are_deterministic(method):
    torch.manual_seed(1)
    model = create_model("custom_cnn", image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    first = compute_cam(model, x, method=method).maps
    second = compute_cam(model, x, method=method).maps
    np.testing.assert_array_equal(first, second)


def test_unknown_method_target_or_layer_is_a_config_error(bright_dark, half_bright_image):
    model = create_model("custom_cnn", image_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ConfigError, match="gradcam\\+\\+"):
        compute_cam(model, x, method="gradcm")
    with pytest.raises(ConfigError, match="predicted"):
        compute_cam(model, x, target="covid")
    with pytest.raises(ConfigError, match="no layer"):
        compute_cam(model, x, layer="net.nothing")
    with pytest.raises(ConfigError, match="one per image"):
        compute_cam(model, x, target=["normal", "normal"])


def test_thin_svd_projection_equals_the_librarys():
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    from pneumocxr.explain.cam import first_component

    activations = np.random.default_rng(0).random((2, 64, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(
        first_component(activations),
        get_2d_projection_with_sign_correction(activations),
        rtol=1e-4,
        atol=1e-4,
    )
