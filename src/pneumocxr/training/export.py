"""``best.pt``: the best phase's weights, validated afresh, with the operating point chosen on validation.

The stored metrics come from a validation pass over exactly the exported weights, so anyone can
reproduce them from best.pt and the recorded split. The temperature (and, for the binary task, the
decision threshold) is fitted on the logits of that same pass: never on test.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pneumocxr.config import RunConfig, to_dict
from pneumocxr.errors import ConfigError
from pneumocxr.evaluation import all_rules, apply_temperature, fit_temperature
from pneumocxr.models import save_checkpoint
from pneumocxr.training.bn_recalibration import needs_recalibration, recalibrate_batchnorm
from pneumocxr.training.callbacks import MONITOR
from pneumocxr.training.datamodule import ChestXrayDataModule
from pneumocxr.training.module import ClassifierModule
from pneumocxr.training.phases import PhaseResult
from pneumocxr.training.selection import select_checkpoint
from pneumocxr.training.trainer import distributed_backend, load_weights, make_trainer, read_lightning

logger = logging.getLogger(__name__)

CHOSEN_ON = "validation (carved from train)"
# The decision rule of a k-class checkpoint; its stored ``threshold`` is unused (left at 0.5).
ARGMAX = "argmax of the calibrated probabilities"
VALIDATION_PRECISION = "32-true"  # the exported validation pass: as Predictor scores (float32)


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
    chosen, selection = select_checkpoint(
        config.train.select_on,
        phases,
        model,
        datamodule.val_pixels(),
        datamodule.val_labels(),
        bf16=settings["precision"] == "bf16-mixed",
    )
    best = next(p for p in phases if p.phase == selection["chosen_phase"])
    # a phase's last checkpoint may win under train.select_on=stress
    best_epoch = best.best_epoch if chosen == best.best_path else _global_epoch(chosen, phases, best)
    load_weights(model, chosen)
    recalibrated = _recalibrate(config, model, datamodule, settings)
    # The final pass runs in float32 whatever the training precision: the temperature and every
    # threshold rule are fitted on these logits and Predictor scores in float32. Measured (cpu_fast,
    # bf16-mixed): the Youden edge on the bf16 pass was 0.163, on Predictor's float32 logits 0.266.
    trainer = make_trainer(
        config, {**settings, "precision": VALIDATION_PRECISION}, callbacks=[], logger=False
    )
    module = ClassifierModule(model, **datamodule.loss_settings())
    module.collect_predictions = True
    results = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    metrics = {k: float(v) for k, v in results.items()}
    logits, labels = module.collected_predictions()  # every rank's, gathered
    class_names = datamodule.class_names
    if len(class_names) > 2:
        operating = multiclass_operating_point(logits, labels, class_names)
    else:
        operating = operating_point(
            logits,
            labels,
            _val_patient_ids(datamodule, labels, trainer.world_size),
            rule=config.train.threshold_rule,
            seed=config.train.seed,
        )
    split = datamodule.split_info().as_dict()
    if trainer.is_global_zero:
        extra = {
            "task": config.data.task,
            "split": split,
            "best_epoch": best_epoch,
            "best_phase": best.phase,
            "monitor": MONITOR,
            "selection": selection,  # training/selection.py: the rule and what it chose over what
            "lightning_checkpoint": chosen,
            "accelerator": settings["accelerator"],
            "precision": settings["precision"],
            "validation_precision": VALIDATION_PRECISION,  # of the pass behind metrics and operating point
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


def _global_epoch(path: str, phases: list[PhaseResult], phase: PhaseResult) -> int:
    """The 1-based epoch, counted across phases, at which the Lightning checkpoint ``path`` was saved."""
    offset = sum(p.epochs_run for p in phases if p.phase < phase.phase)
    return offset + int(read_lightning(path)["epoch"]) + 1


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


def operating_point(
    logits: np.ndarray,
    labels: np.ndarray,
    patient_ids: Sequence[str] | None = None,
    *,
    rule: str = "youden",
    seed: int = 0,
) -> dict[str, Any]:
    """Temperature and decision threshold chosen on the validation predictions (binary task).

    Temperature scaling (validation NLL) calibrates the probabilities; then EVERY threshold rule
    (``evaluation.thresholds.RULES``) is computed on the calibrated probabilities and stored under
    ``rules`` (rule → threshold, validation sensitivity/specificity, margin …), so ``evaluate
    --threshold-rule`` can apply any of them later without the validation images. ``rule`` (config
    ``train.threshold_rule``) is the one whose fields are also stored at the top level and whose
    threshold becomes the checkpoint's. A raw 0.5 cut is arbitrary for a model trained with class
    weights, so the checkpoint carries a threshold chosen on validation: never on test.
    ``patient_ids`` (aligned with ``labels``): the ``bootstrap_median`` rule resamples patients;
    None resamples images. ``seed`` seeds that bootstrap.
    """
    temperature = fit_temperature(logits, labels)
    calibrated = apply_temperature(logits, temperature)
    rules = all_rules(labels, calibrated, patient_ids, seed=seed)
    if rule not in rules:
        raise ConfigError(f"train.threshold_rule={rule!r}; use one of {', '.join(rules)}")
    return {
        "temperature": temperature,
        **rules[rule].to_dict(),
        "threshold_rule": rule,
        "rules": {name: choice.to_dict() for name, choice in rules.items()},
        "chosen_on": CHOSEN_ON,
    }


def _val_patient_ids(
    datamodule: ChestXrayDataModule, labels: np.ndarray, world_size: int
) -> list[str] | None:
    """The patient of each gathered validation prediction, or None when the order cannot be trusted.

    Each DDP rank scores ``val[rank::world_size]`` in order (unpadded sampler, no shuffle) and the
    ranks' predictions are concatenated, so the gathered order is known; it is checked against the
    labels, and on any mismatch the bootstrap falls back to resampling images.
    """
    val = datamodule.records()[1]
    n = len(val)
    order = np.concatenate([np.arange(rank, n, world_size) for rank in range(world_size)])
    if len(labels) != n or not np.array_equal(np.array([val[i].label for i in order]), labels):
        logger.warning("validation predictions do not line up with the records: bootstrapping images")
        return None
    return [f"{val[i].split}/{val[i].patient_id}" for i in order]


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
