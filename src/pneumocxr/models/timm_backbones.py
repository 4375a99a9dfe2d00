"""Modern backbones from timm with a one-logit head: resnet18, resnet50, densenet121, efficientnet_b0.

Built with ``pretrained=False`` (builders never download); ImageNet weights come from
``load_pretrained`` (timm's Hugging Face hub files, or ``model.weights=PATH``). Input size and
normalisation are timm's ``pretrained_cfg`` for the architecture, so they match the weights.
"""

from __future__ import annotations

import functools

from pneumocxr.models.channels import make_preprocess
from pneumocxr.models.pretrained import fetch_timm
from pneumocxr.models.registry import Built, check_image_size, num_logits, register_model

# registry name → (timm architecture, Grad-CAM layer, last stage for fine-tuning a frozen base)
TIMM_MODELS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "resnet18": ("resnet18", "layer4", ("layer4",)),
    "resnet50": ("resnet50", "layer4", ("layer4",)),
    # norm5 / bn2 are timm's BatchNormAct2d: the activated final feature map
    "densenet121": ("densenet121", "features.norm5", ("features.denseblock4", "features.norm5")),
    "efficientnet_b0": ("efficientnet_b0", "bn2", ("blocks.6", "conv_head", "bn2")),
}


def _make_builder(name: str, arch: str, cam_layer: str, finetune: tuple[str, ...]):
    def build(
        image_size: int | None = None,
        in_channels: int = 3,
        num_classes: int = 2,
        dropout: float = 0.0,
        freeze_base: bool = False,
    ) -> Built:
        """``image_size=None`` = timm's pretrained input size; ``freeze_base`` trains the head only."""
        import timm

        net = timm.create_model(
            arch, pretrained=False, num_classes=num_logits(num_classes), drop_rate=dropout
        )
        cfg = net.pretrained_cfg
        size = int(cfg["input_size"][-1]) if image_size is None else image_size
        check_image_size(name, size, 32)
        preprocess = make_preprocess(size, in_channels, cfg["mean"], cfg["std"])
        classifier = cfg["classifier"]
        if freeze_base:
            for pname, param in net.named_parameters():
                param.requires_grad = pname.startswith(classifier + ".")
        return Built(
            net=net,
            preprocess=preprocess,
            cam_layer=cam_layer,
            classifier=classifier,
            net_mean=tuple(cfg["mean"]),
            net_std=tuple(cfg["std"]),
            finetune_layers=finetune,
        )

    build.__name__ = name
    return build


for _name, (_arch, _cam, _finetune) in TIMM_MODELS.items():
    register_model(
        _name,
        pretrained_source=f"ImageNet: timm {_arch} default tag (HF hub or model.weights=PATH)",
        fetch_weights=functools.partial(fetch_timm, _arch, _name),
    )(_make_builder(_name, _arch, _cam, _finetune))
