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
and decision threshold fitted on that pass (``operating_point``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from pneumocxr.config import RunConfig, dump_yaml, to_dict
from pneumocxr.errors import ConfigError
from pneumocxr.evaluation import apply_temperature, choose_threshold, fit_temperature
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import (
    create_model,
    load_pretrained,
    model_spec,
    param_groups,
    save_checkpoint,
    set_finetune,
)
from pneumocxr.training.callbacks import MONITOR, MONITOR_MODE, standard_callbacks
from pneumocxr.training.datamodule import ChestXrayDataModule
from pneumocxr.training.features import frozen_feature_stage
from pneumocxr.training.hardware import (
    resolve_accelerator,
    resolve_devices,
    resolve_num_nodes,
    resolve_precision,
)
from pneumocxr.training.module import ClassifierModule

logger = logging.getLogger(__name__)

PHASE_FILE = "phase{}.json"  # written into checkpoints/ when a phase has finished


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced and how well its selected model does on validation."""

    out_dir: Path
    best_checkpoint: Path  # out_dir/best.pt
    best_epoch: int  # 1-based, counted across both phases
    best_phase: int  # 1 = main phase, 2 = fine-tuning
    metrics: dict[str, float]  # val_loss/acc/auc/sensitivity/specificity of best.pt (raw sigmoid, cut at 0.5)
    epochs_run: int  # epochs completed, both phases
    history_csv: Path
    curves_png: Path
    config_yaml: Path
    accelerator: str
    precision: str
    split: dict[str, Any] = field(default_factory=dict)  # SplitInfo.as_dict()
    operating_point: dict[str, Any] = field(default_factory=dict)  # temperature, threshold, its sens/spec
    global_rank: int = 0  # under DDP every process returns a result; only rank 0 should report it
    wall_s: float = 0.0


@dataclass(frozen=True)
class _PhaseResult:
    phase: int
    best_path: str
    best_score: float
    best_epoch: int  # 1-based, global
    epochs_run: int


def build_model(config: RunConfig) -> torch.nn.Module:
    """The registry model the config asks for, with pretrained weights when requested."""
    cfg = config.model
    defaults = model_spec(cfg.name).default_kwargs
    kwargs: dict[str, Any] = {"num_classes": cfg.num_classes}
    if "dropout" in defaults:
        kwargs["dropout"] = cfg.dropout
    if cfg.image_size:
        kwargs["image_size"] = cfg.image_size
    model = create_model(cfg.name, **kwargs)
    if cfg.pretrained:
        load_pretrained(cfg.name, model, cfg.weights or None)
    elif cfg.weights:
        raise ConfigError(
            f"model.weights={cfg.weights!r} is set but model.pretrained is false; "
            "set model.pretrained=true to start from that file, or drop model.weights"
        )
    return model


def train(
    config: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``config`` into ``out_dir``; ``resume=True`` continues from ``checkpoints/last.ckpt``.

    Seeds everything from ``config.train.seed`` (the caller asks for a reproducible run).
    ``callbacks``: extra Lightning callbacks for every phase (e.g. a benchmark's timer).
    """
    start = time.monotonic()
    L.seed_everything(config.train.seed, workers=True)
    _check_supported(config)
    out_dir = Path(out_dir)
    _check_resume(config, out_dir, resume)
    accelerator = resolve_accelerator(config.train.accelerator)
    precision = resolve_precision(config.train.precision, accelerator)
    model = build_model(config)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    cache_dir = Path(config.data.cache_dir).expanduser() if config.data.cache_dir else out_dir / "cache"
    datamodule = ChestXrayDataModule(
        config.data, config.train, model.spec.preprocess, cache_dir, pin_memory=accelerator == "cuda"
    )
    logger.info("training %s on %s with precision %s", config.model.name, accelerator, precision)
    settings = {
        "accelerator": accelerator,
        "precision": precision,
        "progress": progress,
        "callbacks": callbacks,
    }

    first: tuple[torch.nn.Module, ChestXrayDataModule] = (model, datamodule)
    if config.train.frozen_features:  # phase 1 on features computed once (see features.py)
        first = frozen_feature_stage(model, datamodule, pretrained=config.model.pretrained, progress=progress)
    phases = [_run_phase(1, config, *first, out_dir, resume, settings)]
    if config.train.finetune_epochs > 0:
        _load_weights(model, phases[0].best_path)
        set_finetune(model, True)
        phases.append(
            _run_phase(2, config, model, datamodule, out_dir, resume, settings, offset=phases[0].epochs_run)
        )
    best_pt = out_dir / "best.pt"
    best, metrics, split, operating, rank = _export_best(config, model, datamodule, phases, settings, best_pt)
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
    )


