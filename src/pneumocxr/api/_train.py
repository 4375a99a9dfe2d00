"""``train``: one training run from a recipe (``pneumocxr train``), or its finished run reused."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumocxr.api._display import Figures, render_table, to_frame
from pneumocxr.config import RunConfig, apply_overrides, from_dict, load_yaml, resolve_recipe, to_dict
from pneumocxr.errors import ConfigError

__all__ = ["TrainRun", "resolve_config", "train"]

Overrides = Mapping[str, Any] | Sequence[str]
STATUSES = ("trained", "resumed", "reused")  # = training.reuse.STATUSES


def _flatten(overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}, "model.image_size": 128}`` → ``{"train.lr": 1e-3,
    "model.image_size": 128}``."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"override key {key!r}: use a dotted setting name such as 'train.lr'")
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = os.fspath(value) if isinstance(value, os.PathLike) else value
    return flat


def _apply(data: dict[str, Any], overrides: Overrides | None) -> dict[str, Any]:
    if not overrides:
        return data
    if isinstance(overrides, (str, bytes)):
        raise ConfigError(
            f"overrides={overrides!r}: give a dict ({{'train.lr': 1e-4}}) or a list of 'key=value'"
        )
    if not isinstance(overrides, Mapping):
        return apply_overrides(data, list(overrides))  # "key=value" strings, exactly as --set
    result = apply_overrides(data, [])  # a deep copy
    for dotted, value in _flatten(overrides).items():
        node = result
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return result


def resolve_config(recipe: str | os.PathLike | RunConfig, overrides: Overrides | None = None) -> RunConfig:
    """The ``RunConfig`` of ``recipe`` with ``overrides`` (defaults < recipe < overrides), checked:
    an unknown key is a ConfigError that suggests the closest valid one."""
    if isinstance(recipe, RunConfig):
        data = to_dict(recipe)
    else:
        data = load_yaml(resolve_recipe(recipe))
    return from_dict(RunConfig, _apply(data, overrides))


@dataclass(frozen=True)
class TrainRun:
    """A finished training run: where its model is (``best_checkpoint``), how it did on the carved
    validation split (``metrics``, optimistic: it chose the model), the operating point stored with
    it, the per-epoch ``history`` and ``figures["training_curves"]``.

    Example:
        >>> run.best_checkpoint, run.operating_point["threshold"]  # doctest: +SKIP
    """

    out_dir: Path
    best_checkpoint: Path  # out_dir/best.pt: pass it to evaluate, explain, load_predictor …
    status: str  # "trained", "resumed" or "reused" (a finished run with the same inputs)
    config: RunConfig
    # val_loss/acc/auc/sensitivity/specificity of best.pt (acc/sensitivity/specificity at 0.5)
    metrics: dict[str, float]
    operating_point: dict[str, Any]  # temperature and threshold chosen on validation, and its rule
    split: dict[str, Any]  # the patient-level split carved from train (patients and counts)
    best_epoch: int
    epochs_run: int
    wall_s: float
    note: str = ""  # why it was (re)trained, or reused
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def history(self) -> list[dict[str, str]]:
        """history.csv: one row per epoch (phase, epoch, train_loss, val_loss, val_auc, …)."""
        path = self.out_dir / "history.csv"
        if not path.is_file():
            return []
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def to_frame(self) -> Any:
        """``history`` as a pandas DataFrame with numeric columns (needs pandas)."""
        frame = to_frame(self.history)
        return frame.apply(_numeric) if not frame.empty else frame

    @property
    def figures(self) -> Figures:
        """``training_curves``: loss and validation metrics per epoch, as saved."""
        return Figures({"training_curves": self.out_dir / "training_curves.png"})

    def __repr__(self) -> str:
        auc = self.metrics.get("val_auc", float("nan"))
        return (
            f"TrainRun({self.config.model.name} {self.status} in {self.out_dir}: best epoch "
            f"{self.best_epoch} of {self.epochs_run}, validation AUC {auc:.4f})"
        )

    def _repr_html_(self) -> str:
        n_val = sum(self.split.get("val_counts", []))
        patients = len(self.split.get("val_patients", []))
        rows = [[k, f"{v:.4f}"] for k, v in self.metrics.items()]
        op = self.operating_point
        for key in ("threshold", "temperature", "sensitivity", "specificity"):
            if isinstance(op.get(key), (int, float)):
                rows.append([f"operating point: {key}", f"{op[key]:.4f}"])
        caption = (
            f"{self.config.model.name} ({self.status}, {self.wall_s:.0f} s): best epoch {self.best_epoch} of "
            f"{self.epochs_run}; validation = {n_val} images of {patients} patients carved from train"
        )
        notes = [
            "Validation chose this model and its threshold: these numbers are optimistic. "
            "Judge it on data it never saw (evaluate a test split or another hospital's films).",
            f"best model: {self.best_checkpoint}",
        ]
        return render_table(caption=caption, columns=["metric", "value"], rows=rows, notes=notes)


def _numeric(column: Any) -> Any:
    import pandas as pd

    converted = pd.to_numeric(column, errors="coerce")
    return converted if converted.notna().any() else column


def train(
    recipe: str | os.PathLike | RunConfig,
    out_dir: str | os.PathLike,
    overrides: Overrides | None = None,
    *,
    reuse: bool = False,
    resume: bool = False,
    progress: bool = False,
) -> TrainRun:
    """Train a model from a recipe (``pneumocxr train --config RECIPE --set … --out OUT_DIR``).

    The validation split is carved from the data's ``train`` folder by patient; the temperature and
    decision threshold are chosen on it and stored in ``OUT_DIR/best.pt`` with everything needed to
    load it again (model, preprocessing, split, config).

    Args:
        recipe: a shipped recipe name (``"cpu_fast"``, ``"smoke"``, ``"seed_vgg16"`` …: the
            ``configs/`` folder), a YAML path, or a ``RunConfig``.
        out_dir: the run folder (config.yaml, checkpoints/, history.csv, training_curves.png, best.pt).
        overrides: settings on top of the recipe, as a dict of dotted keys or nested dicts with
            Python values — ``{"data.root": "data/chest_xray", "train.max_epochs": 2}`` or
            ``{"train": {"max_epochs": 2}}`` — or a list of ``"key=value"`` strings as ``--set`` takes.
        reuse: when ``out_dir`` already holds a finished training with the same inputs (config and
            training images), return it without training; resume it if it was interrupted (what
            ``pneumocxr run`` does on a re-run). Other inputs: the old folder is moved aside, never deleted.
        resume: continue the run in ``out_dir`` from its ``checkpoints/last.ckpt``.
        progress: progress bars (drawn on a terminal only); otherwise one log line per epoch.

    Returns:
        A ``TrainRun``: ``best_checkpoint``, validation ``metrics``, ``operating_point``, ``split``,
        ``history``/``to_frame()`` (per epoch) and ``figures["training_curves"]``.

    Raises:
        ConfigError: unknown recipe or setting (with the closest valid name), a bad value, or
            ``reuse`` and ``resume`` together. DatasetError: ``data.root`` holds no usable dataset.
        WeightsUnavailableError: ``model.pretrained`` without reachable ImageNet weights.

    Example:
        >>> run = pneumocxr.train("cpu_fast", "runs/cpu_fast",  # doctest: +SKIP
        ...                       {"data.root": "data/chest_xray", "train.finetune_epochs": 1})
        >>> run.best_checkpoint, run.metrics["val_auc"]  # doctest: +SKIP
        (PosixPath('runs/cpu_fast/best.pt'), 0.991)
    """
    if reuse and resume:
        raise ConfigError("train(reuse=True) already resumes an interrupted run: drop resume=True")
    config = resolve_config(recipe, overrides)
    out = Path(out_dir)
    for name in ("lightning.pytorch", "lightning.fabric"):  # as the CLI: Lightning prints through its own
        logging.getLogger(name).propagate = False  # handler; propagating too would print every line twice
    if reuse:
        from pneumocxr.training.reuse import train_or_reuse  # Lightning: only when training

        outcome = train_or_reuse(config, out, progress=progress)
        return TrainRun(
            out_dir=out,
            best_checkpoint=outcome.best_checkpoint,
            status=outcome.status,
            config=config,
            metrics=outcome.metrics,
            operating_point=outcome.operating_point,
            split=outcome.split,
            best_epoch=outcome.best_epoch,
            epochs_run=outcome.epochs_run,
            wall_s=outcome.wall_s,
            note=outcome.note,
            files=_files(out),
        )
    from pneumocxr.training import train as _train

    result = _train(config, out, resume=resume, progress=progress)
    return TrainRun(
        out_dir=out,
        best_checkpoint=result.best_checkpoint,
        status="resumed" if resume else "trained",
        config=config,
        metrics=result.metrics,
        operating_point=result.operating_point,
        split=result.split,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        wall_s=result.wall_s,
        files=_files(out),
    )


def _files(out: Path) -> dict[str, Path]:
    names = {"config_yaml": "config.yaml", "history_csv": "history.csv", "curves_png": "training_curves.png"}
    return {key: out / name for key, name in names.items()}
