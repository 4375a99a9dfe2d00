"""``export_onnx``: a checkpoint as a self-contained ONNX model plus its sidecar (``pneumocxr export``).

What is written, and why it looks like this, is in ``inference.onnx_runtime`` (the side that reads
it). Here:

- **Exporter**: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript), opset
  ``OPSET``. The TorchScript exporter is deprecated since torch 2.9 and warns on every call; the
  dynamo one is torch's maintained path, gives a dynamic batch axis from ``dynamic_shapes`` and
  runs onnxscript's graph optimiser. Both gave the same graph numerically on Lite0 (max |Δ logit|
  2e-9 against torch), so the choice is about maintenance; the dynamo export takes ~10 s for Lite0.
  Weights are stored inside the one file (``external_data=False``): models here are far below
  protobuf's 2 GB limit, and one file is one sha256.
- **Graph input**: uint8 pixels (N, S, S); ``models.to_model_input`` — the function training uses —
  is traced into the graph, so the file needs nothing but the square image.
- **Checks**: ``onnx.checker.check_model(full_check=True)``, then the written graph is run by the
  same ``OnnxBackend`` that serves it against the torch model on check images (the calibration
  images when given, else seeded synthetic ones): the max |Δp| and the decision agreement go into
  the sidecar, and an fp32 graph further than ``FP32_TOLERANCE`` from torch is refused.
- **int8** (``int8=True``): static quantisation (``onnx_quantize``) calibrated on the user's images;
  convolutions need static activation scales to run in int8 at all (dynamic quantisation left
  Lite0 ~10× slower than fp32 here). Its probability change is measured and recorded, never
  assumed small.
- **Refused**: ensemble files (members may take different inputs and are combined after their own
  calibration: export each member's checkpoint), and TTA / MC-dropout, which are runtime choices
  of the torch backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pneumocxr._version import __version__
from pneumocxr.config import Preprocess, to_dict
from pneumocxr.errors import CheckpointError, ConfigError
from pneumocxr.inference.onnx_runtime import (
    INPUT_NAME,
    OUTPUT_NAME,
    SIDECAR_FORMAT,
    SIDECAR_VERSION,
    OnnxBackend,
    sidecar_path,
)
from pneumocxr.inference.predictor import Predictor, PredictorBase, file_sha256, threshold_rule_of
from pneumocxr.models import CheckpointMeta, count_parameters, load_checkpoint, to_model_input
from pneumocxr.models.ensemble_file import is_ensemble_file
from pneumocxr.workflows.onnx_quantize import calibration_pixels, quantize_int8

logger = logging.getLogger(__name__)

OPSET = 20
EXPORTER = "torch.onnx.export(dynamo=True)"
FP32_TOLERANCE = 1e-4  # max |Δ calibrated probability| an fp32 graph may differ from torch by
CHECK_IMAGES = 16  # synthetic check images when no calibration images are given

__all__ = ["OPSET", "ExportResult", "PixelInputModel", "export_onnx"]


class PixelInputModel(nn.Module):
    """(N, S, S) uint8 → ``model``'s logits, normalised by ``to_model_input`` as training does."""

    def __init__(self, model: nn.Module, preprocess: Preprocess):
        super().__init__()
        self.model = model
        self.preprocess = preprocess  # a plain attribute: not part of the state_dict

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(to_model_input(pixels, self.preprocess))  # (N, 1) or (N, k)


@dataclass(frozen=True)
class ExportResult:
    """What ``export_onnx`` wrote."""

    onnx_path: Path
    sidecar_path: Path
    onnx_sha256: str
    source_sha256: str
    check: dict[str, Any]  # the parity check against torch (also in the sidecar)
    quantization: dict[str, Any] | None