def _export_best(
    config: RunConfig,
    model: torch.nn.Module,
    datamodule: ChestXrayDataModule,
    phases: list[_PhaseResult],
    settings: dict[str, Any],
    path: Path,
) -> tuple[_PhaseResult, dict[str, float], dict[str, Any], dict[str, Any], int]:
    """Pick the best phase's checkpoint, validate it afresh and write it as a self-describing best.pt.

    The stored metrics come from this validation pass over the exported weights, so anyone can
    reproduce them from best.pt and the recorded split.
    """
    pick = max if MONITOR_MODE == "max" else min
    best = pick(phases, key=lambda p: p.best_score)  # ties: the earlier phase
    _load_weights(model, best.best_path)
    trainer = _trainer(config, settings, callbacks=[], logger=False)
    module = ClassifierModule(model, pos_weight=datamodule.pos_weight())
    module.collect_predictions = True
    results = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    metrics = {k: float(v) for k, v in results.items()}
    logits, labels = module.collected_predictions()  # every rank's, gathered
    operating = operating_point(logits, labels)
    split = datamodule.split_info().as_dict()
    if trainer.is_global_zero:
        extra = {
            "split": split,
            "best_epoch": best.best_epoch,
            "best_phase": best.phase,
            "monitor": MONITOR,
            "lightning_checkpoint": best.best_path,
            "accelerator": settings["accelerator"],
            "precision": settings["precision"],
            "epochs_run": sum(p.epochs_run for p in phases),
            "operating_point": operating,
            # Under DDP each validation image must be scored exactly once (unpadded sampler):
            # recorded so a test or a reader can check it against the split's size.
            "val_images_scored": len(labels),
            "world_size": trainer.world_size,
            "distributed_backend": _distributed_backend(),
        }
        save_checkpoint(
            path,
            model,
            model_name=config.model.name,
            model_kwargs=dict(model.spec.kwargs),
            preprocess=model.spec.preprocess,
            class_names=CLASS_NAMES,
            threshold=operating["threshold"],
            temperature=operating["temperature"],
            metrics=metrics,
            config=to_dict(config),
            extra=extra,
        )
    return best, metrics, split, operating, trainer.global_rank


