"""``train_or_reuse``: train into a run folder only when it does not already hold that very training.

A pipeline that is re-run (after a crash, a Ctrl-C, or just again) must neither redo hours of
finished training nor silently keep a model trained on other inputs. Each run folder therefore
records its inputs before training starts (``inputs.json``: the resolved config and a fingerprint
of the training images: their number and a hash of their relative paths and sizes). Then:

- inputs unchanged (see ``changed_inputs``) and ``best.pt`` present (written atomically, as
  training's last act): reuse;
- inputs unchanged, no ``best.pt`` but a readable ``checkpoints/last.ckpt``: resume (``train(resume=True)``);
- anything else (other inputs, no record, nothing resumable): a fresh training starts. An old
  folder holding weights is moved aside to ``<name>.previous-<UTC time>`` (never deleted: it may be
  the only copy of a long run); one killed before its first checkpoint holds only logs and is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from pneumocxr.config import RunConfig, to_dict
from pneumocxr.data.discovery import discover
from pneumocxr.training.train import train

logger = logging.getLogger(__name__)

INPUTS_FILE = "inputs.json"
BEST_FILE = "best.pt"
STATUSES = ("trained", "resumed", "reused")


@dataclass(frozen=True)
class TrainOutcome:
    """A run folder's finished training, however it came about."""

    model: str  # registry name (config.model.name)
    run_dir: Path
    best_checkpoint: Path  # run_dir/best.pt
    status: str  # one of STATUSES
    wall_s: float  # time spent in this call (a reused run costs only the checks)
    metrics: dict[str, float]  # validation metrics of best.pt (raw sigmoid at 0.5), as training stored them
    operating_point: dict[str, Any]  # threshold and temperature chosen on validation
    split: dict[str, Any]  # the carved split (SplitInfo.as_dict()) best.pt records
    best_epoch: int
    epochs_run: int
    note: str = ""  # why it was (re)trained; where an earlier run was moved
    moved_aside: Path | None = field(default=None)


def data_fingerprint(root: str | os.PathLike) -> dict[str, Any]:
    """Number and identity of the training images: relative path, size and archive member of each.

    Sizes catch a replaced image; modification times are left out on purpose, so that copying the
    dataset (which changes them) does not force a retraining.
    """
    dataset = discover(root)
    base = Path(dataset.root)
    base = base.parent if base.is_file() else base  # manifest or .npz: paths relative to its folder
    lines = []
    for record in dataset.in_split("train"):
        try:
            relative = record.path.relative_to(base)
        except ValueError:  # a manifest may point anywhere
            relative = record.path
        size = record.path.stat().st_size
        lines.append(f"{relative.as_posix()}\t{size}\t{record.member or ''}\t{record.label}")
    lines.sort()
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return {"root": str(base.resolve()), "train_images": len(lines), "train_files_sha256": digest}


def train_inputs(config: RunConfig) -> dict[str, Any]:
    """What ``inputs.json`` records: the resolved config and the training data's fingerprint."""
    inputs = {"config": to_dict(config), "data": data_fingerprint(config.data.root)}
    return json.loads(json.dumps(inputs))  # the JSON form, so it compares equal to the stored one


def changed_inputs(stored: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ (``["no inputs.json record …"]`` when nothing is stored).

    A config key the record lacks counts as unchanged while it has its default value: it was added
    to pneumocxr after that training, and a new setting's default keeps the old behaviour.
    """
    if stored is None:
        return [f"no {INPUTS_FILE} record of the inputs"]
    before, after = _flatten(stored), _flatten(now)
    defaults = _flatten({"config": to_dict(RunConfig())})
    changed = []
    for key in sorted(set(before) | set(after)):
        old = before.get(key, defaults.get(key)) if key.startswith("config.") else before.get(key)
        if old != after.get(key):
            changed.append(key)
    return changed


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def train_or_reuse(config: RunConfig, run_dir: str | os.PathLike, *, progress: bool = True) -> TrainOutcome:
    """The finished training of ``config`` in ``run_dir``: reused, resumed or trained (module docstring)."""
    start = time.monotonic()
    run_dir = Path(run_dir)
    inputs = train_inputs(config)
    best = run_dir / BEST_FILE
    changed = changed_inputs(_read_inputs(run_dir), inputs) if run_dir.exists() else []
    moved, note = None, ""
    if run_dir.exists() and not changed and _readable(best):
        logger.info("%s: finished training with unchanged inputs: reusing %s", config.model.name, best)
        return _outcome(config, run_dir, "reused", time.monotonic() - start, "inputs unchanged")
    if run_dir.exists() and not changed and _resumable(run_dir):
        logger.info("%s: interrupted training with unchanged inputs: resuming", config.model.name)
        train(config, run_dir, resume=True, progress=progress)
        return _outcome(config, run_dir, "resumed", time.monotonic() - start, "resumed an interrupted run")
    if run_dir.exists() and any(run_dir.iterdir()):
        why = "inputs changed: " + ", ".join(changed[:8]) if changed else "nothing finished or resumable"
        if _holds_weights(run_dir):
            moved = _move_aside(run_dir)
            note = f"{why}; the earlier run folder was moved to {moved}"
        else:  # killed before its first checkpoint: only logs and the config, nothing worth keeping
            shutil.rmtree(run_dir)
            note = f"{why}; the earlier run had no checkpoint yet and was removed"
        logger.warning("%s: %s", config.model.name, note)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_inputs(run_dir, inputs)
    train(config, run_dir, resume=False, progress=progress)
    return _outcome(config, run_dir, "trained", time.monotonic() - start, note or "new run", moved)


def _outcome(
    config: RunConfig, run_dir: Path, status: str, wall_s: float, note: str, moved: Path | None = None
) -> TrainOutcome:
    """The outcome, read back from best.pt itself, so reused and new runs report the same way."""
    best = run_dir / BEST_FILE
    data = torch.load(best, map_location="cpu", weights_only=True, mmap=True)
    extra = data.get("extra", {})
    return TrainOutcome(
        model=config.model.name,
        run_dir=run_dir,
        best_checkpoint=best,
        status=status,
        wall_s=wall_s,
        metrics={k: float(v) for k, v in data.get("metrics", {}).items()},
        operating_point=dict(extra.get("operating_point", {})),
        split=dict(extra.get("split", {})),
        best_epoch=int(extra.get("best_epoch", 0)),
        epochs_run=int(extra.get("epochs_run", 0)),
        note=note,
        moved_aside=moved,
    )


def _read_inputs(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / INPUTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_inputs(run_dir: Path, inputs: dict[str, Any]) -> None:
    """Atomically, so an interrupted write never leaves a record that matches nothing."""
    tmp = run_dir / f".{INPUTS_FILE}.tmp"
    tmp.write_text(json.dumps(inputs, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, run_dir / INPUTS_FILE)


def _readable(path: Path) -> bool:
    """A complete torch zip file (a write cut off by a kill lacks the zip's closing directory)."""
    return path.is_file() and zipfile.is_zipfile(path)


def _resumable(run_dir: Path) -> bool:
    lasts = list((run_dir / "checkpoints").rglob("last.ckpt"))
    main_last = run_dir / "checkpoints" / "last.ckpt"
    return main_last in lasts and all(_readable(p) for p in lasts)


def _holds_weights(run_dir: Path) -> bool:
    return any(p.suffix in (".pt", ".ckpt") for p in run_dir.rglob("*") if p.is_file())


def _move_aside(run_dir: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = run_dir.with_name(f"{run_dir.name}.previous-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.previous-{stamp}-{n}")
    os.replace(run_dir, target)
    return target
