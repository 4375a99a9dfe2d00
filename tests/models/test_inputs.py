"""``to_model_input``: the one uint8 → normalised-float conversion that training and inference share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumocxr.config import Preprocess
from pneumocxr.models import to_model_input

PREPROCESSES = [
    Preprocess(image_size=16, channels=1, mean=(0.5,), std=(0.25,)),
    Preprocess(image_size=16, channels=3),  # ImageNet per-channel statistics
    Preprocess(image_size=16, channels=3, mean=(0.2,), std=(0.7,)),  # one value for all channels
]


@pytest.mark.parametrize("preprocess", PREPROCESSES)
def test_scales_repeats_and_normalises_per_channel(preprocess):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    out = to_model_input(torch.from_numpy(pixels), preprocess)
    assert out.shape == (3, preprocess.channels, 16, 16) and out.dtype == torch.float32
    # reference in float32 numpy: (pixel / 255 - mean_c) / std_c, channel c of the gray plane
    scaled = pixels.astype(np.float32) / np.float32(255.0)
    mean = np.broadcast_to(np.asarray(preprocess.mean, np.float32), (preprocess.channels,))
    std = np.broadcast_to(np.asarray(preprocess.std, np.float32), (preprocess.channels,))
    expected = (scaled[:, None] - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_numpy_and_tensor_pixels_give_the_same_input():
    pixels = np.random.default_rng(1).integers(0, 256, (2, 8, 8), dtype=np.uint8)
    pre = Preprocess(image_size=8, channels=3)
    assert torch.equal(to_model_input(pixels, pre), to_model_input(torch.from_numpy(pixels), pre))


def test_channels_last_changes_the_layout_not_the_values():
    pixels = torch.tensor([[[0, 255], [255, 0]]], dtype=torch.uint8)  # (1, 2, 2)
    pre = Preprocess(image_size=8, channels=3)  # image_size is not used by the transform
    out = to_model_input(pixels, pre, channels_last=True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, to_model_input(pixels, pre))
    for c in range(3):
        assert float(out[0, c, 0, 1]) == pytest.approx((1.0 - pre.mean[c]) / pre.std[c])
        assert float(out[0, c, 0, 0]) == pytest.approx((0.0 - pre.mean[c]) / pre.std[c])


def test_augment_sees_one_unnormalised_plane_before_the_channel_repeat():
    pixels = torch.full((2, 4, 4), 255, dtype=torch.uint8)
    pre = Preprocess(image_size=8, channels=3, mean=(0.5,), std=(0.5,))
    seen = []

    def darken(images: torch.Tensor) -> torch.Tensor:
        seen.append((tuple(images.shape), float(images.max())))
        return images * 0.5

    out = to_model_input(pixels, pre, augment=darken)
    assert seen == [((2, 1, 4, 4), 1.0)]  # (N, 1, S, S) in [0, 1]
    assert torch.allclose(out, torch.zeros(2, 3, 4, 4))  # (0.5 - 0.5) / 0.5 in every channel
