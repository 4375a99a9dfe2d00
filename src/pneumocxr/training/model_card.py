"""``write_model_card``: a Markdown model card (Mitchell et al. 2019) for one checkpoint or ensemble.

The card is built from what the self-describing checkpoint records (architecture, preprocess,
recipe, split, operating point, validation metrics, versions) plus, optionally, ``evaluate`` output
folders (test, external, or the rebuilt validation split) and stress-suite results. Inputs other than
the checkpoint are read tolerantly: a missing or unrecognised file is named in the card ("not run")
and logged, never a crash. A missing or corrupt checkpoint is a ``CheckpointError``.

Why here, in ``training`` and not ``inference``: the card says which stress shifts the recipe's
augmentation covered, and the augmentation presets live in ``training.augment``, which ``inference``
may not import (sibling layers). Reading and rendering are lower: ``evaluation.model_card`` (the
Jinja2 template, pure formatting) and ``evaluation.model_card_inputs`` (evaluate/stress files).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pneumocxr._version import __version__
from pneumocxr.errors import CheckpointError, ConfigError
from pneumocxr.evaluation.model_card import augmentation_text, render_model_card, table
from pneumocxr.evaluation.model_card_inputs import SELECTION_WORDS, read_evaluation
from pneumocxr.evaluation.model_card_stress import read_stress, stress_section
from pneumocxr.models import CheckpointMeta, count_parameters, load_checkpoint
from pneumocxr.models.ensemble_file import is_ensemble_file, load_ensemble
from pneumocxr.training.model_card_sections import (
    limitations,
    operating_point,
    training_data,
    validation_section,
)
from pneumocxr.training.stress_augmentation import recorded_augmentation

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
# The date of the static "known external-test evidence" in the card (the measurements behind it:
# docs/DESIGN.md "Chest X-ray specifics", training/augment.py's "fov" preset, docs/RESULTS.md).
KNOWN_EVIDENCE_DATE = "2026-12-05"


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint or ensemble as the card needs it: metadata, sizes and identity, no weights."""

    path: Path
    sha256: str
    meta: CheckpointMeta
    parameters: int
    pretrained_source: str  # the registry's words for where ImageNet weights come from
    members: tuple[tuple[str, CheckpointMeta, int, str], ...] = ()  # ensembles: name, meta, params, sha

    @property
    def is_ensemble(self) -> bool:
        return bool(self.members)

    @property
    def config(self) -> dict[str, Any]:
        """The training config: the checkpoint's, or an ensemble's first member's."""
        if self.meta.config or not self.members:
            return self.meta.config
        return self.members[0][1].config


def write_model_card(
    checkpoint_path: PathLike,
    out_path: PathLike,
    evaluation_dir: PathLike | Sequence[PathLike] | None = None,
    stress: PathLike | None = None,
) -> Path:
    """Write the Markdown model card of ``checkpoint_path`` (a .pt file, its run folder, or an ensemble)
    to ``out_path``; returns ``out_path``.

    ``evaluation_dir``: one or several ``pneumocxr evaluate`` output folders (each labelled by its
    split: test, external, or the optimistic validation). ``stress``: a stress-suite output folder or
    its stress.json; absent or unreadable, the card says "not run".
    """
    text = build_model_card(checkpoint_path, evaluation_dir=evaluation_dir, stress=stress)
    out = Path(out_path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot write the model card to {out} ({exc.strerror or exc}); choose another --out"
        ) from None
    logger.debug("wrote model card %s", out)
    return out


def build_model_card(
    checkpoint_path: PathLike,
    *,
    evaluation_dir: PathLike | Sequence[PathLike] | None = None,
    stress: PathLike | None = None,
    now: datetime | None = None,
) -> str:
    """The model card as Markdown text (see ``write_model_card``)."""
    return render_model_card(
        model_card_context(checkpoint_path, evaluation_dir=evaluation_dir, stress=stress, now=now)
    )


