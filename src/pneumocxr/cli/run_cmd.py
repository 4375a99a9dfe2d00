"""``pneumocxr run``: the main job (what ``make run`` does).

pre-flight (every model's pretrained weights, see run_weights) → data check → EDA → train the
preset's models (cpu, the default without a CUDA GPU: efficientnet_lite0 on cpu_accurate,
custom_cnn, vgg16_transfer; reference: custom_cnn and vgg16_transfer on the seed recipes) and any
``--models`` (threshold and temperature chosen on the carved validation split by training) →
evaluate and compare (on ``test`` when the data has one, else on the carved validation split and
the official ``val``, labelled as such) → Grad-CAM figure → shift-stress suite on each model's
validation split (run_robustness) → a model card per model → ``report.html``.

A model whose pretrained weights cannot be had (offline: VGG16's ImageNet file is not on PyPI) is
skipped, not trained from random weights and not fatal: a warning line when it is found and
again at the end, ``status: skipped`` with the reason and the fix in run_summary.json, a notice in
report.html. The run still exits 0 (see ``_exit_code``); when every model is skipped it fails.

A requested STEP that could not run (``run_steps.StepNotRun``: e.g. a module missing from this
install) is different: the run goes on with the other steps, keeps everything they produce, then
ends with one line on stderr naming the step and the reason, ``status: incomplete`` in
run_summary.json, and exit code 1. Steps left out with ``--until`` are not requested: exit 0.

Output tree (``--out``, default ``output/``)::

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
says how far the run got. ``--until STEP`` stops early (``--until eda``: look before training).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pneumocxr.cli.common_args import add_overrides_option
from pneumocxr.config import to_dict
from pneumocxr.data.discovery import discover
from pneumocxr.errors import WeightsUnavailableError
from pneumocxr.workflows.run import robustness as run_robustness
from pneumocxr.workflows.run import steps as run_steps
from pneumocxr.workflows.run import weights as run_weights
from pneumocxr.workflows.run.recipes import PRESETS, model_names, plan_models, resolve_preset
from pneumocxr.workflows.run.steps import RunState

STEPS: tuple[tuple[str, Callable[[RunState], str]], ...] = (
    ("data check", run_steps.data_check),
    ("eda", run_steps.eda),
    ("train", run_steps.train_models),
    ("evaluate and compare", run_steps.evaluate_and_compare),
    ("grad-cam", run_steps.gradcam),
    ("stress", run_robustness.stress),
    ("model cards", run_robustness.model_cards),
    ("report", run_steps.report),
)


def step_id(title: str) -> str:
    """``--until`` name of a step: "evaluate and compare" → "evaluate", "data check" → "data-check"."""
    return title.split(" and ")[0].replace(" ", "-")


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run",
        help="the whole pipeline: data check → EDA → train → evaluate → compare → Grad-CAM → report",
        description="Run the whole pipeline into --out. A re-run reuses finished work (trainings, "
        "cached images, predictions) and resumes an interrupted training.",
    )
    run.add_argument("--data", required=True, help="dataset folder (train/val/test × NORMAL/PNEUMONIA)")
    run.add_argument("--out", type=Path, default=Path("output"), help="output folder (default: output/)")
    run.add_argument(
        "--preset",
        choices=PRESETS,
        default="auto",
        help="reference: custom_cnn and vgg16_transfer on the GPU-sized seed recipes; cpu: "
        "efficientnet_lite0 on cpu_accurate, custom_cnn and vgg16_transfer on CPU-sized recipes; auto "
        "(the default): reference with a CUDA GPU, else cpu",
    )
    run.add_argument(
        "--models", nargs="+", default=[], metavar="NAME", help="more models to train besides the "
        "preset's (cpu: efficientnet_lite0, custom_cnn, vgg16_transfer; reference: custom_cnn, "
        "vgg16_transfer); see `pneumocxr models list`",
    )  # fmt: skip
    add_overrides_option(
        run,
        "override every model's recipe, e.g. --set train.max_epochs=3 model.image_size=128; "
        "MODEL:KEY=VALUE for one model, e.g. vgg16_transfer:model.weights=/path/vgg16.pth",
    )
    run.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per CPU)")
    run.add_argument(
        "--device", default="auto", help="evaluation device: auto, cpu, cuda (training: the recipe)"
    )
    run.add_argument(
        "--speed-seconds", type=float, default=2.0, help="seconds to measure each model's inference speed"
    )
    run.add_argument(
        "--n-boot", type=int, default=2000, help="bootstrap resamples behind each confidence interval"
    )
    run.add_argument(
        "--until",
        choices=[step_id(title) for title, _ in STEPS],
        default=step_id(STEPS[-1][0]),
        help="stop after this step (e.g. --until eda: look at the data before training)",
    )
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (training, image decoding): one log line per epoch and phase instead, as "
        "whenever stdout or stderr is not a terminal",
    )
    run.set_defaults(handler=_run)


def _prepare(args: argparse.Namespace) -> RunState:
    """Everything checked before any work: data found, preset and every model's recipe resolved."""
    dataset = discover(args.data)
    preset, why = resolve_preset(args.preset)
    plans = []
    if "train" in [step_id(title) for title, _ in _selected(args.until)]:
        names = model_names(args.models, preset)
        plans = plan_models(names, preset, args.data, args.out / "cache", args.overrides)
    state = RunState(
        dataset=dataset,
        out=args.out,
        workers=args.workers,
        plans=plans,
        progress=not args.no_progress,
        device=args.device,
        speed_seconds=args.speed_seconds,
        n_boot=args.n_boot,
    )
    state.summary.update(
        arguments={k: _json_default(v) for k, v in vars(args).items() if k != "handler"},
        data={
            "root": str(Path(dataset.root).resolve()),
            "layout": dataset.layout,
            "counts": dataset.counts(),
        },
        preset={"requested": args.preset, "resolved": preset, "why": why},
        overrides=list(args.overrides),
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


def _selected(until: str) -> tuple[tuple[str, Callable[[RunState], str]], ...]:
    ids = [step_id(title) for title, _ in STEPS]
    return STEPS[: ids.index(until) + 1] if until in ids else STEPS


def _run(args: argparse.Namespace) -> int:
    state = _prepare(args)
    if state.plans:
        print(f"preset {state.summary['preset']['resolved']} ({state.summary['preset']['why']}); models: "
              + ", ".join(p.label for p in state.plans), flush=True)  # fmt: skip
    started, steps = time.perf_counter(), []
    state.summary.update(started_at=_now(), status="running", steps=steps)
    selected = _selected(args.until)
    try:
        if state.plans:
            _preflight(state)
        for number, (name, step) in enumerate(selected, start=1):
            print(f"== [{number}/{len(selected)}] {name}", flush=True)
            begun = time.perf_counter()
            entry: dict[str, Any] = {"name": name, "status": "running"}
            steps.append(entry)
            try:
                entry["status"] = step(state)
            except run_steps.StepNotRun as exc:  # recorded; the remaining steps still run
                entry["status"] = f"not run: {exc}"
                print(f"   NOT RUN: {exc}", flush=True)
            except BaseException as exc:  # recorded, then raised on: Ctrl-C, Lightning's exit, errors
                interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
                entry["status"] = "interrupted" if interrupted else f"failed: {type(exc).__name__}: {exc}"
                state.summary["status"] = "interrupted" if interrupted else "failed"
                raise
            finally:
                entry["wall_s"] = round(time.perf_counter() - begun, 2)
                _record_models(state)
                _write_summary(state, started)
            print(f"   ({name}: {entry['wall_s']:.1f} s)", flush=True)
        state.summary["status"] = "incomplete" if _not_run(steps) else "completed"
    finally:
        _write_summary(state, started)
    print(f"done in {time.perf_counter() - started:.0f} s: results in {state.out / 'results'}, "
          f"plots in {state.out / 'plots'}, models in {state.out / 'models'}")  # fmt: skip
    for skipped in state.skipped.values():  # last, where it cannot scroll away
        print(skipped.warning(), flush=True)
    return _exit_code(state, steps)


def _not_run(steps: list[dict[str, Any]]) -> dict[str, str]:
    """Requested steps that could not run: step name → why."""
    prefix = "not run: "
    return {s["name"]: s["status"][len(prefix) :] for s in steps if str(s["status"]).startswith(prefix)}


def _exit_code(state: RunState, steps: list[dict[str, Any]]) -> int:
    """1 when a requested step could not run (one line on stderr naming it and why); else 0, also
    when some models were skipped for want of pretrained weights.

    A step that could not run is a hole in what the user asked for (no Grad-CAM figure, no
    report): a script or ``make`` must see it, so it is not a quiet "skipped". Everything the other
    steps produced is kept, and a re-run after the fix reuses it.

    Skipping is about the machine (offline), not a failure of the run: every other model is
    trained, evaluated and reported, and `make run` on an offline machine must not look failed
    (make stops at a non-zero exit and prints "Error"). A distinct non-zero code would make every
    offline run a "failure" that scripts learn to ignore. The skip is never silent instead: a
    warning as it happens and as the last lines printed, ``status: skipped`` with reason and fix
    for the model and ``skipped_models`` in run_summary.json (what a strict script should check),
    and a notice in report.html. No model trained at all is a failure: exit 2, via the error
    ``_preflight`` / the train step raise.
    """
    missing = _not_run(steps)
    if not missing:
        return 0
    why = "; ".join(f"step {name!r} could not run: {reason}" for name, reason in missing.items())
    print(
        f"pneumocxr: error: run incomplete: {why}; the other steps finished and their outputs are in "
        f"{state.out} (run_summary.json: status incomplete)",
        file=sys.stderr,
        flush=True,
    )
    return 1


def _preflight(state: RunState) -> None:
    """Pretrained weights of every model, before any work (run_weights); skipped models announced."""
    print("== pre-flight: pretrained weights", flush=True)
    begun = time.perf_counter()
    record: dict[str, Any] = {"pretrained_weights": {}}
    state.summary["preflight"] = record
    try:
        resolved, skipped = run_weights.check_pretrained(state.plans, state.out / "runs")
        record["pretrained_weights"].update(resolved)
        for name, how in resolved.items():
            print(f"   {name}: {how}")
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
        _record_models(state)
    print(f"   (pre-flight: {record['wall_s']:.1f} s)", flush=True)


def _record_models(state: RunState) -> None:
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


def _write_summary(state: RunState, started: float) -> None:
    """results/run_summary.json, rewritten atomically after every step."""
    from pneumocxr.models.checkpoint import library_versions

    summary = {
        **state.summary,
        "finished_at": _now() if state.summary.get("status") != "running" else None,
        "wall_s": round(time.perf_counter() - started, 2),
        "versions": {**library_versions(), **_more_versions()},
        "numbers_are_on": "see evaluations[].split: 'test' is held-out data; any 'validation' split "
        "chose the models and is optimistic",
    }
    path = state.out / "results" / "run_summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_finite(summary), indent=2, default=_json_default, allow_nan=False) + "\n")
    os.replace(tmp, path)


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


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return _finite(value.item())
    if isinstance(value, (str, int, float, bool, list)) or value is None:
        return value
    return str(value)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
