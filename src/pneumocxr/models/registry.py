"""The model registry: ``create_model(name, **kw)`` and each model's spec.

Every registered model is a :class:`PneumoModel`: a :class:`ChannelAdapter` (grayscale handled
once, see ``channels.py``) followed by the architecture in ``.net``. It maps the (N, C, H, W)
tensor its ``Preprocess`` produces to (N, 1) logits (binary: the PNEUMONIA logit), or (N, k) for
``num_classes=k > 2``. Its :class:`ModelSpec` says how to feed it (preprocess), where Grad-CAM
looks (``cam_layer``), which module is the head (``classifier``) and where pretrained weights
come from — so no other layer hard-codes a layer name.

Builders never download: weights are loaded by ``pretrained.load_pretrained``.
"""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pneumocxr.config import Preprocess
from pneumocxr.errors import ConfigError
from pneumocxr.models.channels import ChannelAdapter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of the toolkit needs to know about a model, without knowing its class."""

    name: str  # registry name, e.g. "vgg16_transfer"
    preprocess: Preprocess  # how pixels become this model's input
    cam_layer: str  # dotted module name for Grad-CAM (``model.get_submodule(cam_layer)``)
    classifier: str  # dotted module name of the head (its weights are never loaded from ImageNet)
    pretrained_source: str  # where ImageNet weights come from, in words
    default_kwargs: dict[str, Any] = field(default_factory=dict)  # the builder's defaults
    kwargs: dict[str, Any] = field(default_factory=dict)  # the kwargs this instance was built with
    finetune_layers: tuple[str, ...] = ()  # modules ``set_finetune`` unfreezes (frozen-base models)


@dataclass(frozen=True)
class Built:
    """What a builder returns: the network and the facts the spec is made of.

    Module names are relative to the network; the registry prefixes them with ``net.``.
    """

    net: nn.Module  # (N, net_channels, H, W) → (N, logits)
    preprocess: Preprocess  # declared input (channels = the user's choice, 1 or 3)
    cam_layer: str
    classifier: str
    net_channels: int = 3  # channels the network itself takes
    net_mean: tuple[float, ...] | None = None  # the network's per-channel statistics (for 1 → 3)
    net_std: tuple[float, ...] | None = None
    finetune_layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Entry:
    name: str
    builder: Callable[..., Built]
    pretrained_source: str
    defaults: dict[str, Any]
    fetch_weights: Callable[[], dict[str, torch.Tensor]] | None


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str,
    *,
    pretrained_source: str = "none (trained from scratch)",
    fetch_weights: Callable[[], dict[str, torch.Tensor]] | None = None,
):
    """Decorator: register ``builder(**kwargs) -> Built`` under ``name``.

    The builder's keyword defaults are the model's default kwargs; every builder takes at least
    ``in_channels``, ``image_size`` and ``num_classes``. ``fetch_weights`` returns the default
    ImageNet state_dict (hub download or installed package); it is only called by
    ``load_pretrained``, never by the builder.
    """

    def decorate(builder: Callable[..., Built]) -> Callable[..., Built]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        defaults = {
            p.name: p.default
            for p in inspect.signature(builder).parameters.values()
            if p.default is not inspect.Parameter.empty
        }
        _REGISTRY[name] = _Entry(name, builder, pretrained_source, defaults, fetch_weights)
        return builder

    return decorate


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def num_logits(num_classes: int) -> int:
    """Binary (num_classes 1 or 2) → one logit, the positive class; k > 2 classes → k logits."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"num_classes={num_classes!r}; use 2 for the binary task or k > 2 for k classes")
    return 1 if num_classes <= 2 else num_classes


def check_image_size(name: str, image_size: int, minimum: int) -> None:
    """A clear error instead of a shape error deep inside the network."""
    if not isinstance(image_size, int) or image_size < minimum:
        raise ConfigError(f"model {name}: image_size={image_size!r} is too small; use at least {minimum}")


