"""Where does each attention block look? Overlays of a ``custom_cnn_attention`` checkpoint's CBAM maps.

For each image: ``NAME.block{i}.png`` (block i's spatial attention, upsampled and put back into the
image's own geometry, drawn on the image) and ``NAME.attention.npz`` (the raw maps, block1 … block4,
each S/2^i on a side, values in (0, 1)). A spatial gate of CBAM multiplies the features, so its
raw values are absolute (0.5 = no change); the overlays stretch each map to its own min–max so its
shape is visible, and the title gives the raw range.

    .venv/bin/python scripts/attention_maps.py --checkpoint runs/cpu_custom_cnn_attention \\
        ../shared/data/chest_xray/val --out attention/ [--limit 8]

Pixels go through the same functions as training and ``pneumocxr explain`` (the cache's decoder,
then ``models.to_model_input``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pneumocxr.data.records import ImageRecord
from pneumocxr.explain import collect_inputs, save_overlay, to_original_geometry
from pneumocxr.explain._input import load_record
from pneumocxr.explain.geometry import resize_map
from pneumocxr.labels import SUBLABEL_UNKNOWN
from pneumocxr.models import load_checkpoint, to_model_input
from pneumocxr.models.custom_cnn_attention import spatial_attention_maps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="best.pt or its run folder")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0, help="at most this many images (0 = all)")
    return parser.parse_args(argv)


def stretched(block_map: np.ndarray, size: int) -> np.ndarray:
    """(h, w) map → (size, size) in [0, 1], min–max stretched (a flat map stays 0)."""
    span = float(block_map.max() - block_map.min())
    scaled = (block_map - block_map.min()) / span if span > 1e-12 else np.zeros_like(block_map)
    return resize_map(scaled.astype(np.float32), size, size)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    path = args.checkpoint / "best.pt" if args.checkpoint.is_dir() else args.checkpoint
    model, meta = load_checkpoint(path)
    pre = meta.preprocess
    files = collect_inputs(args.inputs)
    files = files[: args.limit] if args.limit > 0 else files
    args.out.mkdir(parents=True, exist_ok=True)
    for index, file in enumerate(files):
        record = ImageRecord(path=file, label=-1, split="input", patient_id="", sublabel=SUBLABEL_UNKNOWN)
        square, full = load_record(record, pre)  # (S, S) uint8 model input, (H, W) float image
        x = to_model_input(torch.from_numpy(square[None]), pre)  # (1, C, S, S)
        maps = spatial_attention_maps(model, x)
        with torch.no_grad():
            logit = float(model(x).reshape(-1)[0]) if meta.task == "binary" else float("nan")
        probability = 1.0 / (1.0 + np.exp(-logit / meta.temperature))
        stem = f"{index:03d}_{file.stem}"
        raw = {f"block{i}": m[0].numpy() for i, m in enumerate(maps.values(), start=1)}
        np.savez_compressed(args.out / f"{stem}.attention.npz", **raw)
        for name, block_map in raw.items():
            overlay = to_original_geometry(stretched(block_map, pre.image_size), *full.shape, pre.resize_mode)
            title = (
                f"{file.name}: {name} spatial attention ({block_map.shape[0]}² px, raw "
                f"{block_map.min():.2f}–{block_map.max():.2f}); P(PNEUMONIA) = {probability:.3f}"
            )
            save_overlay(args.out / f"{stem}.{name}.png", full, overlay, title=title)
        print(f"{file}: P(PNEUMONIA) = {probability:.3f} -> {args.out / stem}.block1…{len(raw)}.png")
    print(f"{len(files)} images, {len(files) * len(maps)} overlays in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
