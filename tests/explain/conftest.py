"""Fixtures for the explanation tests: a toy model whose maps can be predicted, tiny checkpoints.

Tiny tensors run fastest on one intra-op thread (and do not fight other processes for the CPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pneumocxr.models import create_model, save_checkpoint


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class BrightDarkModel(nn.Module):
    """logit = mean(bright) − mean(dark), with bright = relu(x) and dark = relu(1 − x) on a [0, 1] image.

    So PNEUMONIA (+logit) evidence is exactly the bright pixels and NORMAL (−logit) evidence the dark
    ones: a correct binary-target CAM must light up opposite regions for the two classes.
    """

    layer = "features"

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 1))
        with torch.no_grad():
            self.features[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.features[0].bias.copy_(torch.tensor([0.0, 1.0]))
            self.head[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
            self.head[2].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, 1)


@pytest.fixture
def bright_dark() -> BrightDarkModel:
    return BrightDarkModel().eval()


def half_bright(size: int = 16) -> torch.Tensor:
    """(1, 1, size, size): left half 0.9 (bright), right half 0.1 (dark)."""
    x = torch.full((1, 1, size, size), 0.1)
    x[..., : size // 2] = 0.9
    return x


def tiny_checkpoint(path: Path, *, image_size: int = 32, resize_mode: str = "squash", seed: int = 0) -> Path:
    """A 1-channel custom_cnn checkpoint with random weights (small and quick to load)."""
    torch.manual_seed(seed)
    model = create_model("custom_cnn", image_size=image_size, in_channels=1)
    preprocess = model.spec.preprocess
    if resize_mode != preprocess.resize_mode:
        from dataclasses import replace

        preprocess = replace(preprocess, resize_mode=resize_mode)
    return save_checkpoint(
        path,
        model,
        model_name="custom_cnn",
        model_kwargs={"image_size": image_size, "in_channels": 1},
        preprocess=preprocess,
        class_names=["NORMAL", "PNEUMONIA"],
        threshold=0.4,
        temperature=1.5,
    )


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return tiny_checkpoint(tmp_path / "tiny.pt")


def write_png(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """A gray PNG with a bright blob left of centre (so maps have some structure)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = 60 + 20 * rng.random((height, width))
    pixels += 150 * np.exp(-((xx - 0.3 * width) ** 2 + (yy - 0.5 * height) ** 2) / (0.02 * width * height))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(path)
    return path


@pytest.fixture
def half_bright_image() -> torch.Tensor:
    return half_bright()


@pytest.fixture
def make_checkpoint():
    """Factory: ``make_checkpoint(path, image_size=32, resize_mode="squash")``."""
    return tiny_checkpoint


@pytest.fixture
def make_png():
    """Factory: ``make_png(path, height, width)``."""
    return write_png


def blob_batch(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, size, size) noisy gray images, every second one with a bright blob (label 1)."""
    x = torch.rand(n, 1, size, size, generator=generator) * 0.2 + 0.3
    y = torch.arange(n) % 2
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i in range(n):
        if y[i]:
            cx, cy = torch.randint(6, size - 6, (2,), generator=generator)
            x[i, 0] += 0.5 * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8.0)
    return x, y.float()


@pytest.fixture(scope="session")
def trained_tiny():
    """(model, held-out images, labels): a 32-px custom_cnn trained 30 steps to find blobs (~90 %).

    BatchNorm stays in eval mode while training (identity statistics): with 2×2 final maps and
    16-image batches, batch statistics do not carry over to inference in so few steps.
    """
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = create_model("custom_cnn", image_size=32, in_channels=1, dropout=0.0, block_dropout=0.0).eval()
    optimiser = torch.optim.Adam(model.parameters(), 3e-4)
    for _ in range(30):
        x, y = blob_batch(16, 32, generator)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    x, y = blob_batch(8, 32, generator)
    return model, x, y
