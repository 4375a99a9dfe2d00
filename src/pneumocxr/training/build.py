"""``build_model(config)``: the registry model a run config asks for, with its pretrained weights."""

from __future__ import annotations

from typing import Any

import torch

from pneumocxr.config import RunConfig
from pneumocxr.errors import ConfigError
from pneumocxr.models import create_model, load_pretrained, model_spec


def build_model(config: RunConfig) -> torch.nn.Module:
    """The registry model the config asks for, with pretrained weights when requested."""
    cfg = config.model
    defaults = model_spec(cfg.name).default_kwargs
    kwargs: dict[str, Any] = {"num_classes": cfg.num_classes}
    if "dropout" in defaults:
        kwargs["dropout"] = cfg.dropout
    if cfg.image_size:
        kwargs["image_size"] = cfg.image_size
    model = create_model(cfg.name, **kwargs)
    if cfg.pretrained:
        load_pretrained(cfg.name, model, cfg.weights or None)
    elif cfg.weights:
        raise ConfigError(
            f"model.weights={cfg.weights!r} is set but model.pretrained is false; "
            "set model.pretrained=true to start from that file, or drop model.weights"
        )
    return model