class PneumoModel(nn.Module):
    """The one interface every registered model has: normalised (N, C, H, W) → (N, k) logits."""

    def __init__(self, net: nn.Module, adapter: ChannelAdapter, spec: ModelSpec):
        super().__init__()
        self.adapter = adapter
        self.net = net
        self.spec = spec  # a plain attribute: not part of the state_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.adapter(x))

    def train(self, mode: bool = True) -> PneumoModel:
        """Like ``nn.Module.train``, but a frozen BatchNorm stays in eval mode.

        Frozen means frozen: otherwise a "frozen" backbone would still drift through its
        running statistics, and a feature extractor would change under a trained head.
        """
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    params = list(module.parameters())
                    if params and not any(p.requires_grad for p in params):
                        module.eval()
        return self


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (known: {', '.join(list_models())})")
    return _REGISTRY[name]


def _resolve_kwargs(entry: _Entry, kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(kwargs) - set(entry.defaults))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(entry.defaults), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"it takes: {', '.join(entry.defaults)}"
        raise ConfigError(f"model {entry.name} has no option {key!r}; {hint}")
    return {**entry.defaults, **kwargs}


def _assemble(entry: _Entry, kwargs: dict[str, Any]) -> PneumoModel:
    built = entry.builder(**kwargs)
    spec = ModelSpec(
        name=entry.name,
        preprocess=built.preprocess,
        cam_layer=f"net.{built.cam_layer}",
        classifier=f"net.{built.classifier}",
        pretrained_source=entry.pretrained_source,
        default_kwargs=dict(entry.defaults),
        kwargs=dict(kwargs),
        finetune_layers=tuple(f"net.{n}" for n in built.finetune_layers),
    )
    adapter = ChannelAdapter(built.preprocess, built.net_channels, built.net_mean, built.net_std)
    return PneumoModel(built.net, adapter, spec)


def create_model(name: str, **kwargs: Any) -> PneumoModel:
    """Build a registered model with random (or, for frozen bases, to-be-loaded) weights.

    Never downloads: call ``load_pretrained`` for ImageNet weights. Unknown names and options
    raise ConfigError with a "did you mean".
    """
    entry = _entry(name)
    model = _assemble(entry, _resolve_kwargs(entry, kwargs))
    logger.debug("created model %s with %s", name, model.spec.kwargs)
    return model


def model_spec(name_or_model: str | nn.Module, **kwargs: Any) -> ModelSpec:
    """The spec of a registered name (with default or given kwargs) or of a built model.

    For a name, the model is assembled on the meta device: no memory, no weights, instant.
    """
    if isinstance(name_or_model, nn.Module):
        model = name_or_model
        while not hasattr(model, "spec") and isinstance(getattr(model, "module", None), nn.Module):
            model = model.module  # DistributedDataParallel / DataParallel wrappers
        model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
        spec = getattr(model, "spec", None)
        if not isinstance(spec, ModelSpec):
            raise ConfigError(
                f"{type(name_or_model).__name__} was not built by pneumocxr.models.create_model; "
                "build models through the registry so they carry a spec"
            )
        return spec
    entry = _entry(name_or_model)
    with torch.device("meta"):
        return _assemble(entry, _resolve_kwargs(entry, kwargs)).spec


def weights_fetcher(name: str) -> Callable[[], dict[str, torch.Tensor]] | None:
    """The function that returns a model's default pretrained state_dict (None: from scratch)."""
    return _entry(name).fetch_weights


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


@dataclass(frozen=True)
class ModelSummary:
    """One row of ``pneumocxr models list``."""

    name: str
    total_params: int
    trainable_params: int
    image_size: int
    channels: int
    pretrained_source: str


def summarize_models() -> list[ModelSummary]:
    """Parameter counts and input of every registered model at its defaults (built on meta)."""
    rows = []
    for name in list_models():
        entry = _entry(name)
        with torch.device("meta"):
            model = _assemble(entry, dict(entry.defaults))
        total, trainable = count_parameters(model)
        pre = model.spec.preprocess
        rows.append(
            ModelSummary(name, total, trainable, pre.image_size, pre.channels, entry.pretrained_source)
        )
    return rows
