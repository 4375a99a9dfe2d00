"""uint8 pixels → the normalised float tensor a model takes: the one implementation.

Training (``training.datamodule``, with augmentation between scaling and normalising),
inference (``inference.predictor``) and explanations all turn cached (N, S, S) uint8 squares into
model input here. It lives in ``models`` because it only reads the model's ``Preprocess`` and every
one of those layers may import ``models``; one function means training and serving cannot
normalise differently.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pneumocxr.config import Preprocess


def to_model_input(
    pixels: torch.Tensor | np.ndarray,
    preprocess: Preprocess,
    *,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """(N, S, S) uint8 → (N, C, S, S) float32: scale to [0, 1], augment, repeat to C channels, normalise.

    ``augment`` receives and returns (N, 1, S, S) float in [0, 1]: augmenting one plane before the
    channel repeat is C× cheaper than after it, and geometric transforms see unnormalised pixels.
    ``channels_last`` returns NHWC memory (faster convolutions on CPU and tensor-core GPUs).
    The tensor stays on the device of ``pixels`` (a numpy array gives a CPU tensor).
    """
    images = torch.as_tensor(pixels).unsqueeze(1).float().div_(255.0)  # (N, 1, S, S) in [0, 1]
    if augment is not None:
        images = augment(images)  # (N, 1, S, S)
    images = normalise(images, preprocess)  # (N, C, S, S)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def normalise(images: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """(N, 1, S, S) float in [0, 1] → (N, C, S, S): repeat to C channels, subtract mean, divide by std.

    The second half of ``to_model_input``, for callers that hold [0, 1] pixels as a float tensor:
    an adversarial attack perturbs those pixels and needs gradients through this step.
    """
    channels = preprocess.channels
    mean = torch.tensor(preprocess.mean, device=images.device, dtype=images.dtype)
    std = torch.tensor(preprocess.std, device=images.device, dtype=images.dtype)
    # one value (shared by all channels) or one per channel → (1, C, 1, 1) for broadcasting
    mean = mean.expand(channels).reshape(1, channels, 1, 1)
    std = std.expand(channels).reshape(1, channels, 1, 1)
    return (images.expand(-1, channels, -1, -1) - mean) / std  # (N, C, S, S)
