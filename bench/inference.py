"""Prediction speed per runtime, side by side in one run: torch fp32, torch bf16, ONNX Runtime fp32 / int8.

For each checkpoint (EfficientNet-Lite0 and custom_cnn in docs/RESULTS.md), on real films:

- **variants**: ``torch fp32`` = today's ``Predictor`` (fp32, channels_last on CPU); ``torch bf16``
  = the same with ``bf16=True`` (channels_last + bf16 autocast: AVX-512 BF16 / AMX); ``ORT fp32``
  = the graph ``pneumocxr export`` writes, on ONNX Runtime; ``ORT int8`` = ``export --int8``
  (static QDQ), calibrated on ``--calibration-images`` train films outside the validation split.
  torch and ORT get the same number of threads (``--threads``, default: the cores this process
  may use).
- **latency**: wall time of ``Predictor.predict(path)`` — read, decode, scope checks, model, typed
  result — per film, p50 / p99 over ``--images`` films of the checkpoint's validation split. The
  variants are interleaved film by film in a rotating order, so a busy neighbour on a shared
  machine slows all of them alike; the medians of the result's own decode / model timings are
  reported too.
- **throughput**: ``predict_arrays`` on a batch of ``--batch`` decoded films (decoding excluded),
  ``--repeats`` rounds interleaved the same way; img/s from the median round.
- **agreement**: calibrated probabilities of every variant on ``--auc-images`` films of the
  validation split (stratified): max / mean |Δp| against torch fp32, decisions that flip at the
  stored threshold, and ROC AUC (the carved validation split is optimistic for AUC — the point is
  the change between variants, not the level).

    .venv/bin/python bench/inference.py --checkpoint output/models/efficientnet_lite0.pt \\
        --checkpoint output/models/custom_cnn.pt --data ../shared/data/chest_xray [--json out.json]

Without ``--checkpoint``, untrained ones are written to a temporary folder (Lite0 with ImageNet
weights and a random head, custom_cnn at 128 px): speed is real, AUC is not. No timing is
asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from pneumocxr.data.discovery import discover
from pneumocxr.errors import PneumoCXRError
from pneumocxr.inference import load_predictor
from pneumocxr.inference.inputs import load_input
from pneumocxr.inference.onnx_runtime import default_threads
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import create_model, load_pretrained, save_checkpoint
from pneumocxr.workflows.onnx_export import export_onnx
from pneumocxr.workflows.validation import recorded_validation

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "chest_xray"
VARIANTS = ("torch fp32", "torch bf16", "ORT fp32", "ORT int8")
AIM_P50_MS, AIM_IMAGES_PER_S = 12.0, 80.0  # issue 11, Lite0, 2 cores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, action="append", default=[], help="repeatable")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset root (Kermany layout)")
    parser.add_argument("--images", type=int, default=100, help="films timed one by one (latency)")
    parser.add_argument("--batch", type=int, default=32, help="throughput batch")
    parser.add_argument("--repeats", type=int, default=8, help="throughput rounds per variant")
    parser.add_argument("--auc-images", type=int, default=400, help="validation films for agreement/AUC")
    parser.add_argument("--calibration-images", type=int, default=64, help="train films for int8")
    parser.add_argument("--threads", type=int, default=0, help="threads for torch and ORT (0: all allowed)")
    parser.add_argument("--json", type=Path, help="also write every number here")
    return parser.parse_args(argv)


def untrained_checkpoints(folder: Path) -> list[Path]:
    """Lite0 (ImageNet weights, random head) and custom_cnn at 128 px, seeded."""
    made = []
    for name, kwargs in (("efficientnet_lite0", {}), ("custom_cnn", {"image_size": 128})):
        torch.manual_seed(0)
        model = create_model(name, **kwargs)
        if name == "efficientnet_lite0":
            load_pretrained(name, model)
        made.append(
            save_checkpoint(
                folder / f"{name}.pt",
                model,
                model_name=name,
                model_kwargs=kwargs,
                preprocess=model.spec.preprocess,
                class_names=CLASS_NAMES,
            )
        )
    return made


def films(checkpoint: Path, data: Path, n_auc: int, n_calibration: int) -> tuple[list, list, str]:
    """(validation records, calibration paths, what the validation films are)."""
    train = discover(data).in_split("train")
    try:
        validation = recorded_validation(checkpoint, data).records
        where = "the checkpoint's carved validation split"
    except PneumoCXRError:  # an untrained checkpoint records no split: any train films
        validation, where = train, "train films (untrained checkpoint: AUC means nothing)"
    held = {r.path for r in validation}
    outside = [r.path for r in train if r.path not in held]
    calibration = [outside[i] for i in np.linspace(0, len(outside) - 1, n_calibration).round().astype(int)]
    rng = np.random.default_rng(0)
    chosen = []
    for label in (0, 1):  # stratified: half of each class (as far as there are)
        group = [r for r in validation if r.label == label]
        chosen += [
            group[i] for i in sorted(rng.choice(len(group), min(len(group), n_auc // 2), replace=False))
        ]
    return chosen, calibration, where


def predictors(checkpoint: Path, calibration: list, folder: Path, threads: int) -> dict:
    fp32 = export_onnx(checkpoint, folder / f"{checkpoint.stem}.onnx", calibration=calibration)
    int8 = export_onnx(
        checkpoint, folder / f"{checkpoint.stem}.int8.onnx", int8=True, calibration=calibration
    )
    return {
        "torch fp32": load_predictor(checkpoint, device="cpu", batch_size=64),
        "torch bf16": load_predictor(checkpoint, device="cpu", batch_size=64, bf16=True),
        "ORT fp32": load_predictor(fp32.onnx_path, batch_size=64, threads=threads),
        "ORT int8": load_predictor(int8.onnx_path, batch_size=64, threads=threads),
    }


def latency(models: dict, paths: list) -> dict:
    """Per variant: wall ms of predict(path) and the result's decode/model ms, variants rotated."""
    names = list(models)
    for name in names:  # warm-up: lazy init, oneDNN primitives, ORT arenas
        for path in paths[:3]:
            models[name].predict(path)
    walls: dict[str, list] = {n: [] for n in names}
    parts: dict[str, list] = {n: [] for n in names}
    for i, path in enumerate(paths):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            result = models[name].predict(path)
            walls[name].append(1000 * (time.perf_counter() - start))
            parts[name].append((result.timings_ms["decode"], result.timings_ms["model"]))
    return {
        n: {
            "p50_ms": float(np.percentile(walls[n], 50)),
            "p90_ms": float(np.percentile(walls[n], 90)),
            "p99_ms": float(np.percentile(walls[n], 99)),
            "decode_p50_ms": float(np.median([d for d, _ in parts[n]])),
            "model_p50_ms": float(np.median([m for _, m in parts[n]])),
            "films": len(paths),
        }
        for n in names
    }


