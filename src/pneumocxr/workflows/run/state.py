"""What the steps of ``pneumocxr run`` share: the ``RunState``, and how a step says it could not run.

The pipeline tells its user what it is doing as it goes (a step can take twenty minutes), through
one injected ``Notify`` callable: the CLI prints each line, a library caller may collect them; by
default they are logged. Nothing below the CLI prints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumocxr.data.discovery import Dataset
from pneumocxr.workflows.run.recipes import ModelPlan
from pneumocxr.workflows.run.weights import SkippedModel

logger = logging.getLogger(__name__)

Notify = Callable[[str], None]  # receives each line of the run's account, in order (may hold newlines)


def log_line(line: str) -> None:
    """The default ``Notify``: each line to this module's logger at INFO."""
    logger.info("%s", line)


@dataclass
class EvalSplit:
    """One split the models are evaluated and compared on."""

    split: str  # the split's name in every output: its label ("test", "validation (used for …)")
    kind: str  # "test" | "carved_validation" | "official_val"
    dataset: Dataset
    out_dir: Path  # compare_models' out_dir: evaluation/<model>/, results/, plots/ below it
    used_for_selection: bool


@dataclass
class RunState:
    """What the steps share: the inputs, the plan, and each step's results."""

    dataset: Dataset
    out: Path
    workers: int | None
    plans: list[ModelPlan] = field(default_factory=list)
    progress: bool = True  # progress bars (training, decoding) where a terminal can draw them
    device: str = "auto"
    speed_seconds: float = 2.0
    n_boot: int = 2000  # bootstrap resamples behind every confidence interval
    notify: Notify = log_line  # where each step's account goes (the CLI: print)
    results: dict[str, Any] = field(default_factory=dict)  # step name → its result
    summary: dict[str, Any] = field(default_factory=dict)  # run_summary.json beyond the steps
    skipped: dict[str, SkippedModel] = field(default_factory=dict)  # models NOT trained, and why

    @property
    def trainable(self) -> list[ModelPlan]:
        """The plans still to train: every plan but the skipped ones."""
        return [p for p in self.plans if p.name not in self.skipped]

    def skip(self, model: SkippedModel) -> None:
        """Record a model that will not be trained, and say so at once (again at the end of the run)."""
        self.skipped[model.name] = model
        self.notify(model.warning())

    @property
    def cache_dir(self) -> Path:
        return self.out / "cache"

    @property
    def performance_csv(self) -> Path:
        return self.out / "results" / "performance_metrics.csv"

    def model_file(self, name: str) -> Path:
        return self.out / "models" / f"{name}.pt"


class StepNotRun(Exception):
    """A requested step that could not run here (a module missing from this install, …).

    Not a failure of the work before it: the pipeline records it, goes on with the remaining steps
    (nothing done is lost) and its result has a non-zero exit code naming the step and the reason
    (``RunResult.exit_code``).
    """
