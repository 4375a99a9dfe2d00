"""One training phase: fit with the run's callbacks, or skip it when a resumed run finished it.

Phase 1 trains what the model leaves trainable (or only the head on cached features, see
features.py); phase 2 (``train.finetune_epochs > 0``) fine-tunes the unfrozen last block.
``checkpoints/phase<N>.json`` marks a finished phase so ``--resume`` does not train it again.
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.loggers import CSVLogger

from pneumocxr.config import RunConfig, dump_yaml
from pneumocxr.errors import CheckpointError, ConfigError
from pneumocxr.models import param_groups
from pneumocxr.training.adversarial import adversarial_callbacks
from pneumocxr.training.bn_recalibration import RecalibrateBatchNorm, needs_recalibration
from pneumocxr.training.callbacks import standard_callbacks
from pneumocxr.training.datamodule import ChestXrayDataModule
from pneumocxr.training.module import ClassifierModule
from pneumocxr.training.trainer import make_trainer, read_lightning

logger = logging.getLogger(__name__)

PHASE_FILE = "phase{}.json"  # written into checkpoints/ when a phase has finished


@dataclass(frozen=True)
class PhaseResult:
    phase: int
    best_path: str
    best_score: float
    best_epoch: int  # 1-based, global
    epochs_run: int


def run_phase(
    phase: int,
    config: RunConfig,
    model: torch.nn.Module,
    datamodule: ChestXrayDataModule,
    out_dir: Path,
    resume: bool,
    settings: dict[str, Any],
    offset: int = 0,
) -> PhaseResult:
    """Fit one phase (or return its record when a resumed run had already finished it)."""
    ckpt_dir = out_dir / "checkpoints" if phase == 1 else out_dir / "checkpoints" / "finetune"
    done_file = out_dir / "checkpoints" / PHASE_FILE.format(phase)
    if resume and done_file.is_file():
        logger.info("phase %d already finished (%s); skipping it", phase, done_file)
        return PhaseResult(**json.loads(done_file.read_text()))
    tcfg = config.train
    groups = None if phase == 1 else param_groups(model, tcfg.lr, tcfg.finetune_lr)
    max_epochs = tcfg.max_epochs if phase == 1 else tcfg.finetune_epochs
    best_cb, callbacks = standard_callbacks(
        ckpt_dir,
        out_dir / "history.csv",
        patience=tcfg.early_stopping_patience,
        phase=phase,
        epoch_offset=offset,
        every_n_steps=tcfg.checkpoint_every_n_steps,
        progress=settings["progress"],
        multiclass=len(datamodule.class_names) > 2,
    )
    callbacks = [*callbacks, *settings["callbacks"]]
    callbacks += adversarial_callbacks(tcfg)  # FGSM examples in each batch when train.adversarial_eps > 0
    if tcfg.ema_decay > 0:
        # Validation, checkpoints and so best.pt see the averaged weights (Lightning swaps them in),
        # and a resumed run continues the average from last.ckpt.
        callbacks.append(EMAWeightAveraging(decay=tcfg.ema_decay))
    if tcfg.recalibrate_bn and needs_recalibration(model):  # validate the model as it will be used
        recalibrate = RecalibrateBatchNorm(
            datamodule.train_pixels,
            batch_size=max(64, tcfg.batch_size),
            bf16=settings["precision"] == "bf16-mixed",
            channels_last=tcfg.channels_last,
        )
        callbacks.insert(0, recalibrate)
    module = ClassifierModule(
        model,
        lr=tcfg.lr,
        weight_decay=tcfg.weight_decay,
        plateau_factor=tcfg.plateau_factor,
        plateau_patience=tcfg.plateau_patience,
        param_groups=groups,
        label_smoothing=tcfg.label_smoothing,
        lr_schedule=tcfg.lr_schedule,
        **datamodule.loss_settings(),
    )
    csv_logger = CSVLogger(out_dir / "logs", name=f"phase{phase}")
    trainer = make_trainer(
        replace(config, train=replace(tcfg, max_epochs=max_epochs)), settings, callbacks, csv_logger
    )
    if trainer.is_global_zero:
        out_dir.mkdir(parents=True, exist_ok=True)
        dump_yaml(config, out_dir / "config.yaml")
    last = ckpt_dir / "last.ckpt"
    ckpt_path = str(last) if resume and last.is_file() else None
    if ckpt_path:
        logger.info("resuming phase %d from %s", phase, ckpt_path)
    try:
        # The resume point is read as data (weights_only=True), whatever torch's default or
        # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says: a file in a run folder must not run code.
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not ckpt_path:
            raise
        text = str(exc).split("WeightsUnpickler error:")[-1]  # torch's advice around it: to unpickle
        reason = next((line.strip()[:200] for line in text.splitlines() if line.strip()), "refused")
        raise CheckpointError(
            f"{ckpt_path}: not a plain-data resume point ({reason}); it was not written by this training, "
            "so it is not loaded: delete it (or the run folder) to train from the start"
        ) from None
    if not best_cb.best_model_path:
        raise ConfigError(f"phase {phase} finished without a validation result; check train.max_epochs >= 1")
    best_epoch = offset + int(read_lightning(best_cb.best_model_path)["epoch"]) + 1
    result = PhaseResult(
        phase=phase,
        best_path=str(best_cb.best_model_path),
        best_score=float(best_cb.best_model_score),
        best_epoch=best_epoch,
        epochs_run=trainer.current_epoch,
    )
    if trainer.is_global_zero:
        done_file.write_text(json.dumps(result.__dict__, indent=1))
    return result
