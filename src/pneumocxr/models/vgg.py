"""``vgg16_transfer``: the seed's transfer model.

torchvision's VGG16 convolutional base (ImageNet weights via ``load_pretrained``), frozen, then
Flatten → Linear(512·s², 512) → ReLU → Dropout → Linear(512, 1), as in the Keras seed
(``include_top=False`` + Flatten; s = image_size / 32, so 25,088 inputs at 224 px).
A second phase may unfreeze the last conv block (``features[24:]``) at a lower learning rate:
``set_finetune(model, True)`` and ``param_groups(model, lr, finetune_lr)``.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from pneumocxr.config import IMAGENET_MEAN, IMAGENET_STD
from pneumocxr.models.channels import make_preprocess
from pneumocxr.models.pretrained import fetch_url
from pneumocxr.models.registry import Built, check_image_size, num_logits, register_model

# torchvision's VGG16_Weights.IMAGENET1K_V1 file; the hash prefix in the name is checked on download.
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
LAST_BLOCK = 24  # features[24:] = conv5_1, conv5_2, conv5_3 (+ ReLUs, final pool)


def _vgg16_features() -> nn.Sequential:
    """torchvision's VGG16 ``features`` (same module indices, so its state_dict keys match),
    without allocating the 120M-parameter ImageNet classifier we would throw away."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)
    for module in features:
        if isinstance(module, nn.ReLU):
            module.inplace = False  # Grad-CAM hooks read features.29's output; keep it intact
    return features


@register_model(
    "vgg16_transfer",
    pretrained_source="ImageNet: torchvision VGG16 IMAGENET1K_V1 (hub or model.weights=PATH)",
    fetch_weights=lambda: fetch_url(VGG16_URL, "vgg16_transfer"),
)
def vgg16_transfer(
    image_size: int = 224,
    in_channels: int = 3,
    num_classes: int = 2,
    dropout: float = 0.5,
    freeze_base: bool = True,
) -> Built:
    """VGG16 base (frozen unless ``freeze_base=False``) with the seed's 512-unit head."""
    check_image_size("vgg16_transfer", image_size, 32)
    preprocess = make_preprocess(image_size, in_channels, IMAGENET_MEAN, IMAGENET_STD)
    features = _vgg16_features()
    for param in features.parameters():
        param.requires_grad = not freeze_base
    side = image_size // 32  # five 2×2 poolings
    classifier = nn.Sequential(
        nn.Flatten(),  # (N, 512, side, side) → (N, 512·side²)
        nn.Linear(512 * side * side, 512),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(512, num_logits(num_classes)),
    )
    net = nn.Sequential(OrderedDict(features=features, classifier=classifier))
    finetune = tuple(
        f"features.{i}" for i in range(LAST_BLOCK, len(features)) if isinstance(features[i], nn.Conv2d)
    )
    return Built(
        net=net,
        preprocess=preprocess,
        cam_layer="features.29",  # ReLU after conv5_3: Keras' "block5_conv3" output
        classifier="classifier",
        net_mean=IMAGENET_MEAN,
        net_std=IMAGENET_STD,
        finetune_layers=finetune,
    )
