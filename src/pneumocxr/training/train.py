"""``train(config, out_dir)``: one training run, from a RunConfig to a self-describing ``best.pt``.

Run folder layout::

    out_dir/config.yaml            the resolved config (defaults < YAML < --set)
    out_dir/checkpoints/           Lightning checkpoints: best-epochNNN.ckpt, last.ckpt (resume point)
    out_dir/checkpoints/finetune/  the same for the optional second (fine-tuning) phase
    out_dir/logs/                  Lightning's raw CSVLogger output
    out_dir/history.csv            one tidy row per epoch; training_curves.png beside it
    out_dir/best.pt                the selected model: torch.load(..., weights_only=True)-safe

Phase 1 trains what the model leaves trainable (for vgg16_transfer: the head on a frozen base);
with ``train.frozen_features`` it freezes everything but the head, runs the backbone over the
data once and trains the head on those cached features (features.py).
Phase 2 (``train.finetune_epochs > 0``) starts from phase 1's best weights, unfreezes the
model's last block at ``train.finetune_lr`` (the head stays at ``train.lr``) and trains on.
The best checkpoint of both phases (highest validation AUC, see callbacks.py) becomes best.pt,
with the metrics of a fresh validation pass over exactly those weights, and with a temperature
and decision threshold fitted on that pass (``operating_point``; k classes: a temperature and the
argmax rule, ``multiclass_operating_point``).

The task (``data.task``): ``binary`` (NORMAL vs PNEUMONIA) or ``normal-bacterial-viral`` (three
classes from the file names' sub-labels, softmax cross-entropy; see module.py and data/tasks.py).

The pieces: build.py (the model), phases.py (one fit), export.py (best.pt and its operating
point), checks.py (refusals), trainer.py (the Lightning Trainer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from pneumocxr.config import RunConfig
from pneumocxr.models import set_finetune
from pneumocxr.progress import show_bars
from pneumocxr.training.build import build_model
from pneumocxr.training.checks import check_resume, check_supported
from pneumocxr.training.datamodule import ChestXrayDataModule
from pneumocxr.training.export import export_best, multiclass_operating_point, operating_point
from pneumocxr.training.features import frozen_feature_stage
from pneumocxr.training.hardware import resolve_accelerator, resolve_precision
from pneumocxr.training.phases import PHASE_FILE, run_phase
from pneumocxr.training.rng import caller_rng_kept
from pneumocxr.training.trainer import load_weights

logger = logging.getLogger(__name__)

__all__ = [
    "PHASE_FILE",
    "TrainResult",
    "build_model",
    "multiclass_operating_point",
    "operating_point",
    "train",
]


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced and how well its selected model does on validation."""

    out_dir: Path
    best_checkpoint: Path  # out_dir/best.pt
    best_epoch: int  # 1-based, counted across both phases
    best_phase: int  # 1 = main phase, 2 = fine-tuning
    # val_loss/acc/auc/sensitivity/specificity of best.pt (binary: raw sigmoid cut at 0.5; k classes:
    # macro AUC, argmax accuracy, macro recall and specificity, see module.py)
    metrics: dict[str, float]
    epochs_run: int  # epochs completed, both phases
    history_csv: Path
    curves_png: Path
    config_yaml: Path
    accelerator: str
    precision: str
    split: dict[str, Any] = field(default_factory=dict)  # SplitInfo.as_dict()
    # binary: temperature, threshold, its sens/spec; k classes: temperature, argmax accuracy, recalls
    operating_point: dict[str, Any] = field(default_factory=dict)
    global_rank: int = 0  # under DDP every process returns a result; only rank 0 should report it
    wall_s: float = 0.0
    task: str = "binary"  # data.task
    class_names: tuple[str, ...] = ()


def train(
    config: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``config`` into ``out_dir``; ``resume=True`` continues from ``checkpoints/last.ckpt``.

    Reproducible from ``config.train.seed``: the global generators Lightning needs seeded are
    seeded for the run only, and the caller's random state is restored afterwards (rng.py).
    ``progress``: progress bars, drawn only when stdout and stderr are terminals; otherwise (a batch
    log, or ``progress=False``) one log line per epoch and per phase (pneumocxr.progress).
    ``callbacks``: extra Lightning callbacks for every phase (e.g. a benchmark's timer).
    """
    with caller_rng_kept():
        L.seed_everything(config.train.seed, workers=True)
        return _train(config, Path(out_dir), resume=resume, progress=progress, callbacks=callbacks)


def _train(
    config: RunConfig, out_dir: Path, *, resume: bool, progress: bool, callbacks: Sequence[Callback]
) -> TrainResult:
    start = time.monotonic()
    progress = show_bars(progress)  # bars on a terminal only; else a log line per epoch and phase
    check_supported(config)
    check_resume(config, out_dir, resume)
    accelerator = resolve_accelerator(config.train.accelerator)
    precision = resolve_precision(config.train.precision, accelerator)
    model = build_model(config)  # looked up here at call time: tests and benchmarks may wrap it
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    cache_dir = Path(config.data.cache_dir).expanduser() if config.data.cache_dir else out_dir / "cache"
    datamodule = ChestXrayDataModule(
        config.data,
        config.train,
        model.spec.preprocess,
        cache_dir,
        pin_memory=accelerator == "cuda",
        progress=progress,
    )
    logger.info(
        "training %s (%s task) on %s with precision %s",
        config.model.name,
        config.data.task,
        accelerator,
        precision,
    )
    settings = {
        "accelerator": accelerator,
        "precision": precision,
        "progress": progress,
        "callbacks": callbacks,
    }

    first: tuple[torch.nn.Module, ChestXrayDataModule] = (model, datamodule)
    if config.train.frozen_features:  # phase 1 on features computed once (see features.py)
        first = frozen_feature_stage(model, datamodule, pretrained=config.model.pretrained, progress=progress)
    phases = [run_phase(1, config, *first, out_dir, resume, settings)]
    if config.train.finetune_epochs > 0:
        load_weights(model, phases[0].best_path)
        set_finetune(model, True)
        phases.append(
            run_phase(2, config, model, datamodule, out_dir, resume, settings, offset=phases[0].epochs_run)
        )
    best_pt = out_dir / "best.pt"
    best, metrics, split, operating, rank = export_best(config, model, datamodule, phases, settings, best_pt)
    return TrainResult(
        out_dir=out_dir,
        best_checkpoint=best_pt,
        best_epoch=best.best_epoch,
        best_phase=best.phase,
        metrics=metrics,
        epochs_run=sum(p.epochs_run for p in phases),
        history_csv=out_dir / "history.csv",
        curves_png=out_dir / "training_curves.png",
        config_yaml=out_dir / "config.yaml",
        accelerator=accelerator,
        precision=precision,
        split=split,
        operating_point=operating,
        global_rank=rank,
        wall_s=time.monotonic() - start,
        task=config.data.task,
        class_names=datamodule.class_names,
    )
