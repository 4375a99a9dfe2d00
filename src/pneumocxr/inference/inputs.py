"""uint8 pixels → the normalised float tensor a model takes, exactly as training computes it.

Training does the same conversion in ``pneumocxr.training.datamodule.to_model_input`` (there
with optional augmentation). ``inference`` and ``training`` are sibling layers and may not import
each other, and serving must not pull in Lightning, so this is a second, augmentation-free copy;
``tests/inference/test_predictor.py`` pins the two to identical outputs so they cannot drift.
"""

from __future__ import annotations

import torch

from pneumocxr.config import Preprocess


def to_model_input(pixels: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """(N, S, S) uint8 → (N, C, S, S) float32: scale to [0, 1], repeat to C channels, normalise."""
    images = pixels.unsqueeze(1).float().div_(255.0)  # (N, 1, S, S) in [0, 1]
    channels = preprocess.channels
    mean = torch.tensor(preprocess.mean, device=images.device, dtype=images.dtype)
    std = torch.tensor(preprocess.std, device=images.device, dtype=images.dtype)
    # one value (shared by all channels) or one per channel → (1, C, 1, 1) for broadcasting
    mean = mean.expand(channels).reshape(1, channels, 1, 1)
    std = std.expand(channels).reshape(1, channels, 1, 1)
    return (images.expand(-1, channels, -1, -1) - mean) / std  # (N, C, S, S)