def throughput(models: dict, pixels: np.ndarray, repeats: int) -> dict:
    names = list(models)
    for name in names:
        models[name].predict_arrays(pixels)  # warm-up at this batch shape
    rounds: dict[str, list] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            models[name].predict_arrays(pixels)
            rounds[name].append(time.perf_counter() - start)
    return {
        n: {"images_per_s": len(pixels) / float(np.median(rounds[n])), "batch": len(pixels)} for n in names
    }


def agreement(models: dict, pixels: np.ndarray, labels: np.ndarray) -> dict:
    batches = {n: m.predict_arrays(pixels) for n, m in models.items()}
    reference = batches["torch fp32"]
    both = len(set(labels.tolist())) == 2
    return {
        n: {
            "max_abs_dp": float(np.abs(b.calibrated_probability - reference.calibrated_probability).max()),
            "mean_abs_dp": float(np.abs(b.calibrated_probability - reference.calibrated_probability).mean()),
            "decision_flips": int((b.prediction != reference.prediction).sum()),
            "auc": float(roc_auc_score(labels, b.calibrated_probability)) if both else float("nan"),
            "films": len(pixels),
        }
        for n, b in batches.items()
    }


def bench_checkpoint(checkpoint: Path, args: argparse.Namespace, threads: int, folder: Path) -> dict:
    chosen, calibration, where = films(checkpoint, args.data, args.auc_images, args.calibration_images)
    models = predictors(checkpoint, calibration, folder, threads)
    pre = models["torch fp32"].preprocess
    pixels = np.stack([load_input(r.path).square(pre.image_size, pre.resize_mode) for r in chosen])
    labels = np.array([r.label for r in chosen])
    timed = [r.path for r in chosen[:: max(1, len(chosen) // args.images)][: args.images]]
    return {
        "checkpoint": str(checkpoint),
        "model": models["torch fp32"].meta.model_name,
        "image_size": pre.image_size,
        "films": where,
        "latency": latency(models, timed),
        "throughput": throughput(models, pixels[: args.batch], args.repeats),
        "agreement": agreement(models, pixels, labels),
    }


def print_table(result: dict) -> None:
    lat, thr, agr = result["latency"], result["throughput"], result["agreement"]
    base_p50, base_ips = lat["torch fp32"]["p50_ms"], thr["torch fp32"]["images_per_s"]
    print(
        f"\n{result['model']} ({result['image_size']} px) — {result['checkpoint']}; films: {result['films']}"
    )
    head = (
        f"{'variant':<11} {'p50 ms':>7} {'p99 ms':>7} {'decode':>7} {'model':>7} {'×p50':>5} "
        f"{'img/s':>7} {'×img/s':>6} {'max|Δp|':>8} {'mean|Δp|':>8} {'flips':>5} {'AUC':>7}"
    )
    print(head)
    for name in VARIANTS:
        a, t, g = lat[name], thr[name], agr[name]
        print(
            f"{name:<11} {a['p50_ms']:>7.1f} {a['p99_ms']:>7.1f} {a['decode_p50_ms']:>7.1f} "
            f"{a['model_p50_ms']:>7.1f} {base_p50 / a['p50_ms']:>5.2f} "
            f"{t['images_per_s']:>7.1f} {t['images_per_s'] / base_ips:>6.2f} "
            f"{g['max_abs_dp']:>8.1e} {g['mean_abs_dp']:>8.1e} {g['decision_flips']:>5d} {g['auc']:>7.4f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    print(f"threads: {threads} (torch and ONNX Runtime); torch {torch.__version__}")
    results = []
    with tempfile.TemporaryDirectory(prefix="pneumocxr-bench-inference-") as tmp:
        checkpoints = args.checkpoint or untrained_checkpoints(Path(tmp))
        for checkpoint in checkpoints:
            result = bench_checkpoint(Path(checkpoint), args, threads, Path(tmp))
            print_table(result)
            results.append(result)
    for result in results:
        if result["model"] == "efficientnet_lite0":
            best = min(result["latency"].items(), key=lambda kv: kv[1]["p50_ms"])
            fastest = max(result["throughput"].items(), key=lambda kv: kv[1]["images_per_s"])
            p50, ips = best[1]["p50_ms"], fastest[1]["images_per_s"]
            print(
                f"\nLite0 aim: p50 ≤ {AIM_P50_MS:g} ms incl. decode → best {best[0]} {p50:.1f} ms; "
                f"≥ {AIM_IMAGES_PER_S:g} img/s batched → best {fastest[0]} {ips:.0f} img/s"
            )
    if args.json:
        args.json.write_text(json.dumps({"threads": threads, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
