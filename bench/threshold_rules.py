"""Which threshold rule travels: every rule on a checkpoint's recorded validation split, then the
same thresholds on the same images under a zoom-in shift.

    python bench/threshold_rules.py --checkpoint runs/cpu_fast/best.pt --data ../shared/data/chest_xray \\
        --cache-dir runs/cache

1. The validation split the checkpoint records is rebuilt exactly (``inference.validation``, what
   ``evaluate --split validation`` uses) and scored by ``Predictor`` (calibrated probability with
   the checkpoint's temperature, float64 from float32 logits).
2. Every rule of ``evaluation.thresholds`` is computed on those probabilities (patient-level
   bootstrap for ``bootstrap_median``, seed ``--seed``); the checkpoint's stored threshold is a row
   of its own (for a checkpoint exported before the rules were stored it is the old Youden edge).
3. Zoom-in shift: each validation image (the cached S x S input) is centre-cropped to ``--zoom``
   of its side and resized back to S (bilinear), which mimics the external-site shift (NORMAL
   scores move up); the same thresholds are applied to the shifted probabilities.
4. ``--batch-check``: every image also scored one at a time: the largest logit change and the
   number of decisions that differ from the batch of 64 at each threshold, beside the rule's
   margin (logit distance from its threshold to the nearest validation score).

The validation split chose the checkpoint's epoch and temperature: absolute numbers are
optimistic; the comparison between rules, and between plain and shifted, is what this measures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pneumocxr.data.cache import PreprocessedCache
from pneumocxr.evaluation import all_rules, binary_metrics
from pneumocxr.inference import PredictionBatch, Predictor, load_predictor
from pneumocxr.inference.predictor import file_sha256
from pneumocxr.workflows.validation import recorded_validation


def zoom_in(pixels: np.ndarray, fraction: float) -> np.ndarray:
    """(N, S, S) uint8 → each centre-cropped to ``fraction`` of its side, resized back to S x S."""
    n, size, _ = pixels.shape
    crop = round(fraction * size)
    start = (size - crop) // 2
    out = np.empty_like(pixels)
    for i in range(n):
        window = Image.fromarray(pixels[i, start : start + crop, start : start + crop])
        out[i] = np.asarray(window.resize((size, size), Image.BILINEAR))
    return out


def sens_spec(y: np.ndarray, p: np.ndarray, t: float) -> tuple[float, float]:
    pred = p >= t
    return float(np.mean(pred[y == 1])), float(np.mean(~pred[y == 0]))


def _batch(predictor: Predictor, logits: np.ndarray):
    """Probabilities and decisions of stored logits, exactly as ``Predictor`` makes them."""
    return PredictionBatch.from_logits(logits, predictor.temperature, predictor.threshold)


def score(predictor: Predictor, pixels: np.ndarray, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """float32 logits: plain (batches of 64), zoomed, and with --batch-check one image per pass."""
    sha = file_sha256(args.checkpoint)
    if args.logits_cache and args.logits_cache.is_file():
        saved = dict(np.load(args.logits_cache))
        same = str(saved.pop("sha256")) == sha and len(saved["plain"]) == len(pixels)
        if same and ("single" in saved or not args.batch_check):
            print(f"reusing the logits in {args.logits_cache}", flush=True)
            return saved
    out = {}
    for name, images, batch_size in (
        ("plain", pixels, 64),
        ("zoom", zoom_in(pixels, args.zoom), 64),
        *((("single", pixels, 1),) if args.batch_check else ()),
    ):
        start = time.perf_counter()
        predictor.batch_size = batch_size
        out[name] = predictor.predict_arrays(images).logits.astype(np.float32)
        print(f"scored {name}: {len(images)} images in {time.perf_counter() - start:.0f} s", flush=True)
    predictor.batch_size = 64
    if args.logits_cache:
        np.savez(args.logits_cache, sha256=sha, **out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", required=True, help="the dataset the checkpoint was trained on")
    parser.add_argument(
        "--cache-dir", type=Path, required=True, help="preprocessed-image cache (e.g. runs/cache)"
    )
    parser.add_argument("--zoom", type=float, default=0.75, help="centre-crop fraction of the side (0.75)")
    parser.add_argument(
        "--seed", type=int, default=42, help="bootstrap_median seed (training uses train.seed)"
    )
    parser.add_argument("--batch-check", action="store_true", help="also score every image one at a time")
    parser.add_argument(
        "--logits-cache",
        type=Path,
        help="an .npz to save the scored logits to, or reuse them from (same checkpoint)",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    dataset = recorded_validation(args.checkpoint, args.data)
    records = dataset.in_split(dataset.splits()[0])
    predictor = load_predictor(args.checkpoint, device="cpu", batch_size=64)
    pre = predictor.preprocess
    pixels = PreprocessedCache(args.cache_dir, pre.image_size, pre.resize_mode).load(records)  # (N, S, S)
    y = np.array([r.label for r in records], dtype=np.int64)
    patients = [f"{r.split}/{r.patient_id}" for r in records]
    scored = score(predictor, pixels, args)
    plain = _batch(predictor, scored["plain"])
    shifted = _batch(predictor, scored["zoom"])
    p, q = plain.calibrated_probability, shifted.calibrated_probability
    rules = all_rules(y, p, patients, seed=args.seed)
    rows = [("stored in checkpoint", predictor.threshold, None)]
    rows += [(name, c.threshold, c.margin_logit) for name, c in rules.items()]
    rows.append(("fixed 0.5", 0.5, None))

    single = None
    if "single" in scored:
        singly = _batch(predictor, scored["single"])
        single = singly.calibrated_probability
        drift = float(np.max(np.abs(singly.logits - plain.logits)))

    m_plain, m_shift = binary_metrics(y, p, 0.5), binary_metrics(y, q, 0.5)
    print(
        f"{args.checkpoint}: {len(y)} validation images ({int(y.sum())} PNEUMONIA, {len(set(patients))} "
        f"patients), temperature {predictor.temperature:.4g}; AUC {m_plain['roc_auc']:.4f} plain, "
        f"{m_shift['roc_auc']:.4f} zoomed to {args.zoom:g}; mean calibrated P(PNEUMONIA) of NORMAL films "
        f"{p[y == 0].mean():.3f} -> {q[y == 0].mean():.3f}"
    )
    head = "| rule | threshold | margin (logit) | val sens | val spec | zoom sens | zoom spec | zoom J |"
    if single is not None:
        head += " flips batch 1 vs 64 |"
    print()
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, t, margin in rows:
        vs, vp = sens_spec(y, p, t)
        zs, zp = sens_spec(y, q, t)
        cells = [
            name,
            f"{t:.4f}",
            "on a score" if margin == 0 else ("" if margin is None else f"{margin:.3g}"),
            f"{vs:.3f}",
            f"{vp:.3f}",
            f"{zs:.3f}",
            f"{zp:.3f}",
            f"{zs + zp - 1:.3f}",
        ]
        if single is not None:
            cells.append(str(int(np.sum((single >= t) != (p >= t)))))
        print("| " + " | ".join(cells) + " |")
    if single is not None:
        print(f"\nlargest |logit(batch 1) - logit(batch 64)|: {drift:.3g}")
    b = rules["bootstrap_median"]
    print(
        f"\nyouden optimal interval [{rules['youden'].range_low:.4f}, {rules['youden'].range_high:.4f}] "
        f"(tolerance {rules['youden'].tolerance:.4f} of J); bootstrap_median: {b.n_valid_resamples} of "
        f"{b.n_boot} {b.bootstrap_unit} resamples, 95% range [{b.range_low:.4f}, {b.range_high:.4f}]; "
        f"{time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
