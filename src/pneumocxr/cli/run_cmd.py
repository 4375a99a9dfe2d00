"""``pneumocxr run``: the main job (what ``make run`` does).

The pipeline is a list of named steps, each ONE library call plus its printout; later stages
(train, evaluate, explain …) append to ``STEPS``. A step gets the shared ``RunState`` and returns
nothing: what it produces goes into files under ``--out`` and into ``state`` for later steps.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumocxr.cli.data_check import format_report
from pneumocxr.cli.data_eda import format_summary
from pneumocxr.data.check import check_dataset
from pneumocxr.data.discovery import Dataset, discover
from pneumocxr.data.eda import run_eda


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser("run", help="the whole pipeline: data check → EDA (→ train → evaluate …)")
    run.add_argument("--data", required=True, help="dataset folder (train/val/test × NORMAL/PNEUMONIA)")
    run.add_argument("--out", type=Path, default=Path("output"), help="output folder (default: output/)")
    run.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per CPU)")
    run.set_defaults(handler=_run)


@dataclass
class RunState:
    """What the steps share: the inputs, and each step's result by step name."""

    dataset: Dataset
    out: Path
    workers: int | None
    results: dict[str, Any] = field(default_factory=dict)


def _data_check(state: RunState) -> None:
    """Report (never fail on) unreadable files and duplicates; the full report as JSON."""
    report = check_dataset(state.dataset, workers=state.workers)
    path = report.write_json(state.out / "results" / "data_check.json")
    state.results["data check"] = report
    print(format_report(report, max_listed=5, full=str(path)))


def _eda(state: RunState) -> None:
    summary = run_eda(state.dataset, state.out, workers=state.workers)
    state.results["eda"] = summary
    print(format_summary(summary))


STEPS: tuple[tuple[str, Callable[[RunState], None]], ...] = (
    ("data check", _data_check),
    ("eda", _eda),
)


def _run(args: argparse.Namespace) -> int:
    state = RunState(dataset=discover(args.data), out=args.out, workers=args.workers)
    for number, (name, step) in enumerate(STEPS, start=1):
        print(f"== [{number}/{len(STEPS)}] {name}", flush=True)
        started = time.perf_counter()
        step(state)
        print(f"   ({name}: {time.perf_counter() - started:.1f} s)", flush=True)
    print(f"done: results in {state.out / 'results'}, plots in {state.out / 'plots'}")
    return 0
