"""What BatchNorm re-estimation with dropout off does to a trained checkpoint, side by side.

Loads a binary checkpoint, scores its recorded validation split as saved ("as trained"), then
re-estimates the trainable BatchNorm statistics on its training images with dropout off
(``pneumocxr.training.bn_recalibration``, what training now does before export) and scores the
same images again. Both rows use raw probabilities (temperature 1) and the fixed 0.5 cut, so the
shift itself is visible; AUC is threshold-free.

    python bench/bn_recalibration.py --checkpoint runs/cpu_custom_cnn/best.pt --data ../shared/data/chest_xray

The validation split chose the checkpoint's epoch, so absolute numbers are optimistic; the
comparison between the rows is what this measures (the re-estimation sees training images only).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import special

from pneumocxr.config import RunConfig, from_dict
from pneumocxr.data.cache import PreprocessedCache
from pneumocxr.evaluation import binary_metrics
from pneumocxr.models import load_checkpoint, to_model_input
from pneumocxr.training.bn_recalibration import needs_recalibration, recalibrate_batchnorm
from pneumocxr.training.datamodule import split_records


def logits_of(model: torch.nn.Module, pixels: np.ndarray, preprocess) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for start in range(0, len(pixels), 64):
            batch = torch.from_numpy(np.ascontiguousarray(pixels[start : start + 64]))
            out.append(model(to_model_input(batch, preprocess)).float().reshape(-1).numpy())
    return np.concatenate(out).astype(np.float64)


def row(name: str, z: np.ndarray, y: np.ndarray) -> str:
    p = special.expit(z)
    nll = float(-np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12)))
    m = binary_metrics(y, p, 0.5)
    return (
        f"| {name} | {m['roc_auc']:.4f} | {nll:.3f} | {m['ece']:.3f} | {m['sensitivity']:.3f} | "
        f"{m['specificity']:.3f} | {z[y == 0].mean():+.2f} / {z[y == 1].mean():+.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", required=True, help="the dataset the checkpoint was trained on")
    parser.add_argument(
        "--cache-dir", type=Path, help="preprocessed-image cache (default: beside the checkpoint)"
    )
    args = parser.parse_args()

    model, meta = load_checkpoint(args.checkpoint)
    config = from_dict(RunConfig, meta.config)
    config = replace(config, data=replace(config.data, root=str(args.data)))
    train, val = split_records(config.data, config.train.limit_train_images)
    pre = meta.preprocess
    cache = PreprocessedCache(
        args.cache_dir or args.checkpoint.parent / "cache", pre.image_size, pre.resize_mode
    )
    y = np.array([r.label for r in val])
    val_pixels = cache.load(val)
    print(f"{meta.model_name} at {pre.image_size} px: {len(train)} training, {len(val)} validation images")
    print(f"a Dropout feeds a trainable BatchNorm: {needs_recalibration(model)}")
    print("| weights | AUC | NLL | ECE | sensitivity@0.5 | specificity@0.5 | mean logit NORMAL / PNEUMONIA |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    model.eval()
    print(row("as trained", logits_of(model, val_pixels, pre), y))
    start = time.perf_counter()
    layers = recalibrate_batchnorm(
        model, torch.from_numpy(cache.load(train)), pre, device=torch.device("cpu"), channels_last=False
    )
    seconds = time.perf_counter() - start
    print(row(f"BatchNorm re-estimated ({layers} layers)", logits_of(model, val_pixels, pre), y))
    print(f"re-estimation: {seconds:.1f} s for {len(train)} images on {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
