"""``Predictor``: a checkpoint turned into P(PNEUMONIA) for pixels, dataset records or files.

The one object the CLI (``evaluate``, ``compare``) and the HTTP API use, so that every number a
user sees comes from the same code path:

1. pixels: ``data.cache.decode_record`` (or a ``PreprocessedCache`` hit, the same bytes) gives
   (S, S) uint8 at the checkpoint's ``Preprocess`` — the function the training cache uses;
2. ``models.to_model_input`` (the function training uses): float, channels, mean/std from the
   checkpoint's ``Preprocess``;
3. the model in eval mode under ``torch.inference_mode``, in batches → one logit z per image
   (the runtime is a ``backends.LogitsBackend``: the torch module, or an exported ONNX graph on
   ONNX Runtime — ``onnx_runtime`` — which does step 2 inside the graph);
4. ``probability = sigmoid(z)``; ``calibrated_probability = sigmoid(z / T)`` with the checkpoint's
   temperature T (1.0 when none was fitted);
5. ``prediction = calibrated_probability >= threshold`` with the checkpoint's threshold.

Which probability the threshold applies to: the CALIBRATED one, as ``CheckpointMeta.threshold``
documents. A threshold chosen on validation must therefore be chosen on temperature-scaled
validation probabilities. With T = 1 (or t = 0.5, since sigmoid(z/T) >= 0.5 iff z >= 0) both
readings agree.

Probabilities are computed in float64 from the float32 logits, so they saturate at 1.0 only for
|z| > ~37 rather than ~17: fewer artificial ties in AUC.

A k-class checkpoint (``normal-bacterial-viral``: k logits per image) takes steps 1-3 the same way,
then ``probabilities = softmax(z / T)`` (N, k), ``prediction = argmax`` (the checkpoint's threshold
does not apply), ``label`` = that class's name; ``probability`` / ``calibrated_probability`` are the
raw / calibrated probability of the predicted class. ``PredictionBatch.probabilities`` is (N, k) for
every checkpoint ([1 - p, p] for a binary one), so callers can treat both alike.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pneumocxr.config import Preprocess, to_dict
from pneumocxr.data.cache import PreprocessedCache, decode_record
from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import CheckpointError, ConfigError, DatasetError
from pneumocxr.inference.backends import LogitsBackend, TorchBackend, resolve_device
from pneumocxr.inference.inputs import LoadedInput, dicom_facts, load_input
from pneumocxr.inference.predictions import Prediction, PredictionBatch
from pneumocxr.inference.result import InputSummary, ModelIdentity, PredictionResult
from pneumocxr.inference.scope import ScopePolicy, check_scope
from pneumocxr.labels import SUBLABEL_UNKNOWN
from pneumocxr.models import CheckpointMeta, PneumoModel

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64
CPU_SPEED_BATCH = 16  # throughput batch on CPU: a 64-image VGG16 batch takes most of a minute there


class PredictorBase:
    """What every predictor offers — one checkpoint (``Predictor``), an ensemble, MC-dropout — so a
    caller (CLI, HTTP API, PACS worker) never needs to know which it holds. Subclasses set ``meta``
    and implement ``predict_arrays`` / ``predict_records`` / ``_predict_input``."""

    meta: CheckpointMeta
    variant: str = ""  # how the model is run, for ``identity`` ("tta", "mc_dropout=20" …)

    # ---- what the checkpoint says ---------------------------------------------------------

    @property
    def preprocess(self) -> Preprocess:
        return self.meta.preprocess

    @property
    def threshold(self) -> float:
        return self.meta.threshold

    @property
    def temperature(self) -> float:
        return self.meta.temperature

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta.class_names)

    @property
    def num_classes(self) -> int:
        """2 for a binary (one-logit) checkpoint, k for a k-class one."""
        return len(self.meta.class_names)

    @functools.cached_property
    def identity(self) -> ModelIdentity:
        """The model's name, task, runtime and the sha256 of the file it runs (hashed once, on first
        use; an ONNX model: of the .onnx file, plus the checkpoint it was exported from)."""
        path = Path(self.meta.path) if self.meta.path else None
        runtime, digest, source = self._runtime_identity()
        if digest is None and path is not None and path.is_file():
            digest = file_sha256(path)
        return ModelIdentity(
            name=self.meta.model_name,
            sha256=digest,
            path=str(path) if path else None,
            task=self.meta.task,
            variant=self.variant,
            runtime=runtime,
            source_sha256=source,
        )

    def _runtime_identity(self) -> tuple[str, str | None, str | None]:
        """(runtime, sha256 of the loaded file if already known, source checkpoint's sha256)."""
        return "torch", None, None

    @property
    def threshold_rule(self) -> str:
        """How the stored threshold was chosen ("argmax" for a k-class model)."""
        return threshold_rule_of(self.meta)

    def describe(self) -> dict[str, Any]:
        """Plain facts about the loaded model, for reports and the API's /model endpoint."""
        total, trainable = self.num_parameters
        return {
            "checkpoint": self.meta.path,
            "model_name": self.meta.model_name,
            "model_kwargs": dict(self.meta.model_kwargs),
            "class_names": list(self.meta.class_names),
            "preprocess": to_dict(self.preprocess),
            "task": self.meta.task,
            "threshold": self.threshold,
            "threshold_applies_to": "calibrated_probability" if self.num_classes == 2 else "none (argmax)",
            "temperature": self.temperature,
            "parameters": total,
            "trainable_parameters": trainable,
            "device": str(self.device),
        }

    def _speed_batch(self, batch_size: int | None) -> int:
        """The throughput batch: as given, else CPU_SPEED_BATCH on CPU and the predictor's elsewhere."""
        if batch_size is not None:
            return batch_size
        return CPU_SPEED_BATCH if self.device.type == "cpu" else self.batch_size

    def predict(self, source: Any, *, refuse: Sequence[str] | None = None) -> PredictionResult:
        """One input — path, bytes, 2-D array or pydicom Dataset — to a typed ``PredictionResult``.

        Decoded exactly as the training cache decodes files (``inputs.load_input``), so the answer
        equals what ``evaluate`` says for the same file. Scope checks (``scope``) run first:
        ``refuse`` lists the warning codes that raise ``OutOfScopeError`` instead of being reported
        (None = the default policy: an image smaller than the model input or an inverted film is refused).
        """
        started = time.perf_counter()
        loaded = load_input(source)
        header = loaded.header
        pre = self.preprocess
        square = loaded.square(pre.image_size, pre.resize_mode)  # the model input: polarity is checked on it
        policy = ScopePolicy.of(refuse)
        warnings = check_scope(
            loaded.name, loaded.width, loaded.height, header, pre.image_size, policy, square
        )
        decoded = time.perf_counter()
        batch = self._predict_input(loaded)
        done = time.perf_counter()
        one = batch[0]
        raw = batch.raw_probabilities[0]
        spread = getattr(batch, "spread", None)
        return PredictionResult(
            label=one.label,
            decision=one.prediction,
            class_names=self.class_names,
            probabilities=one.probabilities,
            raw_probabilities={name: float(v) for name, v in zip(self.class_names, raw)},
            threshold=self.threshold if self.num_classes == 2 else None,
            threshold_rule=self.threshold_rule,
            model=self.identity,
            input=InputSummary(
                format=loaded.format,
                width=loaded.width,
                height=loaded.height,
                size_bytes=loaded.size_bytes,
                sha256=loaded.sha256,
                dicom=dicom_facts(header),
            ),
            warnings=warnings,
            timings_ms={
                "decode": 1000 * (decoded - started),
                "model": 1000 * (done - decoded),
                "total": 1000 * (done - started),
            },
            spread=None if spread is None else float(spread[0]),
        )

    def _predict_input(self, loaded: LoadedInput) -> PredictionBatch:
        """A one-image batch for a loaded input (decoded at this predictor's preprocessing)."""
        pre = self.preprocess
        return self.predict_arrays(loaded.square(pre.image_size, pre.resize_mode)[None])

    def predict_arrays(self, pixels: np.ndarray) -> PredictionBatch:
        raise NotImplementedError

    def predict_records(
        self, records: Sequence[ImageRecord], *, cache: PreprocessedCache | None = None
    ) -> PredictionBatch:
        raise NotImplementedError


class Predictor(PredictorBase):
    """A loaded checkpoint on one device. Takes ownership of ``model`` (moved to the device, eval
    mode), or runs a ready ``LogitsBackend`` (an ONNX model: ``onnx_runtime.load_onnx_predictor``;
    ``device``, ``channels_last`` and ``bf16`` are then the backend's). Holds no per-call state, so
    calls may come from worker threads (the API runs them off its event loop).

    Made by ``load_predictor`` (which also builds ensembles, TTA and MC-dropout wrappers with the
    same interface), not usually by hand. ``predict(source)`` takes a path, bytes, a 2-D array or a
    pydicom Dataset and returns a ``PredictionResult``; ``predict_records`` scores a dataset's
    records in batches; ``class_names``, ``threshold``, ``temperature`` and ``meta`` describe it.

    Example:
        >>> predictor = pneumocxr.load_predictor("runs/cpu_fast/best.pt")  # doctest: +SKIP
        >>> result = predictor.predict("film.jpeg")  # doctest: +SKIP
        >>> result.label, result.probabilities["PNEUMONIA"], result.warnings  # doctest: +SKIP
        ('PNEUMONIA', 0.97, ())
    """

    def __init__(
        self,
        model: PneumoModel | LogitsBackend,
        meta: CheckpointMeta,
        *,
        device: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        channels_last: bool = True,
        bf16: bool = False,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r}; use a positive whole number (e.g. 64)")
        if len(meta.class_names) < 2:
            raise CheckpointError(f"{meta.path}: has classes {list(meta.class_names)}; need at least two")
        self.meta = meta
        self.batch_size = batch_size
        if isinstance(model, torch.nn.Module):
            model = TorchBackend(
                model, meta.preprocess, resolve_device(device), channels_last=channels_last, bf16=bf16
            )
        self.backend: LogitsBackend = model
        self.device = model.device
        self.channels_last = model.channels_last

    @property
    def model(self) -> torch.nn.Module | None:
        """The torch module (None for a backend that runs no torch module, e.g. ONNX Runtime)."""
        return self.backend.model

    @property
    def runtime(self) -> str:
        """ "torch" or "onnx"."""
        return self.backend.runtime

    @property
    def num_parameters(self) -> tuple[int, int]:
        """(total, trainable) as saved (trainable = not frozen at save time)."""
        return self.backend.num_parameters()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.backend.describe()}

    def _runtime_identity(self) -> tuple[str, str | None, str | None]:
        return self.backend.runtime, self.backend.file_sha256, self.backend.source_sha256

    # ---- prediction ------------------------------------------------------------------------

    def predict_arrays(self, pixels: np.ndarray) -> PredictionBatch:
        """(N, S, S) or (S, S) uint8 at the checkpoint's image size → N predictions."""
        array = self._check_pixels(pixels)
        return self._batch(self._logits(array))

    def predict_records(
        self, records: Sequence[ImageRecord], *, cache: PreprocessedCache | None = None
    ) -> PredictionBatch:
        """Predictions for dataset records in order. With ``cache``, pixels come from it (decoding and
        storing misses in parallel); without, each batch is decoded by ``decode_record`` here.
        Either way a bad image raises (UnsupportedImageError / CacheDecodeError), never skipped."""
        size, mode = self.preprocess.image_size, self.preprocess.resize_mode
        if not records:
            return self._batch(np.empty(0))
        if cache is not None:
            if (cache.image_size, cache.resize_mode) != (size, mode):
                raise ConfigError(
                    f"the cache holds {cache.image_size}px {cache.resize_mode} images but the checkpoint "
                    f"needs {size}px {mode}; pass a cache built for this checkpoint's preprocess"
                )
            return self._batch(self._logits(cache.load(records)))
        parts = []
        for start in range(0, len(records), self.batch_size):
            chunk = records[start : start + self.batch_size]
            pixels = np.stack([decode_record(r, size, mode) for r in chunk])  # (B, S, S) uint8
            parts.append(self._logits(pixels))
        return self._batch(np.concatenate(parts))

    def predict_file(self, path: str | os.PathLike) -> Prediction:
        """One JPEG, PNG or DICOM file, decoded exactly as the training cache decodes images."""
        record = file_record(path)
        pixels = decode_record(record, self.preprocess.image_size, self.preprocess.resize_mode)
        return self.predict_arrays(pixels[None])[0]

    def measure_throughput(
        self, *, seconds: float = 2.0, batch_size: int | None = None, seed: int = 0
    ) -> dict[str, Any]:
        """Images per second of the model step (uint8 pixels → logits, decoding excluded), timed
        after one warm-up batch over whole batches until ``seconds`` have passed (at least one)."""
        batch_size = self._speed_batch(batch_size)
        size = self.preprocess.image_size
        pixels = np.random.default_rng(seed).integers(0, 256, (batch_size, size, size), dtype=np.uint8)
        # _logits ends with a copy to host: synchronises the device
        return time_steps(lambda: self._logits(pixels), batch_size, seconds, self.device)

    # ---- internals -------------------------------------------------------------------------

    def _check_pixels(self, pixels: np.ndarray) -> np.ndarray:
        array = np.asarray(pixels)
        if array.ndim == 2:
            array = array[None]  # one image (S, S) → (1, S, S)
        size = self.preprocess.image_size
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[1:] != (size, size):
            raise DatasetError(
                f"predict_arrays needs uint8 images of shape (N, {size}, {size}) (this checkpoint's "
                f"input size); got {array.dtype} {array.shape}. Use predict_file for image files"
            )
        return array

    def _chunks(self, pixels: np.ndarray) -> Iterator[np.ndarray]:
        for start in range(0, len(pixels), self.batch_size):
            yield np.ascontiguousarray(pixels[start : start + self.batch_size])

    def _logits(self, pixels: np.ndarray) -> np.ndarray:
        """(N, S, S) uint8 → (N,) float32 logits (k-class checkpoint: (N, k)), batch by batch."""
        k = self.num_classes
        out = np.empty(len(pixels) if k == 2 else (len(pixels), k), dtype=np.float32)
        done = 0
        for chunk in self._chunks(pixels):
            z = self.backend.logits(chunk)  # (B, 1): the PNEUMONIA logit; (B, k) for k classes
            out[done : done + len(chunk)] = z.reshape(-1) if k == 2 else z
            done += len(chunk)
        return out

    def _batch(self, logits: np.ndarray) -> PredictionBatch:
        return PredictionBatch.from_logits(logits, self.temperature, self.threshold, self.class_names)


