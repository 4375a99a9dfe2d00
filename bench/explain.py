"""Do the explanations mean anything? Randomisation test and faithfulness per method, side by side.

For a trained checkpoint, on held-out images (the patient-level validation split the checkpoint's
own config carves from train/, or the official val/ folder):

* model-parameter randomisation (Adebayo et al., NeurIPS 2018), cascading from the classifier
  down: Spearman rank correlation and SSIM (our own SSIM, skimage's conventions: see
  ``pneumocxr.explain.sanity``) between the trained model's maps and the randomised model's.
  Low = the method depends on the learned weights (it passes); high = it does not;
* faithfulness of the explained (predicted) class, each method against three reference maps —
  uniformly random pixels, a smooth random map (7×7 noise upsampled: the blobs a CAM has, at
  random places) and a fixed centre-box map (the lung box, blurred: "look at the middle"):
  - deletion / insertion AUC (Petsiuk et al., BMVC 2018) with a blurred ("blur") and a mean-grey
    ("grey": 0 after normalisation) removed state; deletion lower is better, insertion higher;
  - ROAD (Rong et al., ICML 2022; ``pneumocxr.explain.road``: pytorch-grad-cam's noisy linear
    imputation): MoRF (lower is better), LeRF (higher), combined = (LeRF − MoRF) / 2 (higher);
  every map is rank-transformed with a random tie-break first (``road.rank_maps``; Grad-CAM maps
  have large exactly-zero areas, which a stable sort would delete in raster order), and the
  methods' deletion with raster-order ties (the original protocol) is kept as "del raw";
  differences to each reference are paired per image (mean ± 1.96 SE), and split by predicted class.

    .venv/bin/python bench/explain.py --checkpoint runs/X/best.pt [--images 64] [--json out.json]
        [--no-randomization] [--road-maps gradcam,random pixels,centre box]

Prints tables; ``--json`` also writes every number (per image too). No timing is asserted anywhere.
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
from scipy import ndimage

from pneumocxr.config import DataConfig, from_dict
from pneumocxr.data.discovery import discover
from pneumocxr.explain import METHODS, compute_cam, resolve_targets
from pneumocxr.explain._input import load_record, probabilities, to_model_input
from pneumocxr.explain.road import PERCENTILES, rank_maps, road_scores
from pneumocxr.explain.sanity import blurred, deletion_insertion, randomization_test, summarize_stage
from pneumocxr.explain.shortcut import LUNG_BOX, lung_mask
from pneumocxr.models import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chest_xray"
REFERENCES = ("random pixels", "random smooth", "centre box")
FILLS = ("blur", "grey")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="the checkpoint to explain (not with --report)")
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="print the faithfulness tables of earlier --json outputs (same images; their maps merged)",
    )
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
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-randomization", action="store_true", help="skip the randomisation test")
    parser.add_argument(
        "--road-maps",
        default="all",
        help="maps scored by ROAD (slow: a sparse solve per percentile): 'all', 'none' or a comma list of "
        f"methods and references ({', '.join(REFERENCES)})",
    )
    parser.add_argument(
        "--road-percentiles",
        default=",".join(map(str, PERCENTILES)),
        help="ROAD percentiles: p keeps the p %% least (MoRF) / most (LeRF) relevant pixels",
    )
    parser.add_argument(
        "--deletion-maps",
        default="all",
        help="maps scored by deletion/insertion, blurred removed state: 'all', 'none' or a comma list",
    )
    parser.add_argument(
        "--grey-maps",
        default="all",
        help="maps also scored with the mean-grey removed state: 'all', 'none' or a comma list",
    )
    parser.add_argument(
        "--raw-ties",
        action="store_true",
        help="also the methods' deletion with raster-order ties ('del raw')",
    )
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


def batches(count: int, size: int):
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def predicted(model, meta, inputs: torch.Tensor, args) -> tuple[tuple[str, ...], np.ndarray]:
    """(class each map explains = the predicted one, (N,) its uncalibrated probability)."""
    device = next(model.parameters()).device
    targets, probs = [], []
    for part in batches(len(inputs), args.batch):
        with torch.no_grad():
            logits = model(inputs[part].to(device))
        names = resolve_targets(logits, "predicted", meta.class_names, meta.threshold, meta.temperature)
        raw, _ = probabilities(logits, 1.0)
        targets += names
        probs += [raw[i, list(meta.class_names).index(n)] for i, n in enumerate(names)]
    return tuple(targets), np.asarray(probs)


def method_maps(model, meta, inputs: torch.Tensor, method: str, targets, args) -> np.ndarray:
    common = {"class_names": meta.class_names, "threshold": meta.threshold, "temperature": meta.temperature}
    maps = [
        compute_cam(model, inputs[part], method=method, target=list(targets[part]), **common).maps
        for part in batches(len(inputs), args.batch)
    ]
    return np.concatenate(maps)


def reference_maps(count: int, size: int, seed: int) -> dict[str, np.ndarray]:
    """The maps a method must beat: random pixels, smooth random blobs, a fixed centre box."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((count, 1, 7, 7)).astype(np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    box = ndimage.gaussian_filter(lung_mask((size, size), lung=LUNG_BOX).astype(np.float32), size / 16)
    return {
        "random pixels": rng.random((count, size, size)).astype(np.float32),
        "random smooth": smooth[:, 0].numpy(),
        "centre box": np.broadcast_to(box, (count, size, size)).copy(),
    }


