"""``load_predictor``: any file pneumocxr writes, loaded as the right predictor.

A training checkpoint becomes a ``Predictor``, an ensemble file (``pneumocxr ensemble create``) an
``EnsemblePredictor``, an exported ``.onnx`` model (``pneumocxr export``) a ``Predictor`` on ONNX
Runtime (``onnx_runtime``); ``tta`` wraps the model(s) in test-time augmentation and ``mc_dropout``
runs N stochastic passes. Every caller loads through here, so the CLI, the API and the PACS worker
cannot disagree on what a file means. Checkpoints are data (``weights_only=True``), never code.

The runtime follows the file: a checkpoint runs on torch, an ONNX file on ONNX Runtime.
``runtime="onnx"`` with a checkpoint is refused rather than exported on the fly: the ONNX file that
answers should be a deliberate artefact whose sha256 every answer names (a hidden cache would not
be), and exporting needs onnx/onnxscript, which a server does not install. ``runtime="torch"`` with
an ONNX file is refused too (it holds no torch weights; its sidecar names the source checkpoint).
"""

from __future__ import annotations

import logging
import os

from pneumocxr.errors import ConfigError
from pneumocxr.inference.ensemble import EnsemblePredictor, TTAModel, is_ensemble_file
from pneumocxr.inference.mc_dropout import with_mc_dropout
from pneumocxr.inference.onnx_runtime import EXPORT_HINT, is_onnx_file, load_onnx_predictor
from pneumocxr.inference.predictor import DEFAULT_BATCH_SIZE, Predictor, PredictorBase
from pneumocxr.models import load_checkpoint

logger = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnx")

__all__ = ["RUNTIMES", "load_predictor"]


def load_predictor(
    path: str | os.PathLike,
    *,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    tta: bool | None = None,
    mc_dropout: int = 0,
    runtime: str = "auto",
    threads: int | None = None,
    bf16: bool = False,
) -> PredictorBase:
    """Load a checkpoint, ensemble or ONNX file onto ``device`` (see the module docstring).

    ``tta``: test-time augmentation (``ensemble.TTAModel``); None = off for a checkpoint, as
    created for an ensemble. ``mc_dropout``: N >= 2 stochastic passes (``mc_dropout``, seed 0).
    ``runtime``: "auto" (the file decides), "torch" or "onnx". ``threads``: ONNX Runtime's
    intra-op threads (None: the cores this process may use). ``bf16``: torch runtime only, bf16
    autocast (``backends.TorchBackend``).
    """
    onnx = _check_runtime(path, runtime, threads=threads, bf16=bf16, tta=tta, mc_dropout=mc_dropout)
    if onnx:
        return load_onnx_predictor(path, device=device, batch_size=batch_size, threads=threads)
    if mc_dropout:
        plain = load_predictor(path, device=device, batch_size=batch_size, tta=tta, bf16=bf16)
        return with_mc_dropout(plain, mc_dropout)
    if is_ensemble_file(path):
        return EnsemblePredictor.from_file(path, device=device, batch_size=batch_size, tta=tta, bf16=bf16)
    model, meta = load_checkpoint(path, map_location="cpu")
    if tta:
        model = TTAModel(model)
    predictor = Predictor(model, meta, device=device, batch_size=batch_size, bf16=bf16)
    predictor.variant = "tta" if tta else ""
    rule = (
        f"threshold {meta.threshold:.4g} on the calibrated probability"
        if predictor.num_classes == 2
        else f"argmax over {', '.join(meta.class_names)}"
    )
    logger.info(
        "loaded %s (%s) on %s: %s, temperature %.4g",
        path,
        meta.model_name,
        predictor.device,
        rule,
        meta.temperature,
    )
    return predictor


def _check_runtime(
    path: str | os.PathLike,
    runtime: str,
    *,
    threads: int | None,
    bf16: bool,
    tta: bool | None,
    mc_dropout: int,
) -> bool:
    """Whether ``path`` runs on ONNX Runtime; ConfigError for a combination that cannot run."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime={runtime!r}; use one of {', '.join(RUNTIMES)}")
    onnx = is_onnx_file(path)
    if runtime == "onnx" and not onnx:
        raise ConfigError(
            f"--runtime onnx needs an exported ONNX model, and {path} is a checkpoint; export it once with "
            f"`{EXPORT_HINT.replace('CHECKPOINT', str(path))}` and pass MODEL.onnx (it is not exported on "
            "the fly, so the file that answers is one you can hash and ship)"
        )
    if runtime == "torch" and onnx:
        raise ConfigError(
            f"--runtime torch with the ONNX model {path}: it holds no torch weights; pass the checkpoint it "
            "was exported from (its sidecar records its sha256), or use --runtime onnx"
        )
    if onnx:
        unsupported = [name for name, on in (("TTA", tta), ("MC-dropout", mc_dropout), ("bf16", bf16)) if on]
        if unsupported:
            raise ConfigError(
                f"{path} is an ONNX model: {', '.join(unsupported)} run(s) on the torch runtime only; pass "
                "the source checkpoint with --runtime torch"
            )
    elif threads is not None:
        raise ConfigError(
            f"threads={threads} sets ONNX Runtime's threads, and {path} runs on torch, whose thread count "
            "is per process (torch.set_num_threads); drop --threads or pass an exported .onnx model"
        )
    return onnx