def threshold_rule_of(meta: CheckpointMeta) -> str:
    """How a checkpoint's stored threshold was chosen ("argmax" for a k-class model)."""
    if len(meta.class_names) > 2:
        return "argmax"
    operating = meta.extra.get("operating_point") or {}
    return str(
        operating.get("threshold_rule")
        or operating.get("method")
        or meta.extra.get("threshold_rule")
        or "stored"
    )


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | os.PathLike) -> ImageRecord:
    """A user's image file as an unlabelled record, so it is decoded by the cache's ``decode_record``."""
    return ImageRecord(Path(path), label=-1, split="", patient_id="", sublabel=SUBLABEL_UNKNOWN)


def time_steps(
    step: Callable[[], object], batch_size: int, seconds: float, device: torch.device
) -> dict[str, Any]:
    """Images per second of ``step`` (one batch of ``batch_size`` images), timed after one warm-up
    step (allocator, cuDNN autotuning, lazy init) over whole steps until ``seconds`` have passed
    (at least one). ``step`` must synchronise the device (e.g. end with a copy to host)."""
    step()
    images, start = 0, time.perf_counter()
    while True:
        step()
        images += batch_size
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return {
        "images_per_s": images / elapsed,
        "device": device_description(device),
        "batch_size": batch_size,
        "images_timed": images,
        "seconds": elapsed,
    }


def device_description(device: torch.device) -> str:
    """A device in words for speed tables, e.g. "cuda (NVIDIA H100 80GB HBM3)" or "cpu (2 threads)"."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type