def run_randomization(model, meta, inputs: torch.Tensor, method: str, args) -> list[dict]:
    """Cascading randomisation rows of one method, over batches of images."""
    stages: dict[str, tuple[int, list, list]] = {}
    common = {"class_names": meta.class_names, "threshold": meta.threshold, "temperature": meta.temperature}
    for part in batches(len(inputs), args.batch):
        rows = randomization_test(
            model, inputs[part], method=method, target="predicted", seed=args.seed, **common
        )
        for row in rows:
            _, rhos, ssims = stages.setdefault(row.stage, (row.modules_randomized, [], []))
            rhos.extend(row.spearman_per_image)
            ssims.extend(row.ssim_per_image)
    rows = [summarize_stage(label, n, rhos, ssims) for label, (n, rhos, ssims) in stages.items()]
    return [{k: v for k, v in asdict(r).items() if not k.endswith("per_image")} for r in rows]


def faithfulness(
    model, meta, inputs, maps, targets, args, *, road: bool, raw: bool, grey: bool, blur: bool = True
) -> dict[str, list]:
    """Per-image scores of one map kind: deletion/insertion with the blurred (and optionally the
    grey) removed state on ranked maps, optionally the raw-tie deletion and ROAD."""
    ranked = rank_maps(maps, args.seed)
    scores: dict[str, list] = {}
    percentiles = [int(p) for p in args.road_percentiles.split(",")]
    for part in batches(len(inputs), args.batch):
        x, names = inputs[part], list(targets[part])
        bases = {"blur": blurred(x), "grey": torch.zeros_like(x)}
        for fill in [f for f, on in zip(FILLS, (blur, grey)) if on]:
            res = deletion_insertion(
                model, x, ranked[part], names, meta.class_names, steps=args.steps, baseline=bases[fill]
            )
            scores.setdefault(f"del {fill}", []).extend(res.deletion_auc.tolist())
            scores.setdefault(f"ins {fill}", []).extend(res.insertion_auc.tolist())
        if raw:
            res = deletion_insertion(
                model, x, maps[part], names, meta.class_names, steps=args.steps, ties="raster"
            )
            scores.setdefault("del raw", []).extend(res.deletion_auc.tolist())
        if road:
            r = road_scores(
                model, x, maps[part], names, meta.class_names, percentiles=percentiles, seed=args.seed
            )
            scores.setdefault("ROAD MoRF", []).extend(r.morf.tolist())
            scores.setdefault("ROAD LeRF", []).extend(r.lerf.tolist())
            scores.setdefault("ROAD comb", []).extend(r.combined.tolist())
        print(f"    {part.stop}/{len(inputs)}", file=sys.stderr, flush=True)
    return with_differences(scores)


