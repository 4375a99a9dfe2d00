"""Typed configuration: frozen dataclasses, loaded from YAML and ``--set key=value`` overrides.

Precedence is defaults < YAML < overrides. Unknown keys are rejected with a "did you mean"
suggestion, because a misspelt key that is silently ignored produces a run that looks fine
and is not the run the user asked for.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pneumocxr.errors import ConfigError

T = TypeVar("T")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The tasks a run can train, and the number of classes each has. The same names as
# ``labels.TASKS`` (config and labels sit side by side in the layer order and may not import each
# other; tests/test_config.py checks that the two agree).
TASK_NUM_CLASSES: dict[str, int] = {"binary": 2, "normal-bacterial-viral": 3}
TASKS: tuple[str, ...] = tuple(TASK_NUM_CLASSES)
LR_SCHEDULES = ("plateau", "cosine")


@dataclass(frozen=True)
class Preprocess:
    """How pixels become a model input. Declared by the model, stored in the checkpoint,
    consumed by the data transforms: the single meeting point of ``data`` and ``models``."""

    image_size: int = 224  # side of the square model input, pixels
    channels: int = 3  # 1 = grayscale input, 3 = grayscale repeated to RGB (ImageNet backbones)
    mean: tuple[float, ...] = IMAGENET_MEAN  # per-channel mean subtracted after scaling to [0, 1]
    std: tuple[float, ...] = IMAGENET_STD  # per-channel std divided after subtracting the mean
    resize_mode: str = "squash"  # "squash": whole image to the square (seed Keras way); "letterbox": pad

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ConfigError(f"preprocess.image_size={self.image_size} is too small; use at least 8")
        if self.channels not in (1, 3):
            raise ConfigError(f"preprocess.channels={self.channels}; use 1 or 3")
        if self.resize_mode not in ("squash", "letterbox"):
            raise ConfigError(f"preprocess.resize_mode={self.resize_mode!r}; use 'squash' or 'letterbox'")
        if len(self.mean) not in (1, self.channels) or len(self.std) not in (1, self.channels):
            raise ConfigError("preprocess.mean/std need one value or one per channel")


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how the validation split is carved from train."""

    root: str = "data/chest_xray"  # dataset folder, CSV manifest or MedMNIST .npz
    val_fraction: float = 0.15  # share of training images (whole patients at a time) moved to validation
    split_seed: int = 42  # seed of the patient-level split (same seed = same split)
    cache_dir: str = ""  # preprocessed-image cache; empty = <output>/cache
    # -- added for cross-validation (pneumocxr.training.cv): validate on one fold of a patient k-fold --
    folds: int = 0  # k of a patient-level stratified k-fold of train (data.splits.patient_kfold); 0 = off
    # With folds >= 2, val_fraction first holds out the SAME patients an ordinary run validates on (no
    # fold ever sees them: they judge the fold ensemble honestly); the folds split the rest.
    # data.val_fraction=0 folds every training image.
    fold: int = 0  # the validation fold (0 … folds-1) when folds >= 2
    # -- added for the three-class task: what the labels are --
    # "binary" = NORMAL vs PNEUMONIA (the class folders); "normal-bacterial-viral" = NORMAL /
    # BACTERIAL / VIRAL from the file names' sub-labels (needs model.num_classes=3; `--task` sets both).
    task: str = "binary"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"data.task={self.task!r}; use one of {', '.join(TASKS)}")


