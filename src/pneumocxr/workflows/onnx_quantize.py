"""Static int8 quantisation of an exported graph, calibrated on the user's own images.

ONNX Runtime's ``quantize_static`` in QDQ form: weights int8, symmetric, per output channel;
activations uint8, asymmetric, with ranges from MinMax calibration over the calibration images
(decoded exactly as prediction decodes them). Why static: a convolution runs in int8 only when
its input's scale is known ahead; dynamic quantisation computes activation ranges per call and
left EfficientNet-Lite0 ~10× slower than fp32 (4 vs 38 img/s, batch 32, 2 cores) and
less accurate here. Why MinMax: Percentile, Entropy and
leaving the depthwise or the first/last layers in fp32 moved Lite0's mean |Δp| by < 0.01 either
way on 200 training films, so the simplest, deterministic method stays.

The graph first goes through ORT's ``quant_pre_process`` (symbolic shape inference and the
optimisations the quantiser expects). The pixels input stays uint8: the normalisation in the graph
is quantised like any other op, so the file keeps the same signature as its fp32 twin.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumocxr.config import Preprocess
from pneumocxr.data.image_files import collect_inputs
from pneumocxr.errors import ConfigError, UnsupportedImageError
from pneumocxr.inference.inputs import load_input
from pneumocxr.inference.onnx_runtime import INPUT_NAME

logger = logging.getLogger(__name__)

CALIBRATION_BATCH = 8

__all__ = ["calibration_pixels", "quantize_int8"]


def calibration_pixels(inputs: Sequence[str | os.PathLike], preprocess: Preprocess, limit: int) -> np.ndarray:
    """(M, S, S) uint8: at most ``limit`` of the images under ``inputs``, spread evenly over the
    sorted list (a folder of NORMAL then PNEUMONIA gives both), decoded as prediction decodes them.
    Unreadable files are skipped with a warning; none readable is a ConfigError."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"calibration_limit={limit!r}; use a positive whole number (e.g. 64)")
    files = collect_inputs(inputs)
    if len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    squares = []
    for path in files:
        try:
            squares.append(load_input(path).square(preprocess.image_size, preprocess.resize_mode))
        except UnsupportedImageError as exc:
            logger.warning("calibration: skipping %s: %s", path, exc.reason)
    if not squares:
        raise ConfigError(
            f"--calibration {', '.join(map(str, inputs))}: no readable image among {len(files)} files"
        )
    return np.stack(squares)


def quantize_int8(fp32: Path, out: Path, pixels: np.ndarray) -> tuple[Path, dict[str, Any]]:
    """``fp32`` → ``out`` statically quantised on ``pixels`` (N, S, S) uint8; returns (out, what
    was done, for the sidecar)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                {INPUT_NAME: np.ascontiguousarray(pixels[i : i + CALIBRATION_BATCH])}
                for i in range(0, len(pixels), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    prepared = out.with_name(out.stem + ".pre.onnx")
    quant_pre_process(str(fp32), str(prepared))
    quantize_static(
        str(prepared),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return out, {
        "method": "static QDQ",
        "tool": "onnxruntime.quantization.quantize_static",
        "weights": "int8, symmetric, per output channel",
        "activations": "uint8, asymmetric, per tensor",
        "calibration": "MinMax",
        "calibration_images": len(pixels),
    }
