"""Which runtime answers: ONNX Runtime by default, torch where ONNX cannot.

``--runtime onnx`` (the default) with a training checkpoint exports it once to ONNX
(``workflows.onnx_export``, fp32, parity-checked against torch at export) into a cache beside the
audit database, named by the checkpoint's sha256, and serves that file: on 2 CPU cores ORT fp32 ran
Lite0 at p50 17 ms against torch eager's 50 ms (docs/RESULTS.md, "Inference speed"). Grad-CAM needs
gradients, so ``/v1/explain`` (and only it) loads the torch checkpoint, on its first use.
Ensembles, MC-dropout and TTA are not one graph: they are served by torch, and the log says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from pneumocxr.inference import PredictorBase, load_predictor
from pneumocxr.inference.predictor import file_sha256
from pneumocxr.models.ensemble_file import is_ensemble_file
from pneumocxr.serving.settings import ServeSettings

logger = logging.getLogger(__name__)


def model_path(settings: ServeSettings) -> Path:
    """--model as a file: a run folder means its best.pt."""
    from pneumocxr.workflows import resolve_checkpoint

    return Path(resolve_checkpoint(settings.model))


def load_for_serving(
    settings: ServeSettings, cache_dir: Path
) -> tuple[PredictorBase, Callable[[], PredictorBase]]:
    """(the predictor that answers /v1/predict, a loader of the torch predictor /v1/explain uses)."""
    path = model_path(settings)
    threads = settings.cpu_threads()
    torch_predictor = _memo(lambda: load_predictor(path, device=settings.device, runtime="torch"))
    if path.suffix.lower() == ".onnx":
        source = _onnx_source(path)
        explain = (
            _memo(lambda: load_predictor(source, device=settings.device, runtime="torch")) if source else None
        )
        return load_predictor(path, device=settings.device, threads=threads), explain or _no_torch(path)
    if settings.runtime == "torch" or settings.device not in ("cpu", "auto") or is_ensemble_file(path):
        if settings.runtime == "onnx":
            logger.info("serving %s with torch: ensembles and GPU devices are not run by ONNX Runtime", path)
        return torch_predictor(), torch_predictor
    onnx = _exported(path, cache_dir)
    return load_predictor(onnx, device="cpu", threads=threads), torch_predictor


def _exported(checkpoint: Path, cache_dir: Path) -> Path:
    """The checkpoint's ONNX export in the cache (made once, named by the checkpoint's sha256)."""
    from pneumocxr.workflows.onnx_export import export_onnx

    target = cache_dir / f"{file_sha256(checkpoint)[:20]}.onnx"
    if not target.exists() or not target.with_name(target.name + ".json").exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        logger.info("exporting %s to ONNX once (%s); later starts reuse it", checkpoint, target)
        export_onnx(checkpoint, target)
    return target


def _onnx_source(onnx: Path) -> Path | None:
    """The checkpoint an exported model came from, when it is still where the sidecar says."""
    import json

    try:
        sidecar = json.loads(onnx.with_name(onnx.name + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = sidecar.get("source_checkpoint") or {}
    source = Path(str(record.get("path", ""))) if isinstance(record, dict) and record.get("path") else None
    if source is None or not source.is_file() or file_sha256(source) != record.get("sha256"):
        return None  # moved or changed since the export: its maps would not explain this model
    return source


def _memo(load: Callable[[], PredictorBase]) -> Callable[[], PredictorBase]:
    held: list[PredictorBase] = []

    def get() -> PredictorBase:
        if not held:
            held.append(load())
        return held[0]

    return get


def _no_torch(path: Path) -> Callable[[], PredictorBase]:
    def refuse() -> PredictorBase:
        from pneumocxr.explain.prediction_map import ExplainUnavailable

        raise ExplainUnavailable(
            f"{path} is an ONNX model and its source checkpoint is not at the path its sidecar names; "
            "serve the checkpoint (--model best.pt) to get heat maps"
        )

    return refuse
