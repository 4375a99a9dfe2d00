"""ONNX Runtime backend: a ``Predictor`` over a graph written by ``pneumocxr export --format onnx``.

An exported model is two files, ``model.onnx`` and its sidecar ``model.onnx.json``:

- the graph takes ``pixels``: (N, S, S) **uint8** squares, exactly what ``Predictor.predict_arrays``
  takes, and does the normalisation itself (÷255, gray repeated to C channels, (x − mean) / std:
  ``models.to_model_input`` traced into the graph), so the file is self-contained for any ONNX
  user; it returns ``logits`` (N, 1) for a binary checkpoint, (N, k) for k classes. N is dynamic.
- the sidecar (JSON) carries what turns logits into a decision and what the model is: preprocess
  (the decoder must square the image the same way), class names, task, threshold and its rule,
  temperature, model name and kwargs, the source checkpoint's sha256, the exporter and opset,
  the pneumocxr version, the quantisation (if any), a parity check made at export time, the
  checkpoint's metrics/config/extra record (for provenance checks), and the ONNX file's own
  sha256 — checked on every load, so a sidecar never describes another graph.

Decoding, scope checks, temperature, threshold and the typed result are the ``Predictor``'s, the
same as for the torch runtime: only the logits come from ONNX Runtime. The session runs on the CPU
with ``intra_op_num_threads = threads`` (default: the cores this process may use) and
``inter_op_num_threads = 1``, full graph optimisation, never environment variables: ORT ignores
OMP_NUM_THREADS, and several processes each taking every core oversubscribe a small CPU, so a
multi-worker server passes cores / workers.

onnxruntime is imported only when an ONNX model is loaded: ``import pneumocxr.inference`` stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pneumocxr.config import Preprocess, from_dict
from pneumocxr.errors import CheckpointError, ConfigError, PneumoCXRError
from pneumocxr.inference.predictor import DEFAULT_BATCH_SIZE, Predictor
from pneumocxr.models.checkpoint import meta_from_payload

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = "pneumocxr.onnx"
SIDECAR_VERSION = 1
INPUT_NAME = "pixels"  # (N, S, S) uint8
OUTPUT_NAME = "logits"  # (N, 1) or (N, k) float32
EXPORT_HINT = "pneumocxr export --checkpoint CHECKPOINT --format onnx --out MODEL.onnx"

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "SIDECAR_FORMAT",
    "SIDECAR_VERSION",
    "OnnxBackend",
    "default_threads",
    "is_onnx_file",
    "load_onnx_predictor",
    "read_sidecar",
    "sidecar_path",
]


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """``model.onnx`` → ``model.onnx.json``."""
    return Path(f"{os.fspath(onnx_path)}.json")


def is_onnx_file(path: str | os.PathLike) -> bool:
    """A ``.onnx`` name, or content that starts like a serialised ONNX ModelProto (field 1,
    ``ir_version``, a varint: byte 0x08). Checkpoints are zip files ("PK"), so they never match."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return True
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        return fh.read(1) == b"\x08"


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def read_sidecar(onnx_path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of ``onnx_path``, checked for format; CheckpointError naming the fix otherwise."""
    side = sidecar_path(onnx_path)
    if not side.is_file():
        raise CheckpointError(
            f"{onnx_path} has no sidecar {side.name} beside it: it carries the preprocessing, class names, "
            f"threshold and temperature the graph needs. Keep the two files together, or export again: "
            f"{EXPORT_HINT}"
        )
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{side}: not a readable sidecar ({exc}); export again: {EXPORT_HINT}"
        ) from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise CheckpointError(f"{side}: not a pneumocxr ONNX sidecar (no format {SIDECAR_FORMAT!r})")
    if int(data.get("format_version", 0)) > SIDECAR_VERSION:
        raise CheckpointError(
            f"{side}: sidecar format {data['format_version']} is newer than this pneumocxr understands "
            f"({SIDECAR_VERSION}); upgrade pneumocxr"
        )
    return data


def _meta(sidecar: dict[str, Any], where: str):
    """The ``CheckpointMeta`` a sidecar describes (the same checks as a checkpoint's)."""
    record = sidecar.get("checkpoint_record") or {}
    source = sidecar.get("source_checkpoint") or {}
    try:
        payload = {
            **record,
            "class_names": sidecar["class_names"],
            "task": sidecar["task"],
            "threshold": sidecar["threshold"],
            "temperature": sidecar["temperature"],
            "versions": source.get("versions", {}),
            "created": source.get("created", ""),
        }
        preprocess = from_dict(Preprocess, sidecar["preprocess"], "preprocess")
        return meta_from_payload(
            payload,
            where,
            model_name=str(sidecar["model_name"]),
            model_kwargs=dict(sidecar["model_kwargs"]),
            preprocess=preprocess,
        )
    except KeyError as exc:
        raise CheckpointError(f"{where}: its sidecar lacks {exc}; export again: {EXPORT_HINT}") from None
    except ConfigError as exc:
        raise CheckpointError(f"{where}: sidecar: {exc}") from None


class OnnxBackend:
    """``logits`` from an ONNX Runtime CPU session over the graph's bytes (module docstring)."""

    runtime = "onnx"
    model = None
    channels_last = False

    def __init__(
        self, content: bytes, *, where: str, sidecar: dict[str, Any], file_sha256: str, threads: int
    ):
        import onnxruntime as ort  # here, not at module load: only an ONNX model pays for it

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # InvalidProtobuf, Fail, NotImplemented … from the C++ side
            first = (str(exc).strip().splitlines() or ["no detail"])[0][:200]
            raise CheckpointError(
                f"{where}: ONNX Runtime cannot load it ({type(exc).__name__}: {first}); "
                f"is it an ONNX model? Export one with: {EXPORT_HINT}"
            ) from None
        self.device = torch.device("cpu")
        self.threads = threads
        self.file_sha256 = file_sha256
        self.source_sha256 = (sidecar.get("source_checkpoint") or {}).get("sha256")
        self.sidecar = sidecar
        self._check_signature(where)

    def _check_signature(self, where: str) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        size = int(self.sidecar["preprocess"]["image_size"])
        outputs_expected = len(self.sidecar["class_names"])
        outputs_expected = 1 if outputs_expected == 2 else outputs_expected
        shape_in = list(inputs[0].shape) if len(inputs) == 1 else []
        shape_out = list(outputs[0].shape) if len(outputs) == 1 else []
        if (
            len(inputs) != 1
            or inputs[0].type != "tensor(uint8)"
            or shape_in[1:] != [size, size]
            or len(shape_out) != 2
            or shape_out[1] != outputs_expected
        ):
            got = (
                ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
                + " → "
                + ", ".join(f"{o.name} {o.type} {o.shape}" for o in outputs)
            )
            raise CheckpointError(
                f"{where}: the graph takes/returns {got}, not uint8 pixels (N, {size}, {size}) → logits "
                f"(N, {outputs_expected}) as its sidecar says; export again: {EXPORT_HINT}"
            )
        self.input_name, self.output_name = inputs[0].name, outputs[0].name

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """(B, S, S) uint8 → (B, n) float32."""
        return self.session.run([self.output_name], {self.input_name: pixels})[0]

    def num_parameters(self) -> tuple[int, int]:
        counts = self.sidecar.get("parameters") or {}
        return int(counts.get("total", 0)), int(counts.get("trainable", 0))

    def describe(self) -> dict[str, Any]:
        exporter = self.sidecar.get("exporter") or {}
        quantization = self.sidecar.get("quantization")
        return {
            "runtime": "onnx",
            "precision": "int8 (" + quantization["method"] + ")" if quantization else "fp32",
            "onnx_sha256": self.file_sha256,
            "source_checkpoint_sha256": self.source_sha256,
            "exporter": exporter.get("name"),
            "opset": exporter.get("opset"),
            "threads": self.threads,
            "providers": list(self.session.get_providers()),
        }


def load_onnx_predictor(
    path: str | os.PathLike,
    *,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
) -> Predictor:
    """A ``Predictor`` over ``path`` and its sidecar on the CPU (module docstring).

    ``threads``: ORT intra-op threads; None = ``default_threads()``. ``device``: "auto" or "cpu"
    (this backend runs ONNX Runtime's CPU provider).
    """
    path = Path(path)
    if str(device).strip().lower() not in ("auto", "cpu"):
        raise ConfigError(
            f"device={device!r} with the ONNX runtime: it runs on the CPU here; use --device cpu (or auto), "
            "or --runtime torch with the source checkpoint for a GPU"
        )
    if threads is None:
        threads = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads={threads!r}; use a positive whole number (e.g. 2)")
    if not path.is_file():
        raise CheckpointError(f"ONNX model {path} not found; export one with: {EXPORT_HINT}")
    sidecar = read_sidecar(path)
    content = path.read_bytes()  # hashed and loaded from the same bytes
    digest = hashlib.sha256(content).hexdigest()
    if sidecar.get("onnx_sha256") != digest:
        raise CheckpointError(
            f"{path}: sha256 {digest[:12]}… does not match its sidecar "
            f"({str(sidecar.get('onnx_sha256'))[:12]}…): "
            f"the graph was replaced or edited after export, or the sidecar belongs to another file; "
            f"export again: {EXPORT_HINT}"
        )
    meta = _meta(sidecar, str(path))
    try:
        backend = OnnxBackend(content, where=str(path), sidecar=sidecar, file_sha256=digest, threads=threads)
    except PneumoCXRError:
        raise
    except (KeyError, TypeError, ValueError) as exc:  # a sidecar with fields of the wrong shape
        raise CheckpointError(
            f"{path}: sidecar field {exc} is malformed; export again: {EXPORT_HINT}"
        ) from None
    logger.info(
        "loaded ONNX model %s (%s, from checkpoint %s…) on ONNX Runtime, %d thread(s)",
        path,
        meta.model_name,
        str(backend.source_sha256)[:12],
        threads,
    )
    return Predictor(backend, meta, batch_size=batch_size)
