"""Every registered model: shapes, gradients, channels, specs, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pneumocxr.config import IMAGENET_MEAN, IMAGENET_STD
from pneumocxr.errors import ConfigError
from pneumocxr.models import count_parameters, create_model, list_models, model_spec

TINY = 64  # the smallest side every architecture here handles comfortably (VGG/ResNet stride 32)
EXPECTED = {
    "custom_cnn",
    "vgg16_transfer",
    "resnet18",
    "resnet50",
    "densenet121",
    "efficientnet_b0",
    "efficientnet_lite0",
}


def _normalise(gray: torch.Tensor, mean, std) -> torch.Tensor:
    """(N, 1, H, W) gray in [0, 1] → (N, C, H, W) normalised, C = len(mean), as the data layer does."""
    channels = len(mean)
    x = gray.expand(-1, channels, -1, -1)
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def test_registry_holds_the_issue_models():
    assert set(list_models()) >= EXPECTED
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_gives_one_logit_and_gradients_only_where_trainable(name):
    model = create_model(name, image_size=TINY).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, TINY, TINY, generator=gen)
    logits = model(x)
    assert logits.shape == (2, 1)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([[0.0], [1.0]]))
    loss.backward()
    for pname, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"{name}: trainable {pname} got no gradient"
            assert torch.isfinite(param.grad).all()
        else:
            assert param.grad is None, f"{name}: frozen {pname} got a gradient"
    head = model.get_submodule(model.spec.classifier)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


@pytest.mark.parametrize("name", list_models())
def test_one_channel_input_matches_its_three_channel_twin(name):
    """Grayscale is adapted in one place and exactly: same weights, same logits."""
    three = create_model(name, image_size=TINY, in_channels=3, num_classes=3).eval()
    one = create_model(name, image_size=TINY, in_channels=1, num_classes=3).eval()
    pre1, pre3 = one.spec.preprocess, three.spec.preprocess
    assert (pre1.channels, pre3.channels) == (1, 3)
    assert len(pre1.mean) == 1 and len(pre3.mean) == 3
    gray = torch.rand(2, 1, TINY, TINY, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out1 = one(_normalise(gray, pre1.mean, pre1.std))
        assert out1.shape == (2, 3)  # num_classes=3 → three logits
        if name == "custom_cnn":
            return  # trained from scratch: takes one channel natively, its first conv differs
        one.load_state_dict(three.state_dict())  # identical keys: the adapter stores nothing
        out1 = one(_normalise(gray, pre1.mean, pre1.std))
        out3 = three(_normalise(gray, pre3.mean, pre3.std))
    torch.testing.assert_close(out1, out3, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list_models())
def test_spec_layers_resolve_and_agree_with_the_meta_build(name):
    model = create_model(name, image_size=TINY)
    spec = model_spec(model)
    assert spec == model_spec(name, image_size=TINY)
    assert isinstance(model.get_submodule(spec.cam_layer), nn.Module)
    assert any(True for _ in model.get_submodule(spec.classifier).parameters())
    for layer in spec.finetune_layers:
        assert any(True for _ in model.get_submodule(layer).parameters())
    assert spec.kwargs["image_size"] == TINY and spec.preprocess.image_size == TINY
    assert spec.pretrained_source


def test_preprocess_is_declared_per_model():
    assert model_spec("vgg16_transfer").preprocess.mean == IMAGENET_MEAN
    assert model_spec("vgg16_transfer").preprocess.std == IMAGENET_STD
    assert model_spec("resnet50").preprocess.image_size == 224  # timm's pretrained_cfg
    lite = model_spec("efficientnet_lite0").preprocess
    assert lite.mean == pytest.approx((127 / 255,) * 3) and lite.std == pytest.approx((128 / 255,) * 3)
    custom = model_spec("custom_cnn", in_channels=1).preprocess
    assert (custom.channels, custom.mean, custom.std) == (1, (0.0,), (1.0,))  # Keras rescale=1/255 only


def test_custom_cnn_parameter_count_is_the_architecture_as_stated():
    # Two 3x3 convs per block (32, 64, 128, 256; BN, no conv bias), 14x14x256 flatten at 224 px,
    # Dense 512 -> 256 -> 1.
    convs = 9 * (3 * 32 + 32 * 32 + 32 * 64 + 64 * 64 + 64 * 128 + 128 * 128 + 128 * 256 + 256 * 256)
    bns = 2 * 2 * (32 + 64 + 128 + 256)
    dense = (14 * 14 * 256 * 512 + 512) + (512 * 256 + 256) + (256 + 1)
    model = create_model("custom_cnn")
    assert count_parameters(model) == (convs + bns + dense, convs + bns + dense)
    assert convs + bns + dense == 26_995_425


def test_vgg16_head_matches_the_seed_at_224():
    model = create_model("vgg16_transfer")
    first = model.get_submodule("net.classifier.1")
    assert (first.in_features, first.out_features) == (25088, 512)
    total, trainable = count_parameters(model)
    assert trainable == 25088 * 512 + 512 + 512 + 1
    assert total - trainable == 14_714_688  # torchvision VGG16 features


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"did you mean 'vgg16_transfer'"):
        create_model("vgg16")
    with pytest.raises(ConfigError, match="did you mean"):
        model_spec("resnet_18")


def test_unknown_option_and_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match=r"no option 'dropuot'; did you mean 'dropout'"):
        create_model("resnet18", dropuot=0.1)
    with pytest.raises(ConfigError, match="channels"):
        create_model("custom_cnn", in_channels=2)
    with pytest.raises(ConfigError, match="image_size"):
        create_model("vgg16_transfer", image_size=16)
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("custom_cnn", num_classes=0)


def test_model_spec_refuses_a_model_not_built_by_the_registry():
    with pytest.raises(ConfigError, match="create_model"):
        model_spec(nn.Linear(2, 1))


def test_model_spec_sees_through_parallel_wrappers():
    model = create_model("custom_cnn", image_size=32)
    assert model_spec(nn.DataParallel(model)) is model.spec
