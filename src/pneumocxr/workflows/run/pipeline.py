"""The main job, ``pneumocxr run`` (what ``make run`` does): ``run_pipeline(RunRequest) → RunResult``.

pre-flight (every model's pretrained weights, see ``weights``) → data check → EDA → train the
preset's models (cpu, the default without a CUDA GPU: efficientnet_lite0 on cpu_accurate,
custom_cnn, vgg16_transfer; reference: custom_cnn and vgg16_transfer on the seed recipes) and any
extra ``models`` (threshold and temperature chosen on the carved validation split by training) →
evaluate and compare (on ``test`` when the data has one, else on the carved validation split and
the official ``val``, labelled as such) → Grad-CAM figure → shift-stress suite on each model's
validation split (``robustness``) → a model card per model → ``report.html``.

A model whose pretrained weights cannot be had (offline: VGG16's ImageNet file is not on PyPI) is
skipped, not trained from random weights and not fatal: a warning line when it is found (and, by
the CLI, again at the end), ``status: skipped`` with the reason and the fix in run_summary.json, a
notice in report.html. The run still exits 0 (see ``RunResult.exit_code``); when every model is
skipped it fails (WeightsUnavailableError).

A requested STEP that could not run (``StepNotRun``: e.g. a module missing from this install) is
different: the run goes on with the other steps, keeps everything they produce, then ends with
``status: incomplete`` in run_summary.json and exit code 1, ``RunResult.problem`` naming the step
and the reason. Steps left out with ``until`` are not requested: exit 0.

Output tree (``out``, default ``output/``):

    runs/<model>/                 training run folders (inputs.json, checkpoints/, history.csv, best.pt)
    models/<model>.pt             each run's best.pt
    evaluation/<model>/           per-image predictions, metrics with CIs, plots (first split)
    official_val/                 the same tree for the official val/ when there is no test split
    stress/<model>/               stress.{csv,json,md,png}: validation under acquisition shifts
    model_cards/<model>.md        intended use, data, metrics with CIs, stress results, limitations
    plots/                        dataset_distribution, roc_comparison, confusion_matrix_comparison,
                                  gradcam_visualizations (.png)
    results/                      performance_metrics.csv, data_check.json, comparison.{csv,md},
                                  stress_summary.csv, run_summary.json
    cache/                        preprocessed images, shared by EDA, training and evaluation
    report.html

Re-running with unchanged inputs reuses finished trainings, resumes interrupted ones, reuses the
image cache and saved predictions. Interrupting loses nothing already finished; run_summary.json
says how far the run got (an error or Ctrl-C is raised on after it is written). ``until`` stops
early (``until="eda"``: look before training).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pneumocxr.config import to_dict
from pneumocxr.data.discovery import discover
from pneumocxr.errors import ConfigError, WeightsUnavailableError
from pneumocxr.workflows.run import robustness, steps
from pneumocxr.workflows.run import weights as run_weights
from pneumocxr.workflows.run.recipes import model_names, plan_models, resolve_preset
from pneumocxr.workflows.run.state import Notify, RunState, StepNotRun, log_line
from pneumocxr.workflows.run.summary import json_default, not_run, now, record_models, write_summary
from pneumocxr.workflows.run.weights import SkippedModel

Step = Callable[[RunState], str]  # a step: the shared state in, a status line for the summary out

STEPS: tuple[tuple[str, Step], ...] = (
    ("data check", steps.data_check),
    ("eda", steps.eda),
    ("train", steps.train_models),
    ("evaluate and compare", steps.evaluate_and_compare),
    ("grad-cam", steps.gradcam),
    ("stress", robustness.stress),
    ("model cards", robustness.model_cards),
    ("report", steps.report),
)


@dataclass(frozen=True)
class RunRequest:
    """What a run is asked to do: the options of ``pneumocxr run``, typed."""

    data: str | os.PathLike  # dataset folder (train/val/test × NORMAL/PNEUMONIA), manifest or .npz
    out: Path = Path("output")  # output folder; a re-run reuses what is finished in it
    preset: str = "auto"  # auto | cpu | reference (recipes.PRESETS): which models, on which recipes
    models: tuple[str, ...] = ()  # registered models to train besides the preset's
    overrides: tuple[str, ...] = ()  # KEY=VALUE for every model's recipe, MODEL:KEY=VALUE for one
    workers: int | None = None  # image decoding processes; None: one per CPU
    device: str = "auto"  # evaluation device: auto, cpu, cuda (training's is in the recipe)
    speed_seconds: float = 2.0  # seconds to measure each model's inference speed
    n_boot: int = 2000  # bootstrap resamples behind each confidence interval
    until: str | None = None  # stop after this step (one of step_ids()); None: every step
    progress: bool = True  # progress bars where a terminal can draw them; else a line per phase
    arguments: Mapping[str, Any] = field(default_factory=dict)  # the command line as given, for
    # run_summary.json; empty: this request's fields


@dataclass(frozen=True)
class RunResult:
    """How a run ended that was neither interrupted nor failed (those raise, after the summary)."""

    out: Path
    status: str  # "completed" | "incomplete" (a requested step could not run)
    wall_s: float  # from the first step's start (pre-flight included) to the end
    summary_file: Path  # results/run_summary.json
    not_run: dict[str, str]  # requested steps that could not run: step name → why
    skipped: dict[str, SkippedModel]  # models not trained for want of pretrained weights, and why

    @property
    def exit_code(self) -> int:
        """1 when a requested step could not run (``problem`` says which and why); else 0, also when
        some models were skipped for want of pretrained weights.

        A step that could not run is a hole in what the user asked for (no Grad-CAM figure, no
        report): a script or ``make`` must see it, so it is not a quiet "skipped". Everything the
        other steps produced is kept, and a re-run after the fix reuses it.

        Skipping is about the machine (offline), not a failure of the run: every other model is
        trained, evaluated and reported, and `make run` on an offline machine must not look failed
        (make stops at a non-zero exit and prints "Error"). A distinct non-zero code would make
        every offline run a "failure" that scripts learn to ignore. The skip is never silent
        instead: a warning as it happens and as the last lines printed, ``status: skipped`` with
        reason and fix for the model and ``skipped_models`` in run_summary.json (what a strict
        script should check), and a notice in report.html. No model trained at all is a failure:
        the pre-flight or the train step raises WeightsUnavailableError (exit 2 from the CLI).
        """
        return 1 if self.not_run else 0

    @property
    def problem(self) -> str:
        """One line naming each requested step that could not run, and why; "" when none."""
        if not self.not_run:
            return ""
        why = "; ".join(f"step {name!r} could not run: {reason}" for name, reason in self.not_run.items())
        return (
            f"run incomplete: {why}; the other steps finished and their outputs are in {self.out} "
            "(run_summary.json: status incomplete)"
        )


def step_id(title: str) -> str:
    """``until`` name of a step: "evaluate and compare" → "evaluate", "data check" → "data-check"."""
    return title.split(" and ")[0].replace(" ", "-")


def step_ids() -> list[str]:
    """The ``until`` names of the steps, in the order they run."""
    return [step_id(title) for title, _ in STEPS]


def selected_steps(until: str | None) -> tuple[tuple[str, Step], ...]:
    """The steps up to and including ``until`` (all of them for None)."""
    if until is None:
        return STEPS
    ids = step_ids()
    if until not in ids:
        raise ConfigError(f"--until {until!r} is not a step; use one of {', '.join(ids)}")
    return STEPS[: ids.index(until) + 1]


def run_pipeline(request: RunRequest, notify: Notify = log_line) -> RunResult:
    """Run the requested steps into ``request.out``; each line of the account goes to ``notify``.

    Raises the project's errors (ConfigError, DatasetError, WeightsUnavailableError …) and passes
    KeyboardInterrupt on, in both cases after run_summary.json says how far the run got.
    """
    state = prepare(request, notify)
    if state.plans:
        preset = state.summary["preset"]
        models = ", ".join(p.label for p in state.plans)
        notify(f"preset {preset['resolved']} ({preset['why']}); models: {models}")
    started, done = time.perf_counter(), []
    state.summary.update(started_at=now(), status="running", steps=done)
    selected = selected_steps(request.until)
    try:
        if state.plans:
            _preflight(state)
        for number, (name, step) in enumerate(selected, start=1):
            notify(f"== [{number}/{len(selected)}] {name}")
            _run_step(state, name, step, started)  # appends its entry to ``done``
        state.summary["status"] = "incomplete" if not_run(done) else "completed"
    finally:
        path = write_summary(state, started)
    return RunResult(
        out=state.out,
        status=state.summary["status"],
        wall_s=time.perf_counter() - started,
        summary_file=path,
        not_run=not_run(done),
        skipped=dict(state.skipped),
    )


def prepare(request: RunRequest, notify: Notify = log_line) -> RunState:
    """Everything checked before any work: data found, preset and every model's recipe resolved."""
    dataset = discover(request.data)
    out = Path(request.out)
    preset, why = resolve_preset(request.preset)
    plans = []
    if "train" in [step_id(title) for title, _ in selected_steps(request.until)]:
        names = model_names(list(request.models), preset)
        plans = plan_models(names, preset, request.data, out / "cache", list(request.overrides))
    state = RunState(
        dataset=dataset,
        out=out,
        workers=request.workers,
        plans=plans,
        progress=request.progress,
        device=request.device,
        speed_seconds=request.speed_seconds,
        n_boot=request.n_boot,
        notify=notify,
    )
    arguments = request.arguments or {
        f.name: getattr(request, f.name) for f in fields(request) if f.name != "arguments"
    }
    state.summary.update(
        arguments={k: json_default(v) for k, v in arguments.items()},
        data={
            "root": str(Path(dataset.root).resolve()),
            "layout": dataset.layout,
            "counts": dataset.counts(),
        },
        preset={"requested": request.preset, "resolved": preset, "why": why},
        overrides=list(request.overrides),
        models={
            p.name: {
                "status": "planned",
                "recipe": p.recipe,
                "recipe_name": p.recipe_name,
                "notes": list(p.notes),
                "config": to_dict(p.config),
            }
            for p in plans
        },
    )
    return state


