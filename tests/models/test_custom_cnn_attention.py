"""``custom_cnn_attention``: CBAM shapes, the registry entry at several sizes, attention maps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pneumocxr.config import load_yaml, resolve_recipe
from pneumocxr.errors import ConfigError
from pneumocxr.models import count_parameters, create_model, model_spec
from pneumocxr.models.custom_cnn_attention import (
    CBAM,
    ChannelAttention,
    SpatialAttention,
    spatial_attention_maps,
)
from pneumocxr.training.bn_recalibration import needs_recalibration

NAME = "custom_cnn_attention"


@pytest.mark.parametrize("channels, reduction", [(32, 16), (8, 16), (256, 4)])
def test_cbam_gates_have_their_shapes_and_keep_the_feature_shape(channels, reduction):
    x = torch.randn(2, channels, 12, 10, generator=torch.Generator().manual_seed(0))
    channel_gate = ChannelAttention(channels, reduction)(x)
    spatial_gate = SpatialAttention(7)(x)
    assert channel_gate.shape == (2, channels, 1, 1)
    assert spatial_gate.shape == (2, 1, 12, 10)
    for gate in (channel_gate, spatial_gate):
        assert gate.min() > 0 and gate.max() < 1  # sigmoid gates
    assert CBAM(channels, reduction)(x).shape == x.shape


def test_cbam_is_channel_gate_then_spatial_gate():
    torch.manual_seed(0)
    cbam = CBAM(16, 4, 3)
    x = torch.randn(1, 16, 8, 8)
    refined = x * cbam.channel(x)
    torch.testing.assert_close(cbam(x), refined * cbam.spatial(refined))


@pytest.mark.parametrize("size", [16, 32, 64, 100, 128])
def test_builds_and_gives_one_logit_at_several_image_sizes(size):
    model = create_model(NAME, image_size=size).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 1)
    assert model.spec.preprocess.image_size == size
    assert model.spec.cam_layer == model_spec("custom_cnn").cam_layer  # comparable Grad-CAMs
    assert isinstance(model.get_submodule("net.features.block4.cbam"), CBAM)
    assert model_spec(NAME, image_size=size) == model.spec


def test_three_classes_and_one_channel_input():
    model = create_model(NAME, image_size=32, in_channels=1, num_classes=3).eval()
    assert model.spec.preprocess.channels == 1
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3)


def test_one_and_three_channel_models_share_weights_and_outputs():
    """The network always takes 3 channels: the adapter repeats the gray plane (module docstring)."""
    three = create_model(NAME, image_size=32, in_channels=3).eval()
    one = create_model(NAME, image_size=32, in_channels=1).eval()
    one.load_state_dict(three.state_dict())
    gray = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(one(gray), three(gray.expand(-1, 3, -1, -1)))


def test_is_custom_cnn_plus_a_small_attention_overhead():
    plain = count_parameters(create_model("custom_cnn", image_size=128))[0]
    attention = count_parameters(create_model(NAME, image_size=128))[0]
    # the first conv takes 3 channels (custom_cnn's takes in_channels=3 too), CBAM adds ~10k
    assert 0 < attention - plain < 0.002 * plain


def test_bn_recalibration_recognises_dropout_feeding_batchnorm():
    assert needs_recalibration(create_model(NAME, image_size=32))
    assert not needs_recalibration(create_model(NAME, image_size=32, block_dropout=0.0, dropout=0.0))


@pytest.mark.parametrize("size", [32, 64])
def test_attention_maps_one_per_block_halving_in_size_within_unit_range(size):
    torch.manual_seed(0)
    model = create_model(NAME, image_size=size).eval()
    x = torch.randn(3, 3, size, size)
    maps = spatial_attention_maps(model, x)
    assert list(maps) == [f"net.features.block{i}.cbam.spatial" for i in range(1, 5)]
    for i, block_map in enumerate(maps.values()):
        side = size // 2 ** (i + 1)  # after the block's pooling
        assert block_map.shape == (3, side, side) and block_map.dtype == torch.float32
        assert torch.isfinite(block_map).all()
        assert block_map.min() >= 0.0 and block_map.max() <= 1.0
    assert not model.training
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed


def test_attention_maps_refuse_a_model_without_attention():
    with pytest.raises(ConfigError, match="attention"):
        spatial_attention_maps(create_model("custom_cnn", image_size=32), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ConfigError, match="attention"):
        spatial_attention_maps(nn.Linear(2, 1), torch.zeros(1, 2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 8}, "image_size"),
        ({"convs_per_block": 0}, "convs_per_block"),
        ({"reduction": 0}, "reduction"),
        ({"spatial_kernel": 4}, "spatial_kernel"),
        ({"in_channels": 2}, "channels"),
    ],
)
def test_bad_options_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_model(NAME, **kwargs)


def test_recipe_mirrors_cpu_custom_cnn_but_for_the_model_name():
    plain = load_yaml(resolve_recipe("cpu_custom_cnn"))
    attention = load_yaml(resolve_recipe("cpu_custom_cnn_attention"))
    assert attention["model"].pop("name") == NAME and plain["model"].pop("name") == "custom_cnn"
    assert attention == plain
