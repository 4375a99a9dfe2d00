"""``custom_cnn_attention``: the reference custom CNN with CBAM attention after each conv block.

CBAM (Woo et al., *CBAM: Convolutional Block Attention Module*, ECCV 2018) refines a block's
feature map twice: channel attention (a shared MLP over the average- and max-pooled descriptors,
"which filters matter") then spatial attention (a 7×7 conv over the channel-wise mean and max,
"where to look"), each a sigmoid gate multiplied into the features. It refines each block's
output, after the pooling and before the block's Dropout, so block i is::

    (conv 3×3, BatchNorm, ReLU) × convs_per_block → MaxPool 2×2 → CBAM → Dropout

Why after the pooling rather than between the convolutions and the pooling (where Woo et al. put
it in ResNet blocks): the gates' pooling, products and their backward passes then run on a 4×
smaller map. Measured on this CPU (bf16 autocast, channels_last, one thread, a loaded machine):
before the pooling a training step took ~1.6× custom_cnn's, after it ~1.3×.

Everything else is ``custom_cnn`` (filters 32 → 64 → 128 → 256, Flatten → Dense 512 → 256 → 1,
dropout between the dense layers): the only difference is the attention, so the two compare
like for like; Grad-CAM reads the same layer as custom_cnn's (block 4's last ReLU, before the
pooling, so its maps have the same resolution; the gradient reaching it passes through block 4's
attention). Cost: about 0.1 % more parameters (~10k of 9.7M at 128 px).

Why CBAM rather than squeeze-and-excitation: SE is CBAM's channel half alone; the spatial half
is what gives a per-block "where" map that can be looked at (``spatial_attention_maps``).

Input channels: the network itself always takes 3 channels and a 1-channel model gets the
registry's ChannelAdapter (the gray plane repeated), unlike ``custom_cnn``, which changes its
first conv. So a 1-channel and a 3-channel checkpoint have the same state_dict and the same
outputs on a gray image, like every other registered model (the extra multiply-adds of the first
conv are ~3 % of the network's).

The Dropout at the end of each block feeds the next block's BatchNorm, as in ``custom_cnn``:
``training.bn_recalibration.needs_recalibration`` sees it (module order) and training
re-estimates BatchNorm statistics with dropout off before validating and exporting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pneumocxr.errors import ConfigError
from pneumocxr.models.channels import make_preprocess
from pneumocxr.models.custom_cnn import build_net, conv_block
from pneumocxr.models.registry import Built, check_image_size, register_model


class ChannelAttention(nn.Module):
    """(N, C, H, W) → (N, C, 1, 1) gate in (0, 1): a shared MLP on the average- and max-pooled features."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        # The shared MLP as 1×1 convolutions: it runs on (N, C, 1, 1) descriptors without reshapes.
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))  # (N, C, 1, 1)
        peak = self.mlp(F.adaptive_max_pool2d(x, 1))  # (N, C, 1, 1)
        return torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """(N, C, H, W) → (N, 1, H, W) gate in (0, 1): a k×k conv over the channel-wise mean and max.

    Its output is the block's attention map (``spatial_attention_maps`` hooks it).
    """

    def __init__(self, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)  # (N, 2, H, W)
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Channel then spatial attention, each multiplied into the features (shape unchanged)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)  # (N, C, H, W) * (N, C, 1, 1)
        return x * self.spatial(x)  # (N, C, H, W) * (N, 1, H, W)


@register_model("custom_cnn_attention")
def custom_cnn_attention(
    image_size: int = 224,
    in_channels: int = 3,
    num_classes: int = 2,
    dropout: float = 0.5,
    block_dropout: float = 0.25,
    convs_per_block: int = 2,
    reduction: int = 16,
    spatial_kernel: int = 7,
) -> Built:
    """The reference custom CNN with a CBAM module after each conv block (module docstring)."""
    check_image_size("custom_cnn_attention", image_size, 16)
    if not isinstance(convs_per_block, int) or convs_per_block < 1:
        raise ConfigError(f"custom_cnn_attention: convs_per_block={convs_per_block!r}; use 1 or 2")
    if not isinstance(reduction, int) or isinstance(reduction, bool) or reduction < 1:
        raise ConfigError(f"custom_cnn_attention: reduction={reduction!r}; use a positive integer, e.g. 16")
    if not isinstance(spatial_kernel, int) or spatial_kernel < 1 or spatial_kernel % 2 == 0:
        raise ConfigError(
            f"custom_cnn_attention: spatial_kernel={spatial_kernel!r}; use an odd size, e.g. 7 (or 3)"
        )
    # Like custom_cnn: the seed's Keras pipeline only rescales to [0, 1] (mean 0, std 1).
    preprocess = make_preprocess(image_size, in_channels, (0.0,), (1.0,))

    def block(in_ch: int, out_ch: int) -> nn.Sequential:
        """custom_cnn's block with CBAM between the pooling and the Dropout (same layer names)."""
        cbam = {"cbam": lambda channels: CBAM(channels, reduction, spatial_kernel)}
        return conv_block(in_ch, out_ch, convs_per_block, block_dropout, after_pool=cbam)

    net = build_net(3, image_size, num_classes, dropout, block)  # always 3 channels (module docstring)
    return Built(
        net=net,
        preprocess=preprocess,
        cam_layer=f"features.block4.relu{convs_per_block}",  # as custom_cnn: comparable Grad-CAMs
        classifier="classifier",
        net_channels=3,
        net_mean=(0.0, 0.0, 0.0),
        net_std=(1.0, 1.0, 1.0),
    )


@torch.no_grad()
def spatial_attention_maps(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each CBAM's spatial attention for a batch: {module name: (N, H_i, W_i) float32 in [0, 1]}.

    ``images`` is the model's normalised input (N, C, S, S) (``models.to_model_input``); block i's
    map is S / 2^i on a side (after its pooling), in module order. Read with forward hooks during
    one forward pass; the model's mode is left as it is (call it on an eval-mode model to see what
    inference sees).
    ConfigError for a model without spatial attention.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, SpatialAttention)]
    if not layers:
        raise ConfigError(
            f"{type(model).__name__} has no spatial attention modules; attention maps need a model "
            "such as custom_cnn_attention"
        )
    maps: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            maps[name] = output.detach().float()[:, 0].cpu()  # (N, 1, H, W) → (N, H, W)

        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in layers]
    try:
        model(images)
    finally:
        for handle in handles:
            handle.remove()
    return {name: maps[name] for name, _ in layers}