def _run_step(state: RunState, name: str, step: Step, started: float) -> None:
    """One step, its outcome recorded in run_summary.json's ``steps`` whatever happens."""
    begun = time.perf_counter()
    entry: dict[str, Any] = {"name": name, "status": "running"}
    state.summary["steps"].append(entry)
    try:
        entry["status"] = step(state)
    except StepNotRun as exc:  # recorded; the remaining steps still run
        entry["status"] = f"not run: {exc}"
        state.notify(f"   NOT RUN: {exc}")
    except BaseException as exc:  # recorded, then raised on: Ctrl-C, Lightning's exit, errors
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        entry["status"] = "interrupted" if interrupted else f"failed: {type(exc).__name__}: {exc}"
        state.summary["status"] = "interrupted" if interrupted else "failed"
        raise
    finally:
        entry["wall_s"] = round(time.perf_counter() - begun, 2)
        record_models(state)
        write_summary(state, started)
    state.notify(f"   ({name}: {entry['wall_s']:.1f} s)")


def _preflight(state: RunState) -> None:
    """Pretrained weights of every model, before any work (``weights``); skipped models announced."""
    state.notify("== pre-flight: pretrained weights")
    begun = time.perf_counter()
    record: dict[str, Any] = {"pretrained_weights": {}}
    state.summary["preflight"] = record
    try:
        resolved, skipped = run_weights.check_pretrained(state.plans, state.out / "runs")
        record["pretrained_weights"].update(resolved)
        for name, how in resolved.items():
            state.notify(f"   {name}: {how}")
        for model in skipped.values():
            record["pretrained_weights"][model.name] = "unavailable: skipped"
            state.skip(model)
        if not state.trainable:
            raise WeightsUnavailableError(run_weights.nothing_to_train(state.skipped))
    except BaseException as exc:
        state.summary["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        raise
    finally:
        record["wall_s"] = round(time.perf_counter() - begun, 2)
        record_models(state)
    state.notify(f"   (pre-flight: {record['wall_s']:.1f} s)")