def with_differences(scores: dict[str, list]) -> dict[str, list]:
    """Adds insertion − deletion per fill: a map's blob shape (out-of-distribution mixtures of
    kept and removed pixels) affects both curves alike, and cancels in the difference."""
    for fill in FILLS:
        if f"del {fill}" in scores and f"ins {fill}" in scores:
            scores[f"ins−del {fill}"] = np.subtract(scores[f"ins {fill}"], scores[f"del {fill}"]).tolist()
    return scores


def endpoints(model, meta, inputs: torch.Tensor, targets, args) -> dict[str, list]:
    """P(explained class) of the clean, fully blurred and mean-grey image: where every curve ends."""
    device = next(model.parameters()).device
    index = [list(meta.class_names).index(t) for t in targets]
    out: dict[str, list] = {"clean": [], "blur": [], "grey": []}
    for part in batches(len(inputs), args.batch):
        x = inputs[part].to(device)
        for name, version in (("clean", x), ("blur", blurred(x)), ("grey", torch.zeros_like(x))):
            with torch.no_grad():
                raw, _ = probabilities(model(version), 1.0)
            out[name] += [float(raw[i, c]) for i, c in enumerate(index[part])]
    return out


def paired(a: list, b: list) -> str:
    """mean(a − b) ± 1.96 SE over images."""
    d = np.asarray(a) - np.asarray(b)
    se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    return f"{d.mean():+.3f}±{1.96 * se:.3f}"


def _fmt(value: float) -> str:
    return "   n/a" if math.isnan(value) else f"{value:6.3f}"


def report_randomization(results: dict[str, list[dict]]) -> None:
    print("\nModel-parameter randomisation (cascading; trained vs randomised maps; low = passes)")
    print(f"{'method':<10} {'stage':<34} {'modules':>7} {'spearman':>8} {'SSIM':>6} {'const':>5}")
    for method, rows in results.items():
        for row in rows:
            print(
                f"{method:<10} {row['stage']:<34} {row['modules_randomized']:>7} "
                f"{_fmt(row['spearman']):>8} {_fmt(row['ssim'])} {row['constant_maps']:>5}"
            )


def report_faithfulness(scores: dict[str, dict[str, list]], targets, ends: dict[str, list]) -> None:
    columns = [
        "del raw",
        "del blur",
        "ins blur",
        "ins−del blur",
        "del grey",
        "ins grey",
        "ins−del grey",
        "ROAD MoRF",
        "ROAD LeRF",
        "ROAD comb",
    ]
    print(
        "\nFaithfulness of the predicted class (del/MoRF: lower is better; ins/LeRF/comb and ins−del: "
        "higher is better)"
    )
    groups = {"all": np.ones(len(targets), bool)}
    groups |= {f"predicted {c}": np.array([t == c for t in targets]) for c in sorted(set(targets))}
    for group, keep in groups.items():
        print(f"\n[{group}: {int(keep.sum())} images]")
        print(f"{'map':<14}" + "".join(f"{c:>13}" for c in columns))
        for name, per in scores.items():
            cells = [
                f"{np.mean(np.asarray(per[c])[keep]):13.3f}" if c in per else f"{'':>13}" for c in columns
            ]
            print(f"{name:<14}" + "".join(cells))
        for c in ("clean", "blur", "grey"):
            print(f"  P(explained class) on the {c} image: {np.mean(np.asarray(ends[c])[keep]):.3f}")
    print("\nPaired differences, method − reference (mean ± 1.96 SE over images)")
    metrics = ["del blur", "ins blur", "ins−del blur", "del grey", "ins grey", "ROAD MoRF", "ROAD comb"]
    print(f"{'method − reference':<28}" + "".join(f"{m:>15}" for m in metrics))
    for name in [n for n in scores if n not in REFERENCES]:
        for ref in REFERENCES:
            cells = [
                paired(scores[name][m], scores[ref][m]) if m in scores[name] and m in scores[ref] else "-"
                for m in metrics
            ]
            print(f"{name + ' − ' + ref:<28}" + "".join(f"{c:>15}" for c in cells))


