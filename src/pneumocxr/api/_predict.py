"""``load_predictor`` / ``Predictor``: the prediction core that ``pneumocxr predict``, the HTTP API
and the PACS worker stand on (``pneumocxr.inference``: torch and numpy only)."""

from __future__ import annotations

import os
from pathlib import Path

from pneumocxr.inference import PredictionResult, Predictor, PredictorBase
from pneumocxr.inference import load_predictor as _load_predictor
from pneumocxr.inference.predictor import DEFAULT_BATCH_SIZE

__all__ = ["PredictionResult", "Predictor", "load_predictor"]


def load_predictor(
    model: str | os.PathLike,
    *,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    tta: bool | None = None,
    mc_dropout: int = 0,
    runtime: str = "auto",
    threads: int | None = None,
) -> PredictorBase:
    """Load a model for prediction: a checkpoint, its run folder, an ensemble file or an exported
    ``.onnx`` model (what ``pneumocxr predict --checkpoint`` loads).

    Args:
        model: ``best.pt`` (or the run folder holding it), an ensemble file, or a ``.onnx`` export.
        device: auto (cuda > mps > cpu), cpu, cuda, cuda:N.
        batch_size: images per forward pass in ``predict_records``.
        tta: test-time augmentation (None: off for a checkpoint, as created for an ensemble).
        mc_dropout: N >= 2 stochastic passes with dropout on; ``spread`` then says how much they differ.
        runtime: auto (the file decides), torch or onnx. threads: ONNX Runtime's intra-op threads.

    Returns:
        A predictor (``Predictor``, or an ensemble / MC-dropout wrapper with the same interface):
        ``predict(path | bytes | array | pydicom.Dataset)`` → ``PredictionResult``.

    Raises:
        CheckpointError: the file is missing, not a pneumocxr model, or a run folder without best.pt.
        ConfigError: a bad option (e.g. runtime="onnx" for a .pt file: export it first).

    Example:
        >>> predictor = pneumocxr.load_predictor("runs/cpu_fast")  # doctest: +SKIP
        >>> predictor.predict("film.jpeg").label  # doctest: +SKIP
        'PNEUMONIA'
    """
    path = Path(model).expanduser()
    if path.is_dir():  # a run folder means its best.pt, as everywhere else
        from pneumocxr.workflows import resolve_checkpoint

        path = resolve_checkpoint(path)
    return _load_predictor(
        path,
        device=device,
        batch_size=batch_size,
        tta=tta,
        mc_dropout=mc_dropout,
        runtime=runtime,
        threads=threads,
    )