def operating_point(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Temperature and decision threshold chosen on the validation predictions.

    Temperature scaling (validation NLL) calibrates the probabilities; the threshold maximises
    Youden's J on the calibrated probabilities. A raw 0.5 cut is arbitrary for a model trained
    with class weights (and the custom CNN's train/eval BatchNorm shift moves it further), so the
    checkpoint carries a threshold chosen on validation: never on test. ``evaluate`` reports
    both this threshold and 0.5.
    """
    temperature = fit_temperature(logits, labels)
    choice = choose_threshold(labels, apply_temperature(logits, temperature), method="youden")
    return {"temperature": temperature, **choice.to_dict(), "chosen_on": "validation (carved from train)"}


def _run_phase(
    phase: int,
    config: RunConfig,
    model: torch.nn.Module,
    datamodule: ChestXrayDataModule,
    out_dir: Path,
    resume: bool,
    settings: dict[str, Any],
    offset: int = 0,
) -> _PhaseResult:
    """Fit one phase (or return its record when a resumed run had already finished it)."""
    ckpt_dir = out_dir / "checkpoints" if phase == 1 else out_dir / "checkpoints" / "finetune"
    done_file = out_dir / "checkpoints" / PHASE_FILE.format(phase)
    if resume and done_file.is_file():
        logger.info("phase %d already finished (%s); skipping it", phase, done_file)
        return _PhaseResult(**json.loads(done_file.read_text()))
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
    )
    callbacks = [*callbacks, *settings["callbacks"]]
    module = ClassifierModule(
        model,
        lr=tcfg.lr,
        weight_decay=tcfg.weight_decay,
        pos_weight=datamodule.pos_weight(),
        plateau_factor=tcfg.plateau_factor,
        plateau_patience=tcfg.plateau_patience,
        param_groups=groups,
    )
    csv_logger = CSVLogger(out_dir / "logs", name=f"phase{phase}")
    trainer = _trainer(
        replace(config, train=replace(tcfg, max_epochs=max_epochs)), settings, callbacks, csv_logger
    )
    if trainer.is_global_zero:
        out_dir.mkdir(parents=True, exist_ok=True)
        dump_yaml(config, out_dir / "config.yaml")
    last = ckpt_dir / "last.ckpt"
    ckpt_path = str(last) if resume and last.is_file() else None
    if ckpt_path:
        logger.info("resuming phase %d from %s", phase, ckpt_path)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if not best_cb.best_model_path:
        raise ConfigError(f"phase {phase} finished without a validation result; check train.max_epochs >= 1")
    best_epoch = offset + int(_read_lightning(best_cb.best_model_path)["epoch"]) + 1
    result = _PhaseResult(
        phase=phase,
        best_path=str(best_cb.best_model_path),
        best_score=float(best_cb.best_model_score),
        best_epoch=best_epoch,
        epochs_run=trainer.current_epoch,
    )
    if trainer.is_global_zero:
        done_file.write_text(json.dumps(result.__dict__, indent=1))
    return result


def _trainer(config: RunConfig, settings: dict[str, Any], callbacks: list, logger: Any) -> L.Trainer:
    return L.Trainer(
        accelerator=settings["accelerator"],
        devices=resolve_devices(config.train.devices),
        num_nodes=resolve_num_nodes(),  # multi-node DDP: from torchrun/srun, see hardware.py
        precision=settings["precision"],
        max_epochs=config.train.max_epochs,
        callbacks=callbacks,
        logger=logger,
        log_every_n_steps=1,  # only epoch-level values are logged; this just avoids a warning
        enable_progress_bar=settings["progress"] and bool(callbacks),
        enable_model_summary=settings["progress"] and bool(callbacks),
        enable_checkpointing=bool(callbacks),
        deterministic=False,
        # No sanity pass: validation runs after every epoch anyway, and on a path-sorted val set
        # its first two batches hold one class only, which only produces misleading warnings.
        num_sanity_val_steps=0,
    )


def _distributed_backend() -> str:
    """The process group's backend ("gloo" on CPU, "nccl" on GPUs), or "none" for one process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return str(torch.distributed.get_backend())
    return "none"


def _read_lightning(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_weights(model: torch.nn.Module, lightning_ckpt: str) -> None:
    """Load the model part of a Lightning checkpoint (keys ``model.*``) into ``model``."""
    state = _read_lightning(lightning_ckpt)["state_dict"]
    prefix = "model."
    model.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})


def _check_supported(config: RunConfig) -> None:
    if config.model.num_classes != 2:
        raise ConfigError(
            f"model.num_classes={config.model.num_classes}: the training loop trains the binary "
            "task only; use 2"
        )
    if config.train.max_epochs < 1:
        raise ConfigError(f"train.max_epochs={config.train.max_epochs}; use 1 or more")
    if config.train.checkpoint_every_n_steps < 0:
        raise ConfigError(
            f"train.checkpoint_every_n_steps={config.train.checkpoint_every_n_steps}; "
            "use 0 (checkpoint per epoch only) or more"
        )
    if config.train.finetune_epochs < 0:
        raise ConfigError(f"train.finetune_epochs={config.train.finetune_epochs}; use 0 (off) or more")


def _check_resume(config: RunConfig, out_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a run silently, and to resume one that is not there or is a different run."""
    ckpt_dir = out_dir / "checkpoints"
    has_run = ckpt_dir.is_dir() and any(ckpt_dir.rglob("*.ckpt"))
    if not resume:
        if has_run:
            raise ConfigError(
                f"{out_dir} already holds a training run; pass --resume to continue it or choose a new --out"
            )
        return
    if not (ckpt_dir / "last.ckpt").is_file():
        raise ConfigError(
            f"nothing to resume: {ckpt_dir / 'last.ckpt'} does not exist; start the run without --resume"
        )
    saved = out_dir / "config.yaml"
    if saved.is_file():
        from pneumocxr.config import from_dict, load_yaml

        before = to_dict(from_dict(RunConfig, load_yaml(saved)))
        now = to_dict(config)
        changed = [f"{s}.{k}" for s in now for k in now[s] if before.get(s, {}).get(k) != now[s][k]]
        fixed = [key for key in changed if not key.startswith("train.")]
        if fixed:
            raise ConfigError(
                f"--resume with a different {', '.join(fixed)} than {saved} records; resume with the same "
                "data and model settings (omit --config to reuse the saved one)"
            )
        if changed:
            logger.warning("resuming with changed settings: %s", ", ".join(changed))