def report_saved(paths: list[Path]) -> int:
    """The faithfulness tables of saved runs on the same images (per-map scores merged)."""
    runs = [json.loads(p.read_text()) for p in paths]
    if any(r["images"] != runs[0]["images"] or r["targets"] != runs[0]["targets"] for r in runs):
        print("--report: the runs are not on the same images with the same targets", file=sys.stderr)
        return 2
    scores: dict[str, dict[str, list]] = {}
    for run in runs:
        for name, per in run["per_image"].items():
            scores.setdefault(name, {}).update(per)
    scores = {n: with_differences(per) for n, per in scores.items()}
    order = [n for n in scores if n not in REFERENCES] + [n for n in REFERENCES if n in scores]
    print(
        f"{runs[0]['model']} on {len(runs[0]['images'])} {runs[0]['split']} images, from {len(runs)} run(s)"
    )
    report_faithfulness({n: scores[n] for n in order}, runs[0]["targets"], runs[0]["endpoints"])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        return report_saved(args.report)
    if args.checkpoint is None:
        print("give --checkpoint (or --report JSON… to print saved results)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"unknown method(s) {unknown}; choose from {METHODS}", file=sys.stderr)
        return 2
    road_maps, grey_maps, blur_maps = (
        {"all": {*methods, *REFERENCES}, "none": set()}.get(v, {m.strip() for m in v.split(",") if m.strip()})
        for v in (args.road_maps, args.grey_maps, args.deletion_maps)
    )
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model, meta = load_checkpoint(args.checkpoint, map_location=device)
    model.to(device).eval()
    records = sample(held_out_records(meta, args.data, args.split), args.images, args.seed)
    inputs = load_inputs(records, meta.preprocess)
    counts = [sum(r.label == c for r in records) for c in (0, 1)]
    print(
        f"{meta.model_name} ({args.checkpoint}) on {len(records)} {args.split} images "
        f"(NORMAL {counts[0]}, PNEUMONIA {counts[1]}), input {meta.preprocess.image_size}px, device {device}"
    )
    targets, _ = predicted(model, meta, inputs, args)
    randomization, scores, seconds, ties = {}, {}, {}, {}
    maps = {m: None for m in methods} | reference_maps(len(inputs), inputs.shape[-1], args.seed)
    for name in maps:
        started = time.perf_counter()
        if name in methods:
            if not args.no_randomization:
                randomization[name] = run_randomization(model, meta, inputs, name, args)
            maps[name] = method_maps(model, meta, inputs, name, targets, args)
            ties[name] = float(np.mean([(m == m.min()).mean() for m in maps[name]]))
        scores[name] = faithfulness(
            model,
            meta,
            inputs,
            maps[name],
            targets,
            args,
            road=name in road_maps,
            raw=args.raw_ties and name in methods,
            grey=name in grey_maps,
            blur=name in blur_maps,
        )
        seconds[name] = time.perf_counter() - started
        print(f"  {name}: {seconds[name]:.0f} s", file=sys.stderr, flush=True)
    ends = endpoints(model, meta, inputs, targets, args)
    if randomization:
        report_randomization(randomization)
    report_faithfulness(scores, targets, ends)
    print(
        "\nshare of pixels tied at the map's minimum: " + ", ".join(f"{m} {v:.2f}" for m, v in ties.items())
    )
    if args.json:
        results = [
            {
                "method": name,
                "randomization": randomization.get(name, []),
                "deletion_auc": float(np.mean(scores[name].get("del blur", math.nan))),
                "insertion_auc": float(np.mean(scores[name].get("ins blur", math.nan))),
                "mean": {k: float(np.mean(v)) for k, v in scores[name].items()},
                "seconds": seconds[name],
            }
            for name in methods
        ]
        payload = {
            "checkpoint": str(args.checkpoint),
            "model": meta.model_name,
            "split": args.split,
            "images": [r.display_name for r in records],
            "labels": [int(r.label) for r in records],
            "targets": list(targets),
            "device": device,
            "steps": args.steps,
            "road_percentiles": args.road_percentiles,
            "results": results,
            "references": {r: {k: float(np.mean(v)) for k, v in scores[r].items()} for r in REFERENCES},
            "per_image": scores,
            "endpoints": ends,
            "tied_pixels": ties,
            "ssim": "own implementation (pneumocxr.explain.sanity.ssim), skimage conventions",
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
