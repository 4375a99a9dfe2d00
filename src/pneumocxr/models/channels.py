"""Grayscale input, adapted in exactly one place.

A chest X-ray is one channel; ImageNet backbones expect three. Every registered model takes
the (N, C, H, W) tensor that its ``Preprocess`` produces (C = 1 or 3) and passes it through
a :class:`ChannelAdapter` before the network proper.

Why a stem that repeats 1 → 3 channels, rather than summing the first conv's weights for
1-channel input:

* pretrained weights (torchvision / timm / hub files, a user's ``weights=PATH``) load
  unchanged and strictly into every architecture, with no per-architecture surgery on
  whichever layer happens to be first;
* a model's state_dict is the same whatever its input channels, so checkpoints and weight
  files are interchangeable between ``channels=1`` and ``channels=3``;
* the adapter also undoes the 1-channel normalisation and applies each RGB channel's own
  mean/std, so a 1-channel model computes *exactly* what its 3-channel twin computes on the
  gray image repeated to RGB (a property the tests check). Summing weights is only exact
  when all channels share one mean/std.

The cost is the first layer's multiply-adds on three identical planes instead of one:
under 3 % of the FLOPs for every backbone here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pneumocxr.config import Preprocess
from pneumocxr.errors import ConfigError


def gray_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float], tuple[float]]:
    """The single mean/std used for 1-channel input: the average of the RGB statistics.

    Any affine choice would be undone exactly by the adapter; the average keeps the
    normalised gray input on the same scale as each RGB channel.
    """
    return (float(sum(mean)) / len(mean),), (float(sum(std)) / len(std),)


def make_preprocess(
    image_size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    resize_mode: str = "squash",
) -> Preprocess:
    """The Preprocess a model declares for ``channels`` (1 or 3) given its RGB statistics."""
    if channels == 1 and len(mean) > 1:
        mean, std = gray_stats(mean, std)
    elif channels == 3 and len(mean) == 1:
        mean, std = tuple(mean) * 3, tuple(std) * 3
    return Preprocess(
        image_size=int(image_size),
        channels=int(channels),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        resize_mode=resize_mode,
    )


class ChannelAdapter(nn.Module):
    """Map the declared input (``in_channels``, normalised by ``preprocess``) to what the network
    takes (``net_channels``, normalised by ``net_mean``/``net_std``).

    Identity when the channels already agree. For 1 → 3 it is the per-channel affine
    ``x * std_1 / std_c + (mean_1 - mean_c) / std_c`` broadcast to three planes, i.e. "undo the
    gray normalisation, repeat, apply RGB normalisation". Its constants are non-persistent
    buffers so that the state_dict does not depend on the input channels.
    """

    def __init__(
        self,
        preprocess: Preprocess,
        net_channels: int,
        net_mean: Sequence[float] | None = None,
        net_std: Sequence[float] | None = None,
    ):
        super().__init__()
        self.in_channels = preprocess.channels
        self.net_channels = net_channels
        self.identity = self.in_channels == net_channels
        if self.identity:
            return
        if (self.in_channels, net_channels) != (1, 3):
            raise ConfigError(
                f"cannot adapt {self.in_channels}-channel input to a {net_channels}-channel network; "
                "use channels=1 or channels=3"
            )
        net_mean = torch.tensor(
            net_mean if net_mean is not None else preprocess.mean * 3, dtype=torch.float32
        )
        net_std = torch.tensor(net_std if net_std is not None else preprocess.std * 3, dtype=torch.float32)
        m1, s1 = float(preprocess.mean[0]), float(preprocess.std[0])
        # (1, 3, 1, 1) so they broadcast over an (N, 1, H, W) input to (N, 3, H, W)
        self.register_buffer("scale", (s1 / net_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((m1 - net_mean) / net_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        return x * self.scale + self.shift  # (N, 1, H, W) → (N, 3, H, W)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.net_channels}" + (" (identity)" if self.identity else "")
