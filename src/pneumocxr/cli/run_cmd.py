"""``pneumocxr run``: the main job (what ``make run`` does); the pipeline is
``pneumocxr.workflows.run`` (its ``pipeline`` module says what each step does and writes).

Parse → ``RunRequest`` → ONE call, ``run_pipeline`` → print. Each line of the run's account is
printed as it happens; at the end, where it cannot scroll away: where the results are, a warning
per model skipped for want of pretrained weights (exit 0 all the same), and when a requested step
could not run, one line on stderr naming it and exit code 1. An error or Ctrl-C is ``main``'s:
one line, exit 2 or 130, after run_summary.json says how far the run got.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pneumocxr.cli.common_args import add_overrides_option
from pneumocxr.workflows.run.pipeline import RunRequest, run_pipeline, step_ids
from pneumocxr.workflows.run.recipes import PRESETS


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
    steps = step_ids()
    run.add_argument(
        "--until",
        choices=steps,
        default=steps[-1],
        help="stop after this step (e.g. --until eda: look at the data before training)",
    )
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (training, image decoding): one log line per epoch and phase instead, as "
        "whenever stdout or stderr is not a terminal",
    )
    run.set_defaults(handler=_run)


def request_from(args: argparse.Namespace) -> RunRequest:
    """The parsed options as the typed request; the command line itself goes into run_summary.json."""
    return RunRequest(
        data=args.data,
        out=args.out,
        preset=args.preset,
        models=tuple(args.models),
        overrides=tuple(args.overrides),
        workers=args.workers,
        device=args.device,
        speed_seconds=args.speed_seconds,
        n_boot=args.n_boot,
        until=args.until,
        progress=not args.no_progress,
        arguments={k: v for k, v in vars(args).items() if k != "handler"},
    )


def _print_line(line: str) -> None:
    print(line, flush=True)


def _run(args: argparse.Namespace) -> int:
    result = run_pipeline(request_from(args), notify=_print_line)
    out = result.out
    print(f"done in {result.wall_s:.0f} s: results in {out / 'results'}, plots in {out / 'plots'}, "
          f"models in {out / 'models'}")  # fmt: skip
    for skipped in result.skipped.values():  # last, where it cannot scroll away
        print(skipped.warning(), flush=True)
    if result.problem:
        print(f"pneumocxr: error: {result.problem}", file=sys.stderr, flush=True)
    return result.exit_code