def model_card_context(
    checkpoint_path: PathLike,
    *,
    evaluation_dir: PathLike | Sequence[PathLike] | None = None,
    stress: PathLike | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything the template shows, as plain data (tests and other renderers can use it)."""
    loaded = load_for_card(checkpoint_path)
    meta, config = loaded.meta, loaded.config
    ranges = recorded_augmentation(config)  # the same ranges the stress suite flags coverage with
    augment = augmentation_text(str(_get(config, "train.augment", "unknown")), ranges)
    evaluations = [read_evaluation(d, loaded.sha256) for d in _as_list(evaluation_dir)]
    for e in evaluations:
        if not e["ok"]:
            logger.warning("model card: evaluation %s not shown: %s", e["path"], e["reason"])
    stress_data = read_stress(stress, loaded.sha256)
    if stress is not None and not stress_data["ok"]:
        logger.warning("model card: stress results not shown: %s", stress_data["reason"])
    when = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    return {
        "title": _title(loaded),
        "generated": when,
        "generator_version": __version__,
        "checkpoint": str(loaded.path),
        "sha256": loaded.sha256,
        "details": _details(loaded),
        "members": _members(loaded),
        "recipe": _recipe(config, meta.extra, augment),
        "task_text": _task_text(meta),
        "data": training_data(meta, ensemble=loaded.is_ensemble),
        "validation": validation_section(meta, evaluations, ensemble=loaded.is_ensemble),
        "evaluations": evaluations,
        "augmentation": augment,
        "stress": stress_section(stress_data, ranges),
        "operating": operating_point(meta, ensemble=loaded.is_ensemble),
        "limitations": limitations(meta, ranges, has_external=any(_beyond_selection(e) for e in evaluations)),
        "evidence_date": KNOWN_EVIDENCE_DATE,
        "commands": _commands(loaded),
    }


def _commands(loaded: LoadedModel) -> dict[str, str]:
    """The commands the card suggests, filled in with this checkpoint and its recorded data."""
    split = loaded.meta.extra.get("split")
    source = split.get("source") if isinstance(split, Mapping) else None
    ckpt, name = shlex.quote(str(loaded.path)), _label(loaded.path)
    data = shlex.quote(str(source)) if source else "DATA"
    evaluate = f"pneumocxr evaluate --checkpoint {ckpt}"
    val, test = shlex.quote(f"eval/{name}_val"), shlex.quote(f"eval/{name}_test")
    return {
        "test": f"{evaluate} --data {data} --split test --out {test}",
        "validation": f"{evaluate} --data {data} --split validation --stress --out {val}",
        "card": f"pneumocxr model-card --checkpoint {ckpt} --evaluation {test} --evaluation {val} "
        f"--stress {val} --out {shlex.quote(name + '_card.md')}",
        "local": f"{evaluate} --data LOCAL_DATA --split test --out eval/local --prevalence P",
    }


def _beyond_selection(evaluation: Mapping[str, Any]) -> bool:
    """An evaluation that read, and shows, images other than those that chose the model."""
    return bool(evaluation["ok"]) and not any(w in evaluation["label"] for w in SELECTION_WORDS)


def load_for_card(checkpoint_path: PathLike) -> LoadedModel:
    """Load a checkpoint or an ensemble file (run folder → its best.pt); CheckpointError if it cannot."""
    path = Path(checkpoint_path).expanduser()
    if path.is_dir():
        if not (path / "best.pt").is_file():
            raise CheckpointError(
                f"run folder {path} has no best.pt; finish training it or pass a checkpoint file"
            )
        path = path / "best.pt"
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found; pass a best.pt, its run folder or an ensemble file"
        )
    if is_ensemble_file(path):
        members, meta = load_ensemble(path)
        recorded = {m.get("name"): m for m in meta.extra.get("members", []) if isinstance(m, Mapping)}
        rows = tuple(
            (name, m, count_parameters(model)[0], str((recorded.get(name) or {}).get("sha256", "")))
            for name, (model, m) in zip(meta.model_kwargs["members"], members)
        )
        source = members[0][0].spec.pretrained_source
        return LoadedModel(path, _sha256(path), meta, sum(r[2] for r in rows), source, rows)
    model, meta = load_checkpoint(path)
    return LoadedModel(path, _sha256(path), meta, count_parameters(model)[0], model.spec.pretrained_source)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _as_list(value: PathLike | Sequence[PathLike] | None) -> list[PathLike]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return list(value)


def _get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def _label(path: Path) -> str:
    return path.parent.name if path.name == "best.pt" and path.parent.name else path.stem


def _title(loaded: LoadedModel) -> str:
    if loaded.is_ensemble:
        archs = sorted({m.model_name for _, m, _, _ in loaded.members})
        return f"{_label(loaded.path)} (ensemble of {len(loaded.members)} members: {', '.join(archs)})"
    return f"{_label(loaded.path)} ({loaded.meta.model_name}, {loaded.meta.task})"


def _task_text(meta: CheckpointMeta) -> str:
    if len(meta.class_names) == 2:
        return f"{meta.class_names[0]} vs {meta.class_names[1]} (binary)"
    return " / ".join(meta.class_names) + " (one class per film, the most probable)"


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M ({n:,})"


def _input_text(meta: CheckpointMeta) -> str:
    p = meta.preprocess
    channels = "1 channel (grayscale)" if p.channels == 1 else f"{p.channels} channels (grayscale repeated)"
    resize = (
        "whole image squashed to the square, no crop" if p.resize_mode == "squash" else f"{p.resize_mode}"
    )
    mean = ", ".join(f"{v:.3f}" for v in p.mean)
    std = ", ".join(f"{v:.3f}" for v in p.std)
    size = f"{p.image_size}×{p.image_size} px"
    return f"{size}, {channels}; {resize}; intensities in [0, 1], then mean ({mean}) / std ({std})"


def _weights_text(config: Mapping[str, Any], source: str) -> str:
    if not config:
        return f"{source} (whether they were used is not recorded)"
    if not _get(config, "model.pretrained", False):
        return f"none: trained from random initialisation (seed {_get(config, 'train.seed', '?')})"
    local = _get(config, "model.weights", "")
    if local:
        return f"ImageNet, from the local file {local}"
    return source if source.lower().startswith("imagenet") else f"ImageNet: {source}"


def _details(loaded: LoadedModel) -> dict:
    meta = loaded.meta
    versions = meta.versions
    trained_with = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "pneumocxr") or "not recorded"
    kwargs = ", ".join(
        f"{k}={v}" for k, v in meta.model_kwargs.items() if k not in ("members", "architectures")
    )
    rows = [
        [
            "Architecture",
            "ensemble" if loaded.is_ensemble else f"{meta.model_name}" + (f" ({kwargs})" if kwargs else ""),
        ],
        [
            "Task and classes",
            f"{meta.task}: " + ", ".join(f"{i} = {c}" for i, c in enumerate(meta.class_names)),
        ],
        ["Output", _output_text(meta)],
        ["Parameters", _millions(loaded.parameters) + (" in all members" if loaded.is_ensemble else "")],
        ["Input", _input_text(meta)],
        ["Pretrained weights", _weights_text(loaded.config, loaded.pretrained_source)],
        ["Created", meta.created or "not recorded"],
        ["pneumocxr version (training)", versions.get("pneumocxr", "not recorded")],
        ["Libraries (training)", trained_with],
        ["Checkpoint", f"{loaded.path} (sha256 {loaded.sha256})"],
        ["Format", "self-describing checkpoint: plain data, loads with torch.load(weights_only=True)"],
        ["Licence of the data", "CC BY 4.0 (Kermany, Zhang, Goldbaum, Mendeley Data v2)"],
    ]
    return table(["field", "value"], rows)


def _output_text(meta: CheckpointMeta) -> str:
    t = meta.temperature
    if len(meta.class_names) == 2:
        return (
            f"one logit for {meta.class_names[1]}; calibrated probability = sigmoid(logit / {t:.4g}); "
            f"{meta.class_names[1]} when it is ≥ {meta.threshold:.4f}"
        )
    return (
        f"{len(meta.class_names)} logits; probabilities = softmax(logits / {t:.4g}); the most probable class"
    )


def _members(loaded: LoadedModel) -> dict | None:
    if not loaded.is_ensemble:
        return None
    rows = [
        [
            name,
            m.model_name,
            _millions(n),
            f"{m.threshold:.4f}",
            f"{m.temperature:.4g}",
            sha[:16] or "not recorded",
        ]
        for name, m, n, sha in loaded.members
    ]
    return table(
        ["member", "architecture", "parameters", "own threshold", "temperature", "sha256 (first 16)"], rows
    )


_RECIPE = (
    ("model.name", "Model"),
    ("model.image_size", "Input size (0 = the model's default)"),
    ("model.dropout", "Head dropout"),
    ("train.lr", "Learning rate (Adam)"),
    ("train.weight_decay", "Weight decay"),
    ("train.batch_size", "Batch size"),
    ("train.max_epochs", "Max epochs"),
    ("train.early_stopping_patience", "Early-stopping patience"),
    ("train.lr_schedule", "LR schedule"),
    ("train.class_balance", "Class balance"),
    ("train.label_smoothing", "Label smoothing"),
    ("train.ema_decay", "EMA of the weights"),
    ("train.frozen_features", "Frozen-feature head phase"),
    ("train.finetune_epochs", "Fine-tuning epochs"),
    ("train.finetune_lr", "Fine-tuning LR"),
    ("train.precision", "Precision"),
    ("train.seed", "Seed"),
    ("train.threshold_rule", "Threshold rule"),
)
_EXTRA = (
    ("epochs_run", "Epochs run"),
    ("best_epoch", "Best epoch (selected on validation)"),
    ("best_phase", "Best phase"),
    ("monitor", "Selection metric"),
    ("accelerator", "Accelerator"),
    ("world_size", "Devices"),
    ("bn_recalibrated_layers", "BatchNorm layers re-estimated"),
)


def _recipe(config: Mapping[str, Any], extra: Mapping[str, Any], augment: str) -> dict | None:
    if not config:
        return None
    rows = [[label, _get(config, key)] for key, label in _RECIPE if _get(config, key) is not None]
    rows.insert(3, ["Augmentation", augment])
    rows += [[label, extra[key]] for key, label in _EXTRA if extra.get(key) is not None]
    return table(["setting", "value"], [[k, _setting(v)] for k, v in rows])


def _setting(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)
