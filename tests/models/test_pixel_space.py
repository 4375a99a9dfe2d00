"""``PixelSpaceModel``: [0, 1] pixels through the one normalisation path; the two-logit binary view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumocxr.config import Preprocess
from pneumocxr.models import create_model, to_model_input
from pneumocxr.models.inputs import normalise
from pneumocxr.models.pixel_space import PixelSpaceModel, to_pixels


@pytest.mark.parametrize("name, channels", [("custom_cnn", 1), ("efficientnet_lite0", 3), ("resnet18", 1)])
def test_gives_the_logits_of_the_uint8_path(name, channels):
    torch.manual_seed(0)
    model = create_model(name, image_size=32, in_channels=channels).eval()
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32), dtype=np.uint8)
    wrapped = PixelSpaceModel(model, model.spec.preprocess, two_logits=False)
    with torch.no_grad():
        expected = model(to_model_input(torch.from_numpy(pixels), model.spec.preprocess))
        got = wrapped(torch.from_numpy(pixels).float().div(255.0)[:, None])
    torch.testing.assert_close(got, expected)


def test_two_logits_make_cross_entropy_the_binary_cross_entropy():
    model = create_model("custom_cnn", image_size=16, in_channels=1).eval()
    wrapped = PixelSpaceModel(model, model.spec.preprocess)
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        two = wrapped(x)
        z = model(normalise(x, model.spec.preprocess))[:, 0]
    assert two.shape == (4, 2)
    torch.testing.assert_close(two[:, 1] - two[:, 0], z)
    torch.testing.assert_close(torch.softmax(two, 1)[:, 1], torch.sigmoid(z))
    ce = torch.nn.functional.cross_entropy(two, y)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y.float())
    torch.testing.assert_close(ce, bce)


def test_k_class_logits_pass_through_and_bad_shapes_are_refused():
    model = create_model("custom_cnn", image_size=16, in_channels=1, num_classes=3).eval()
    wrapped = PixelSpaceModel(model, model.spec.preprocess)
    with torch.no_grad():
        assert wrapped(torch.rand(2, 1, 16, 16)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"\(N, 1, S, S\)"):
        wrapped(torch.rand(2, 3, 16, 16))


@pytest.mark.parametrize(
    "preprocess",
    [Preprocess(image_size=8, channels=3), Preprocess(image_size=8, channels=1, mean=(0.5,), std=(0.25,))],
)
def test_to_pixels_inverts_normalise(preprocess):
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(to_pixels(normalise(x, preprocess), preprocess), x, rtol=0, atol=1e-6)
