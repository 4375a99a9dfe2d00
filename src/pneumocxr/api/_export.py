"""``export_onnx``: a checkpoint as an ONNX model for ONNX Runtime (``pneumocxr export``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

__all__ = ["export_onnx"]


def export_onnx(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    int8: bool = False,
    calibration: Sequence[str | os.PathLike] = (),
    calibration_images: int = 64,
) -> Any:
    """Export a checkpoint to ONNX (``pneumocxr export --format onnx``): ``out`` takes uint8 pixels
    (N, S, S) with the normalisation inside and returns logits; ``out.json`` beside it records the
    preprocessing, classes, threshold and its rule, temperature, the checkpoint's sha256 and a
    parity check against torch. Load it wherever a checkpoint loads (``load_predictor``, ``serve``).

    Args:
        checkpoint: ``best.pt`` or its run folder (an ensemble file is refused: export each member).
        out: the ``.onnx`` file to write.
        int8: static int8 quantisation (QDQ, per-channel weights), calibrated on ``calibration``;
            its probability change is measured and written into the sidecar.
        calibration: image files or folders (needed for ``int8``; otherwise the parity check's images).
        calibration_images: use at most this many of them, spread over the sorted list.

    Returns:
        The ``ExportResult``: ``onnx_path``, ``sidecar_path``, ``onnx_sha256``, ``source_sha256``,
        ``check`` (parity: max |Δp|, decisions agreeing) and ``quantization``.

    Raises:
        ConfigError: ``out`` not named ``*.onnx``, an ensemble file, or ``int8`` without calibration
            images.
        CheckpointError: a missing or unreadable checkpoint.
        ModuleNotFoundError: onnx or onnxscript not installed (``pip install 'pneumocxr[onnx]'``).

    Example:
        >>> made = pneumocxr.export_onnx("runs/cpu_fast", "deploy/cpu_fast.onnx")  # doctest: +SKIP
        >>> made.check["max_abs_probability_difference"] < 1e-4  # doctest: +SKIP
        True
    """
    from pneumocxr.workflows import resolve_checkpoint
    from pneumocxr.workflows.onnx_export import export_onnx as _export_onnx

    return _export_onnx(
        resolve_checkpoint(checkpoint),
        out,
        int8=int8,
        calibration=calibration,
        calibration_limit=calibration_images,
    )
