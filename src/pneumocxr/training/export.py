"""``best.pt``: the best phase's weights, validated afresh, with the operating point chosen on validation.

The stored metrics come from a validation pass over exactly the exported weights, so anyone can
reproduce them from best.pt and the recorded split. The temperature (and, for the binary task, the
decision threshold) is fitted on the logits of that same pass: never on test.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pneumocxr.config import RunConfig, to_dict
from pneumocxr.evaluation import apply_temperature, choose_threshold, fit_temperature
from pneumocxr.models import save_checkpoint
from pneumocxr.training.bn_recalibration import needs_recalibration, recalibrate_batchnorm
from pneumocxr.training.callbacks import MONITOR, MONITOR_MODE
from pneumocxr.training.datamodule import ChestXrayDataModule
from pneumocxr.training.module import ClassifierModule
from pneumocxr.training.phases import PhaseResult
from pneumocxr.training.trainer import distributed_backend, load_weights, make_trainer

logger = logging.getLogger(__name__)

CHOSEN_ON = "validation (carved from train)"
# The decision rule of a k-class checkpoint; its stored ``threshold`` is unused (left at 0.5).
ARGMAX = "argmax of the calibrated probabilities"


def export_best(
    config: RunConfig,
    model: torch.nn.Module,
    datamodule: ChestXrayDataModule,
    phases: list[PhaseResult],
    settings: dict[str, Any],
    path: Path,
) -> tuple[PhaseResult, dict[str, float], dict[str, Any], dict[str, Any], int]:
    """Pick the best phase's checkpoint, validate it afresh and write it as a self-describing best.pt.

    Returns (best phase, validation metrics, split info, operating point, global rank).
    """
    pick = max if MONITOR_MODE == "max" else min
    best = pick(phases, key=lambda p: p.best_score)  # ties: the earlier phase
    load_weights(model, best.best_path)
    recalibrated = _recalibrate(config, model, datamodule, settings)
    trainer = make_trainer(config, settings, callbacks=[], logger=False)
    module = ClassifierModule(model, **datamodule.loss_settings())
    module.collect_predictions = True
    results = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    metrics = {k: float(v) for k, v in results.items()}
    logits, labels = module.collected_predictions()  # every rank's, gathered
    class_names = datamodule.class_names
    if len(class_names) > 2:
        operating = multiclass_operating_point(logits, labels, class_names)
    else:
        operating = operating_point(logits, labels)
    split = datamodule.split_info().as_dict()
    if trainer.is_global_zero:
        extra = {
            "task": config.data.task,
            "split": split,
            "best_epoch": best.best_epoch,
            "best_phase": best.phase,
            "monitor": MONITOR,
            "lightning_checkpoint": best.best_path,
            "accelerator": settings["accelerator"],
            "precision": settings["precision"],
            "epochs_run": sum(p.epochs_run for p in phases),
            "operating_point": operating,
            "bn_recalibrated_layers": recalibrated,  # training/bn_recalibration.py
            # Under DDP each validation image must be scored exactly once (unpadded sampler):
            # recorded so a test or a reader can check it against the split's size.
            "val_images_scored": len(labels),
            "world_size": trainer.world_size,
            "distributed_backend": distributed_backend(),
        }
        save_checkpoint(
            path,
            model,
            model_name=config.model.name,
            model_kwargs=dict(model.spec.kwargs),
            preprocess=model.spec.preprocess,
            class_names=class_names,
            task=config.data.task,
            threshold=operating.get("threshold", 0.5),
            temperature=operating["temperature"],
            metrics=metrics,
            config=to_dict(config),
            extra=extra,
        )
    return best, metrics, split, operating, trainer.global_rank


def _recalibrate(
    config: RunConfig, model: torch.nn.Module, datamodule: ChestXrayDataModule, settings: dict[str, Any]
) -> int:
    """BatchNorm re-estimation with dropout off, where the model needs it; layers updated (0 = none).

    Every DDP rank runs it over all training images in the same order, so the ranks stay identical.
    """
    if not (config.train.recalibrate_bn and needs_recalibration(model)):
        return 0
    device = torch.device("cuda", torch.cuda.current_device()) if settings["accelerator"] == "cuda" else None
    logger.info("re-estimating BatchNorm statistics with dropout off (a Dropout feeds a BatchNorm)")
    return recalibrate_batchnorm(
        model,
        datamodule.train_pixels(),
        model.spec.preprocess,
        device=device or torch.device("cpu"),
        batch_size=max(64, config.train.batch_size),
        bf16=settings["precision"] == "bf16-mixed",
        channels_last=config.train.channels_last,
    )


def operating_point(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Temperature and decision threshold chosen on the validation predictions (binary task).

    Temperature scaling (validation NLL) calibrates the probabilities; the threshold maximises
    Youden's J on the calibrated probabilities. A raw 0.5 cut is arbitrary for a model trained
    with class weights, so the checkpoint carries a threshold chosen on validation: never on test.
    ``evaluate`` reports both this threshold and 0.5.
    """
    temperature = fit_temperature(logits, labels)
    choice = choose_threshold(labels, apply_temperature(logits, temperature), method="youden")
    return {"temperature": temperature, **choice.to_dict(), "chosen_on": CHOSEN_ON}


def multiclass_operating_point(
    logits: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]
) -> dict[str, Any]:
    """Temperature (softmax NLL on validation) and what the argmax rule then scores on validation.

    No threshold: a k-class prediction is the most probable class. Dividing every logit by one
    temperature never changes the argmax, so these accuracies are those of the raw logits too.
    """
    temperature = fit_temperature(logits, labels)  # (n, k) logits: softmax temperature scaling
    predicted = apply_temperature(logits, temperature).argmax(axis=1)
    recall = {
        name: float(np.mean(predicted[labels == c] == c)) if np.any(labels == c) else float("nan")
        for c, name in enumerate(class_names)
    }
    return {
        "temperature": temperature,
        "decision": ARGMAX,
        "accuracy": float(np.mean(predicted == labels)),
        "balanced_accuracy": float(np.nanmean(list(recall.values()))),
        "recall": recall,
        "chosen_on": CHOSEN_ON,
    }
