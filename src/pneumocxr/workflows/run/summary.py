"""``results/run_summary.json`` of ``pneumocxr run``: how far the run got, rewritten after every step.

It is what a script reads (``status``, ``skipped_models``, each step's status) and what
report.html shows about the run; an interrupted run leaves it saying where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pneumocxr.workflows.run.state import RunState

NOT_RUN = "not run: "  # a step status that starts with this: the step could not run (StepNotRun)


def not_run(steps: list[dict[str, Any]]) -> dict[str, str]:
    """Requested steps that could not run: step name → why."""
    return {s["name"]: s["status"][len(NOT_RUN) :] for s in steps if str(s["status"]).startswith(NOT_RUN)}


def record_models(state: RunState) -> None:
    """Each model into the summary: skipped (why, the fix) or trained (which run, how, its validation)."""
    for name, skipped in state.skipped.items():
        state.summary["models"][name].update(skipped.as_dict())
    state.summary["skipped_models"] = {name: s.reason for name, s in state.skipped.items()}
    for name, outcome in state.results.get("train", {}).items():
        state.summary["models"][name].update(
            status="trained",
            run_dir=str(outcome.run_dir),
            checkpoint=str(state.model_file(name)),
            training=outcome.status,
            training_note=outcome.note,
            training_wall_s=round(outcome.wall_s, 2),
            best_epoch=outcome.best_epoch,
            epochs_run=outcome.epochs_run,
            validation_metrics=outcome.metrics,
            operating_point=outcome.operating_point,
            validation_split={k: v for k, v in outcome.split.items() if k != "val_patients"},
        )


def write_summary(state: RunState, started: float) -> Path:
    """results/run_summary.json, rewritten atomically; ``started`` is the run's ``perf_counter``."""
    from pneumocxr.models.checkpoint import library_versions

    summary = {
        **state.summary,
        "finished_at": now() if state.summary.get("status") != "running" else None,
        "wall_s": round(time.perf_counter() - started, 2),
        "versions": {**library_versions(), **_more_versions()},
        "numbers_are_on": "see evaluations[].split: 'test' is held-out data; any 'validation' split "
        "chose the models and is optimistic",
    }
    path = summary_file(state.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_finite(summary), indent=2, default=json_default, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def summary_file(out: Path) -> Path:
    return out / "results" / "run_summary.json"


def _more_versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for dist in ("lightning", "numpy", "scikit-learn"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def _finite(value: Any) -> Any:
    """Strict JSON: NaN (an undefined metric) becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_default(value: Any) -> Any:
    """A value as JSON can hold it: paths as strings, numpy scalars as numbers, the rest as text."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return _finite(value.item())
    if isinstance(value, (str, int, float, bool, list)) or value is None:
        return value
    return str(value)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