@dataclass(frozen=True)
class ModelConfig:
    """Which architecture to build and where its pretrained weights come from."""

    name: str = "custom_cnn"  # a registered model name: `pneumocxr models list`
    pretrained: bool = False  # start from ImageNet weights (transfer models); never silently random
    weights: str = ""  # local weights file for offline use; empty = the library's download (needs internet)
    dropout: float = 0.5  # dropout rate of the classifier head
    image_size: int = 0  # square input side; 0 = the model's default
    num_classes: int = 2  # 2 = one PNEUMONIA logit (data.task=binary); 3 = normal/bacterial/viral


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe. Defaults are the reference (seed) recipe."""

    lr: float = 1e-4  # Adam learning rate
    weight_decay: float = 0.0  # Adam(W) weight decay; 0 = plain Adam as in the seed
    batch_size: int = 32  # images per step (per device under DDP)
    max_epochs: int = 30  # upper bound; early stopping usually ends sooner
    early_stopping_patience: int = 10  # epochs without val_loss improvement before stopping
    plateau_patience: int = 5  # epochs without val_loss improvement before the LR is reduced
    plateau_factor: float = 0.5  # LR multiplier on plateau
    class_balance: str = "loss"  # "loss" = class-weighted loss, "sampler" = weighted sampling, "none"
    augment: str = "anatomy"  # "anatomy" (recommended, no flips), "fov" (anatomy, wide zoom), "seed", "none"
    # -- added for generalisation (issue 10): recipes that hold up on another hospital's films --
    # AugmentParams field -> value on top of the preset, e.g. {zoom: 0.35, rotation_deg: 10}
    augment_overrides: dict[str, float] = field(default_factory=dict)
    label_smoothing: float = 0.0  # targets pulled toward uniform by this much (0 = off); curbs overconfidence
    ema_decay: float = 0.0  # exponential moving average of the weights per step (e.g. 0.995); 0 = off
    lr_schedule: str = "plateau"  # "plateau" (ReduceLROnPlateau on val_loss, the reference) or "cosine"
    # which checkpoint becomes best.pt: "val_auc" (each phase's best by validation AUC) or "stress"
    # (best and last of each phase, scored on clean + shift-stressed validation; training/selection.py)
    select_on: str = "val_auc"
    finetune_epochs: int = 0  # second phase: unfreeze the backbone's last block for this many epochs
    finetune_lr: float = 1e-5  # learning rate of the unfrozen backbone block in the second phase
    frozen_features: bool = False  # frozen backbone: compute its features once and train only the head
    seed: int = 42  # seeds weights, sampling and augmentation (same seed = same run)
    precision: str = "auto"  # "auto" (bf16 where supported), "32", "bf16-mixed", "16-mixed"
    accelerator: str = "auto"  # "auto", "cpu", "cuda", "mps"
    devices: str = "auto"  # number of devices or "auto"; multi-node/GPU via torchrun/SLURM
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU and tensor-core GPUs
    num_workers: int = 0  # DataLoader workers (inputs come from the in-memory cache, so 0 is usually fastest)
    limit_train_images: int = 0  # use only this many training images (smoke runs); 0 = all
    # -- added for the training loop (pneumocxr.training): resume points inside long epochs --
    checkpoint_every_n_steps: int = 0  # also save last.ckpt every N training steps; 0 = once per epoch
    # -- re-estimate BatchNorm statistics with dropout off before export, where a Dropout feeds a
    #    BatchNorm (custom_cnn); see training/bn_recalibration.py. No effect on other models. --
    recalibrate_bn: bool = True
    # -- the operating point (evaluation/thresholds.py): every rule in THRESHOLD_RULES is computed on
    #    the calibrated validation probabilities and stored in best.pt; this one becomes its threshold --
    threshold_rule: str = "youden"  # "youden" (centre of the optimal interval), "youden_edge", …
    # -- adversarial training (training/adversarial.py): FGSM examples replace a share of each batch.
    #    ε is in 1/255 pixel units, on the [0, 1] image BEFORE the model's normalisation (2 = 2/255). --
    adversarial_eps: float = 0.0  # FGSM ε in /255 pixel units (e.g. 2); 0 = off
    adversarial_fraction: float = 0.5  # share of each training batch replaced by its FGSM examples

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(
                f"train.label_smoothing={self.label_smoothing}; use a value in [0, 0.5), e.g. 0.1"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(
                f"train.ema_decay={self.ema_decay}; use 0 (off) or a value in (0, 1), e.g. 0.995"
            )
        if self.select_on not in ("val_auc", "stress"):
            raise ConfigError(f"train.select_on={self.select_on!r}; use val_auc or stress")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"train.lr_schedule={self.lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ConfigError(
                f"train.threshold_rule={self.threshold_rule!r} is not a threshold rule; "
                f"use one of {', '.join(THRESHOLD_RULES)}"
            )
        # -- adversarial training --
        if not 0.0 <= self.adversarial_eps <= 64.0:
            raise ConfigError(
                f"train.adversarial_eps={self.adversarial_eps}; use 0 (off) or an ε in 1/255 pixel units "
                "up to 64, e.g. 2"
            )
        if not 0.0 < self.adversarial_fraction <= 1.0:
            raise ConfigError(
                f"train.adversarial_fraction={self.adversarial_fraction}; use a share in (0, 1], e.g. 0.5"
            )
        if self.adversarial_eps > 0 and self.frozen_features:
            raise ConfigError(
                "train.adversarial_eps > 0 needs images in every step, but train.frozen_features trains "
                "on cached features; turn one of them off"
            )


# The operating-point rules best.pt stores (evaluation.thresholds defines them; the names live here
# so a config is checked when it is read: config may not import evaluation).
THRESHOLD_RULES: tuple[str, ...] = ("youden", "youden_edge", "target_sensitivity", "bootstrap_median")


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; written resolved into the run folder."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        expected = TASK_NUM_CLASSES[self.data.task]
        if self.model.num_classes != expected:
            raise ConfigError(
                f"data.task={self.data.task!r} has {expected} classes but model.num_classes="
                f"{self.model.num_classes}; set both together with --task {self.data.task} (or "
                f"--set {' '.join(task_overrides(self.data.task))})"
            )


def task_overrides(task: str) -> list[str]:
    """The ``--set`` overrides that select ``task``: the labels and a matching number of outputs."""
    if task not in TASKS:
        raise ConfigError(f"--task {task!r}; use one of {', '.join(TASKS)}")
    return [f"data.task={task}", f"model.num_classes={TASK_NUM_CLASSES[task]}"]


# ----------------------------------------------------------------------------- loading


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a clear ConfigError for a missing file or bad syntax."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass a path to a YAML file (see configs/)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: an existing path as given, else a bare name (``cpu_fast`` or ``cpu_fast.yaml``)
    shipped in the package's ``configs/``, so recipes are found when pneumocxr is installed without
    the repository."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped_dir = Path(__file__).resolve().parent / "configs"
    text = str(name_or_path)
    if "/" not in text and "\\" not in text:
        shipped = shipped_dir / (text if text.endswith((".yaml", ".yml")) else f"{text}.yaml")
        if shipped.is_file():
            return shipped
    names = ", ".join(sorted(p.stem for p in shipped_dir.glob("*.yaml"))) or "none installed"
    raise ConfigError(
        f"recipe {text!r} not found: pass a path to a YAML file or one of the shipped recipe names ({names})"
    )


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, returning a copy."""
    result = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.lr=1e-4")
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return result


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build a (nested) frozen dataclass from a dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key {dotted!r}{hint}")
        kwargs[key] = _coerce(hints[key], value, dotted)
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass (tuples become lists)."""
    return _plain(dataclasses.asdict(obj))


def dump_yaml(obj: Any, path: str | Path) -> None:
    """Write the resolved config, so every run folder records exactly what ran."""
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}={value!r} has the wrong type; expected {hint}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v, where) for v in value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r}: expected a list")
        return [_coerce(args[0], v, where) for v in value]
    if origin is dict or hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads "1e-4" as a string
        except ValueError:
            pass
    if hint is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # `--set train.devices=2`: YAML reads 2 as an int
    if hint in (int, str, bool) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}={value!r} has the wrong type; expected {getattr(hint, '__name__', hint)}")


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def _plain(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    return data


__all__ = [
    "TASKS",
    "TASK_NUM_CLASSES",
    "DataConfig",
    "ModelConfig",
    "Preprocess",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "dump_yaml",
    "from_dict",
    "load_yaml",
    "resolve_recipe",
    "task_overrides",
    "to_dict",
]
