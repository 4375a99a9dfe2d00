"""How a ``Predictor`` turns a batch of pixels into logits: the one thing that differs between runtimes.

A backend takes (B, S, S) uint8 squares at the checkpoint's ``Preprocess`` and returns (B, n)
float32 logits (n = 1 for a binary checkpoint, k for a k-class one). Everything before (decoding,
scope checks) and after (temperature, threshold, ``PredictionBatch``) is the ``Predictor``'s and
the same for every runtime, so a torch and an ONNX Runtime predictor can only differ in logits.

- ``TorchBackend``: the checkpoint's ``nn.Module`` on a torch device, normalised by
  ``models.to_model_input`` (the function training uses); optionally bf16 autocast.
- ``onnx_runtime.OnnxBackend``: an exported graph (``pneumocxr export``) on ONNX Runtime; the
  normalisation is inside the graph. Lives in its own module so that onnxruntime is imported only
  when an ONNX model is loaded.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from pneumocxr.config import Preprocess
from pneumocxr.errors import ConfigError
from pneumocxr.models import count_parameters, to_model_input

__all__ = ["LogitsBackend", "TorchBackend", "resolve_device"]


def resolve_device(requested: str = "auto") -> torch.device:
    """ "auto" = cuda > mps > cpu; an explicit device that is not present is a ConfigError."""
    name = str(requested).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device={requested!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={requested!r} but no CUDA device is visible; use auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={requested!r} but MPS is not available; use auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={requested!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


class LogitsBackend(Protocol):
    """What ``Predictor`` needs from a runtime (module docstring)."""

    runtime: str  # "torch" or "onnx"
    device: torch.device
    channels_last: bool
    model: nn.Module | None  # the torch module (None when the model is not a torch module)
    file_sha256: str | None  # sha256 of the file the backend runs, when it hashed it on loading
    source_sha256: str | None  # sha256 of the checkpoint it was exported from (None: it is that file)

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """(B, S, S) uint8, C-contiguous → (B, n) float32."""
        ...

    def num_parameters(self) -> tuple[int, int]:
        """(total, trainable)."""
        ...

    def describe(self) -> dict[str, Any]:
        """How the model runs, for ``Predictor.describe`` (runtime, precision, threads …)."""
        ...


class TorchBackend:
    """The checkpoint's torch module on ``device`` (moved there, eval mode).

    ``channels_last``: NHWC memory, as training uses: ~15-25 % faster convolutions on CPU
    (measured, VGG16 at 224 px) and on tensor-core GPUs; not on MPS, where support is patchy.
    ``bf16``: run the model under ``torch.autocast(dtype=bfloat16)`` (CPUs with AVX-512 BF16 /
    AMX, and GPUs); logits are returned as float32. Off by default: probabilities move by ~1e-3,
    so the stored threshold was not chosen for it (``bench/inference.py`` reports how much).
    """

    runtime = "torch"
    file_sha256 = None
    source_sha256 = None

    def __init__(
        self,
        model: nn.Module,
        preprocess: Preprocess,
        device: torch.device,
        *,
        channels_last: bool = True,
        bf16: bool = False,
    ):
        self.preprocess = preprocess
        self.device = device
        self.channels_last = channels_last and device.type in ("cpu", "cuda")
        self.bf16 = bool(bf16)
        model = model.to(device).eval()
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), self._autocast():
            batch = torch.from_numpy(pixels).to(self.device)  # (B, S, S) uint8
            x = to_model_input(batch, self.preprocess, channels_last=self.channels_last)  # (B, C, S, S)
            z = self.model(x)  # (B, 1): the positive-class logit; (B, k) for k classes
        return z.float().cpu().numpy()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def num_parameters(self) -> tuple[int, int]:
        return count_parameters(self.model)

    def describe(self) -> dict[str, Any]:
        return {
            "runtime": "torch",
            "precision": "bf16 autocast" if self.bf16 else "fp32",
            "channels_last": self.channels_last,
        }
