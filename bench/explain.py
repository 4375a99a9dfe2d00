"""Do the explanations mean anything? Randomisation test and faithfulness per method, side by side.

For a trained checkpoint, on held-out images (the patient-level validation split the checkpoint's
own config carves from train/, or the official val/ folder):

* model-parameter randomisation (Adebayo et al., NeurIPS 2018), cascading from the classifier
  down: Spearman rank correlation and SSIM (our own SSIM, skimage's conventions: see
  ``pneumocxr.explain.sanity``) between the trained model's maps and the randomised model's.
  Low = the method depends on the learned weights (it passes); high = it does not;
* deletion / insertion AUC (Petsiuk et al., BMVC 2018) of the explained (predicted) class, with a
  random map as the reference: a faithful method deletes faster (lower) and inserts faster
  (higher) than random.

    .venv/bin/python bench/explain.py --checkpoint runs/X/best.pt [--images 32] [--json out.json]

Prints tables; ``--json`` also writes every number. No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from pneumocxr.config import DataConfig, from_dict
from pneumocxr.data.discovery import discover
from pneumocxr.explain import METHODS, compute_cam, resolve_targets
from pneumocxr.explain._input import load_record, to_model_input
from pneumocxr.explain.sanity import deletion_insertion, randomization_test, summarize_stage
from pneumocxr.models import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chest_xray"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset root (Kermany layout)")
    parser.add_argument(
        "--split",
        choices=("carved-val", "val"),
        default="carved-val",
        help="carved-val: the validation split the checkpoint's config carves from train/ (default); "
        "val: the official val/ folder (16 images)",
    )
    parser.add_argument(
        "--images", type=int, default=32, help="images, half per class (deterministic sample)"
    )
    parser.add_argument("--methods", default="gradcam,gradcam++,eigencam", help=f"comma list of {METHODS}")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    parser.add_argument("--batch", type=int, default=8, help="images per forward/backward batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write all results here")
    return parser.parse_args(argv)


def held_out_records(meta, data_root: Path, split: str) -> list:
    """The images to explain: never ones the checkpoint was trained on."""
    if split == "val":
        return discover(data_root).in_split("val")
    from pneumocxr.training.datamodule import split_records  # the split training used

    saved = dict(meta.config.get("data", {}))
    if not saved:
        print("checkpoint has no data config: carving with DataConfig defaults", file=sys.stderr)
    data = replace(from_dict(DataConfig, saved, "data"), root=str(data_root))
    limit = int(meta.config.get("train", {}).get("limit_train_images", 0))
    _, val = split_records(data, limit)
    return val


def sample(records: list, count: int, seed: int) -> list:
    """Up to ``count`` records, half per class, chosen reproducibly; sorted by path."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in (0, 1):
        pool = [r for r in records if r.label == label]
        take = min(len(pool), count // 2 + (count % 2 if label == 1 else 0))
        chosen += [pool[i] for i in sorted(rng.choice(len(pool), take, replace=False))]
    return sorted(chosen, key=lambda r: (str(r.path), r.member or ""))


def load_inputs(records: list, preprocess) -> torch.Tensor:
    squares = np.stack([load_record(r, preprocess)[0] for r in records])  # (N, S, S) uint8
    return to_model_input(squares, preprocess)  # (N, C, S, S)


def run_method(model, meta, inputs: torch.Tensor, method: str, args) -> dict:
    """Randomisation rows and faithfulness of one method, over batches of images."""
    started = time.perf_counter()
    names = meta.class_names
    stages: dict[str, tuple[int, list, list]] = {}
    deletion, insertion = [], []
    for start in range(0, len(inputs), args.batch):
        x = inputs[start : start + args.batch]
        common = {"class_names": names, "threshold": meta.threshold, "temperature": meta.temperature}
        for row in randomization_test(model, x, method=method, target="predicted", seed=args.seed, **common):
            _, rhos, ssims = stages.setdefault(row.stage, (row.modules_randomized, [], []))
            rhos.extend(row.spearman_per_image)
            ssims.extend(row.ssim_per_image)
        result = compute_cam(model, x, method=method, target="predicted", **common)
        faith = deletion_insertion(model, x, result.maps, result.target_classes, names, steps=args.steps)
        deletion.extend(faith.deletion_auc)
        insertion.extend(faith.insertion_auc)
    rows = [summarize_stage(label, n, rhos, ssims) for label, (n, rhos, ssims) in stages.items()]
    return {
        "method": method,
        "randomization": [{k: v for k, v in asdict(r).items() if not k.endswith("per_image")} for r in rows],
        "deletion_auc": float(np.mean(deletion)),
        "insertion_auc": float(np.mean(insertion)),
        "seconds": time.perf_counter() - started,
    }


def random_reference(model, meta, inputs: torch.Tensor, args) -> dict:
    """Deletion/insertion of uniformly random maps: the floor a method must beat."""
    rng = np.random.default_rng(args.seed)
    deletion, insertion = [], []
    for start in range(0, len(inputs), args.batch):
        x = inputs[start : start + args.batch]
        with torch.no_grad():
            logits = model(x.to(next(model.parameters()).device))
        targets = resolve_targets(logits, "predicted", meta.class_names, meta.threshold, meta.temperature)
        maps = rng.random((len(x), *x.shape[-2:])).astype(np.float32)
        faith = deletion_insertion(model, x, maps, targets, meta.class_names, steps=args.steps)
        deletion.extend(faith.deletion_auc)
        insertion.extend(faith.insertion_auc)
    return {
        "method": "random map",
        "deletion_auc": float(np.mean(deletion)),
        "insertion_auc": float(np.mean(insertion)),
    }


def _fmt(value: float) -> str:
    return "   n/a" if math.isnan(value) else f"{value:6.3f}"


def report(results: list[dict], reference: dict) -> None:
    print("\nModel-parameter randomisation (cascading; trained vs randomised maps; low = passes)")
    print(f"{'method':<10} {'stage':<34} {'modules':>7} {'spearman':>8} {'SSIM':>6} {'const':>5}")
    for res in results:
        for row in res["randomization"]:
            print(
                f"{res['method']:<10} {row['stage']:<34} {row['modules_randomized']:>7} "
                f"{_fmt(row['spearman']):>8} {_fmt(row['ssim'])} {row['constant_maps']:>5}"
            )
    print("\nFaithfulness of the predicted class (deletion: lower is better; insertion: higher is better)")
    print(f"{'method':<10} {'deletion AUC':>12} {'insertion AUC':>13} {'seconds':>8}")
    for res in [*results, reference]:
        seconds = f"{res['seconds']:8.1f}" if "seconds" in res else " " * 8
        print(f"{res['method']:<10} {res['deletion_auc']:>12.3f} {res['insertion_auc']:>13.3f} {seconds}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"unknown method(s) {unknown}; choose from {METHODS}", file=sys.stderr)
        return 2
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model, meta = load_checkpoint(args.checkpoint, map_location=device)
    model.to(device)
    records = sample(held_out_records(meta, args.data, args.split), args.images, args.seed)
    inputs = load_inputs(records, meta.preprocess)
    counts = [sum(r.label == c for r in records) for c in (0, 1)]
    print(
        f"{meta.model_name} ({args.checkpoint}) on {len(records)} {args.split} images "
        f"(NORMAL {counts[0]}, PNEUMONIA {counts[1]}), input {meta.preprocess.image_size}px, device {device}"
    )
    results = [run_method(model, meta, inputs, method, args) for method in methods]
    reference = random_reference(model, meta, inputs, args)
    report(results, reference)
    if args.json:
        payload = {
            "checkpoint": str(args.checkpoint),
            "model": meta.model_name,
            "split": args.split,
            "images": [r.display_name for r in records],
            "device": device,
            "results": results,
            "random_reference": reference,
            "ssim": "own implementation (pneumocxr.explain.sanity.ssim), skimage conventions",
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
