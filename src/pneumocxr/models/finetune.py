"""Two-phase transfer learning: train the head on a frozen base, then unfreeze its last block
at a lower learning rate (the seed's VGG16 recipe; works for every model whose spec names
``finetune_layers``)."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from pneumocxr.errors import ConfigError
from pneumocxr.models.registry import model_spec

logger = logging.getLogger(__name__)


def set_finetune(model: nn.Module, enabled: bool) -> list[str]:
    """Unfreeze (``enabled=True``) or re-freeze the spec's ``finetune_layers``; returns their names.

    Everything else keeps its ``requires_grad``: the head stays trainable, earlier blocks frozen.
    """
    spec = model_spec(model)
    if not spec.finetune_layers:
        raise ConfigError(
            f"model {spec.name} has no frozen base to fine-tune (all its layers train from the start); "
            "set the fine-tuning phase off for it"
        )
    for name in spec.finetune_layers:
        for param in model.get_submodule(name).parameters():
            param.requires_grad = enabled
    logger.info("%s: %s %s", spec.name, "unfroze" if enabled else "froze", ", ".join(spec.finetune_layers))
    return list(spec.finetune_layers)


def param_groups(model: nn.Module, lr: float, finetune_lr: float | None = None) -> list[dict[str, Any]]:
    """Optimizer parameter groups over the trainable parameters.

    With ``finetune_lr``: the head at ``lr`` and every other trainable parameter (an unfrozen
    pretrained block) at ``finetune_lr``, so fine-tuning does not wreck ImageNet features.
    Without it: one group at ``lr`` (a model trained from scratch). Empty groups are left out.
    """
    spec = model_spec(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError(f"model {spec.name} has no trainable parameters; is everything frozen?")
    if finetune_lr is None:
        return [{"name": "all", "params": [p for _, p in trainable], "lr": lr}]
    prefix = spec.classifier + "."
    head = [p for n, p in trainable if n.startswith(prefix)]
    body = [p for n, p in trainable if not n.startswith(prefix)]
    groups = [
        {"name": "head", "params": head, "lr": lr},
        {"name": "finetune", "params": body, "lr": finetune_lr},
    ]
    return [g for g in groups if g["params"]]
