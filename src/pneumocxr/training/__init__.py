"""Training: a Lightning loop around any registry model (``train(config, out_dir)``).

Imports Lightning; nothing below ``training`` in the layer order imports this package.
"""

from pneumocxr.training.augment import PRESETS, AugmentParams, BatchAugmenter, augment_params
from pneumocxr.training.datamodule import ChestXrayDataModule, SplitInfo, split_records
from pneumocxr.training.hardware import cpu_supports_bf16, resolve_accelerator, resolve_precision
from pneumocxr.training.module import ClassifierModule, plateau_scheduler
from pneumocxr.training.train import TrainResult, build_model, train

__all__ = [
    "PRESETS",
    "AugmentParams",
    "BatchAugmenter",
    "ChestXrayDataModule",
    "ClassifierModule",
    "SplitInfo",
    "TrainResult",
    "augment_params",
    "build_model",
    "cpu_supports_bf16",
    "plateau_scheduler",
    "resolve_accelerator",
    "resolve_precision",
    "split_records",
    "train",
]