def export_onnx(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    int8: bool = False,
    calibration: Sequence[str | os.PathLike] = (),
    calibration_limit: int = 64,
    opset: int = OPSET,
) -> ExportResult:
    """Export ``checkpoint`` to ``out`` (a ``.onnx`` path) and ``out.json`` (module docstring).

    ``calibration``: image files or folders (needed for ``int8``; otherwise they serve as the check
    images); at most ``calibration_limit`` of them are used, evenly spread over the sorted list.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {out}: name the ONNX file *.onnx (its sidecar is written beside it)")
    if is_ensemble_file(checkpoint):
        raise ConfigError(
            f"{checkpoint} is an ensemble file: its members may take different inputs and are combined "
            "after their own calibration, so it is not one graph. Export each member's checkpoint on its "
            "own (`pneumocxr ensemble show` names them)"
        )
    if int8 and not calibration:
        raise ConfigError(
            "--int8 needs --calibration IMAGE_OR_FOLDER: static int8 quantisation measures activation "
            "ranges on a few dozen representative films (e.g. part of your training folder)"
        )
    model, meta = load_checkpoint(checkpoint, map_location="cpu")
    source_sha = file_sha256(checkpoint)
    pixels = (
        calibration_pixels(calibration, meta.preprocess, calibration_limit)
        if calibration
        else synthetic_pixels(meta.preprocess.image_size, CHECK_IMAGES)
    )  # (M, S, S) uint8
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pneumocxr-export-", dir=out.parent) as tmp:
        graph = Path(tmp) / "fp32.onnx"
        export_graph(model, meta.preprocess, graph, opset=opset)
        quantization = None
        if int8:
            graph, quantization = quantize_int8(graph, Path(tmp) / "int8.onnx", pixels)
        content = graph.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    sidecar = build_sidecar(meta, model, out.name, digest, source_sha, str(checkpoint), opset, quantization)
    torch_predictor = Predictor(model, meta, device="cpu")
    check = parity_check(torch_predictor, content, sidecar, pixels, str(out))
    sidecar["export_check"] = check
    worst = check["max_abs_probability_difference"]
    if quantization is None and worst > FP32_TOLERANCE:
        raise CheckpointError(
            f"the exported graph of {checkpoint} differs from torch by {worst:.2e} in probability "
            f"(> {FP32_TOLERANCE:g}); not written. This is an exporter problem: please report it with the "
            "model name"
        )
    _write_atomic(out, content)
    side = sidecar_path(out)
    _write_atomic(side, (json.dumps(sidecar, indent=2, default=_jsonable) + "\n").encode("utf-8"))
    logger.info("exported %s → %s (sha256 %s…), sidecar %s", checkpoint, out, digest[:12], side)
    return ExportResult(out, side, digest, source_sha, check, quantization)


def export_graph(model: nn.Module, preprocess: Preprocess, path: Path, *, opset: int = OPSET) -> None:
    """The fp32 graph of ``PixelInputModel(model)`` at ``path``, dynamic batch, checked by onnx."""
    import onnx

    size = preprocess.image_size
    wrapper = PixelInputModel(model.eval(), preprocess).eval()
    example = torch.zeros(2, size, size, dtype=torch.uint8)  # batch 2: a batch of 1 would be specialised
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet_loggers("onnxscript", "onnx_ir"):  # their INFO lines narrate every graph pass
            torch.onnx.export(
                wrapper,
                (example,),
                str(path),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # torch.export / onnxscript failures are long; their first line names the op
        first = (str(exc).strip().splitlines() or ["no detail"])[0][:300]
        raise CheckpointError(f"torch.onnx could not export {type(model).__name__}: {first}") from exc
    onnx.checker.check_model(str(path), full_check=True)


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """The named loggers at WARNING for the block, then back to their own levels."""
    loggers = [logging.getLogger(name) for name in names]
    before = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        yield
    finally:
        for lg, level in zip(loggers, before):
            lg.setLevel(level)


def synthetic_pixels(size: int, n: int, seed: int = 0) -> np.ndarray:
    """(n, size, size) uint8 check images: seeded noise, gradients and bright blobs on dark ground,
    so that logits spread (a constant image tests little)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    images = []
    for i in range(n):
        if i % 3 == 0:
            image = rng.integers(0, 256, (size, size))
        elif i % 3 == 1:
            image = 255 * (rng.uniform() * xx + rng.uniform() * yy) / 2
        else:
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.4)
            image = 40 + 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(images)


def parity_check(
    torch_predictor: PredictorBase, content: bytes, sidecar: dict[str, Any], pixels: np.ndarray, where: str
) -> dict[str, Any]:
    """The graph (run by ``OnnxBackend``, as it will be served) against torch on ``pixels``."""
    backend = OnnxBackend(
        content, where=where, sidecar=sidecar, file_sha256=sidecar["onnx_sha256"], threads=1
    )
    onnx_predictor = Predictor(backend, torch_predictor.meta, batch_size=16)
    a, b = torch_predictor.predict_arrays(pixels), onnx_predictor.predict_arrays(pixels)
    difference = np.abs(a.probabilities - b.probabilities)  # (M, k) calibrated
    return {
        "images": len(pixels),
        "images_were": "calibration images" if sidecar.get("quantization") else "check images",
        "max_abs_probability_difference": float(difference.max()),
        "mean_abs_probability_difference": float(difference.mean()),
        "max_abs_logit_difference": float(np.abs(a.logits - b.logits).max()),
        "decisions_agree": int((a.prediction == b.prediction).sum()),
    }


def build_sidecar(
    meta: CheckpointMeta,
    model: nn.Module,
    onnx_name: str,
    onnx_sha256: str,
    source_sha256: str,
    source_path: str,
    opset: int,
    quantization: dict[str, Any] | None,
) -> dict[str, Any]:
    """The sidecar's content (``inference.onnx_runtime`` documents it) before the parity check."""
    total, trainable = count_parameters(model)
    binary = len(meta.class_names) == 2
    size = meta.preprocess.image_size
    return {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "onnx_file": onnx_name,
        "onnx_sha256": onnx_sha256,
        "graph": {
            "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", size, size]},
            "output": {
                "name": OUTPUT_NAME,
                "dtype": "float32",
                "shape": ["batch", 1 if binary else len(meta.class_names)],
            },
            "inside": "pixels / 255 → repeated to preprocess.channels → (x - mean) / std → model → logits",
        },
        "preprocess": to_dict(meta.preprocess),
        "class_names": list(meta.class_names),
        "task": meta.task,
        "threshold": meta.threshold,  # as the checkpoint stores it (a k-class model decides by argmax)
        "threshold_rule": threshold_rule_of(meta),
        "threshold_applies_to": "sigmoid(logit / temperature)" if binary else "none (argmax)",
        "temperature": meta.temperature,
        "model_name": meta.model_name,
        "model_kwargs": dict(meta.model_kwargs),
        "parameters": {"total": total, "trainable": trainable},
        "source_checkpoint": {
            "path": source_path,
            "sha256": source_sha256,
            "created": meta.created,
            "versions": dict(meta.versions),
        },
        "exporter": {
            "name": EXPORTER,
            "opset": opset,
            **_versions("torch", "onnx", "onnxscript", "onnxruntime"),
        },
        "quantization": quantization,
        "pneumocxr_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint_record": {"metrics": meta.metrics, "config": meta.config, "extra": meta.extra},
    }


def _versions(*names: str) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _jsonable(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself: tensors and arrays as lists, anything else as text."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _write_atomic(path: Path, content: bytes) -> None:
    """Temp file beside ``path``, then ``os.replace``: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
