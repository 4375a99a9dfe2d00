"""Images/s of naive Pillow decoding vs the pipeline's preprocessed cache, cold and warm.

Measured side by side in one run, on the same files:

- naive: ``Image.open → convert("L") → resize((S, S), BILINEAR) → np.asarray``, one process;
- cold:  ``PreprocessedCache(<fresh temp dir>).load(records)`` with the default workers (JPEG draft
  decoding at reduced scale, a process pool, chunks written to disk); "cold1w" is the same with
  ``workers=1``, which separates what reduced-scale decoding gains from what more cores gain;
- warm:  ``load`` again through a new ``PreprocessedCache`` on the filled directory (stat every
  file, then copy the pixels out of the memory maps into one array).

Every file is read once before timing so that all three see the OS page cache equally: the
numbers compare decoding, not the disk. File sets: the full-size originals in train (long side
<= 768 px here), the 224×224 images, and with ``--upscale L`` temporary copies of originals
upscaled to long side L (the 2,000-2,900 px regime of the user's own download), deleted after.

    python bench/decode.py                       # all train files + 60 copies upscaled to 2400 px
    python bench/decode.py --limit 400 --upscale 0
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

from pneumocxr.data.cache import PreprocessedCache, default_workers
from pneumocxr.data.records import ImageRecord

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "chest_xray"
TARGET_COLD, TARGET_WARM = 3.0, 20.0  # the aims, relative to naive, on full-size originals


def naive(paths: list[Path], size: int) -> np.ndarray:
    """What a straightforward Pillow loader does for every image of every epoch."""
    out = []
    for path in paths:
        with Image.open(path) as image:
            out.append(np.asarray(image.convert("L").resize((size, size), Image.BILINEAR)))
    return np.stack(out)


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def measure(name: str, paths: list[Path], size: int, workers: int | None) -> dict[str, float | str | int]:
    """naive, cold and warm on one file set; pixels are compared so a fast wrong answer shows."""
    records = [ImageRecord(p, 0, "train", p.stem, "unknown") for p in paths]
    for path in paths:
        path.read_bytes()  # same page-cache state for all three
    t_naive, reference = timed(lambda: naive(paths, size))
    with tempfile.TemporaryDirectory(prefix="pneumocxr-bench-cache-") as serial_dir:
        t_serial, _ = timed(lambda: PreprocessedCache(serial_dir, size).load(records, workers=1))
    with tempfile.TemporaryDirectory(prefix="pneumocxr-bench-cache-") as cache_dir:
        t_cold, cold = timed(lambda: PreprocessedCache(cache_dir, size).load(records, workers=workers))
        # Warm = a later run: best of 3, each through a NEW cache object (index re-read, files
        # re-stat'ed, maps re-opened). The cold fill's dirty pages are flushed first, as they are by
        # the time a later run starts: reading pages still under write-back was 5-10x slower here.
        os.sync()
        warm_runs = [
            timed(lambda: PreprocessedCache(cache_dir, size).load(records, workers=workers)) for _ in range(3)
        ]
        t_warm, warm = min(warm_runs, key=lambda run: run[0])
        checksum = int(warm.sum(dtype=np.uint64))  # warm pixels were copied out of the maps, not just mapped
        cache_mb = PreprocessedCache(cache_dir, size).stats().bytes / 1e6
    if checksum != int(cold.sum(dtype=np.uint64)) or not np.array_equal(cold, warm):
        raise SystemExit(f"{name}: warm pixels differ from cold ones: the cache is broken")
    n = len(paths)
    return {
        "set": name,
        "n": n,
        "naive": n / t_naive,
        "cold1": n / t_serial,
        "cold": n / t_cold,
        "warm": n / t_warm,
        "diff": float(np.abs(cold.astype(np.float32) - reference).mean()),
        "cache_mb": cache_mb,
    }


def split_train(data: Path, size: int) -> tuple[list[Path], list[Path]]:
    """(originals, already-square) among the train JPEGs, from the headers only."""
    originals, squares = [], []
    for path in sorted((data / "train").glob("*/*.jpeg")):
        with Image.open(path) as image:
            (squares if image.size == (size, size) else originals).append(path)
    return originals, squares


def upscaled_copies(paths: list[Path], long_side: int, folder: Path) -> list[Path]:
    """Grayscale JPEG copies of ``paths`` with the long side scaled to ``long_side`` (quality 90)."""
    out = []
    for path in paths:
        with Image.open(path) as image:
            gray = image.convert("L")
            scale = long_side / max(gray.size)
            big = gray.resize((round(gray.width * scale), round(gray.height * scale)), Image.BICUBIC)
        target = folder / path.name
        big.save(target, quality=90)
        out.append(target)
    return out


def report(rows: list[dict[str, float | str | int]], workers: int) -> None:
    print(
        f"\nPillow {PIL.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, cache workers {workers}"
    )
    header = f"{'file set':<32}{'n':>6}{'naive/s':>9}{'cold1w/s':>10}{'cold/s':>8}{'warm/s':>8}"
    print(header + f"{'cold1w/naive':>14}{'cold/naive':>12}{'warm/naive':>12}{'mean |Δ|':>10}")
    for r in rows:
        print(
            f"{r['set']:<32}{r['n']:>6}{r['naive']:>9.0f}{r['cold1']:>10.0f}{r['cold']:>8.0f}{r['warm']:>8.0f}"
            f"{r['cold1'] / r['naive']:>13.1f}×{r['cold'] / r['naive']:>11.1f}×"
            f"{r['warm'] / r['naive']:>11.1f}×{r['diff']:>10.2f}"
        )
    print("cold1w = cold with workers=1 (reduced-scale decoding alone, no parallelism);")
    print("mean |Δ| = mean absolute difference (grey levels, 0-255) between cached and naive pixels.")
    for r in rows:
        if str(r["set"]).startswith("originals"):
            cold_ok = r["cold"] / r["naive"] >= TARGET_COLD
            warm_ok = r["warm"] / r["naive"] >= TARGET_WARM
            print(
                f"{r['set']}: cold {'meets' if cold_ok else 'does NOT meet'} the {TARGET_COLD:.0f}× aim, "
                f"warm {'meets' if warm_ok else 'does NOT meet'} the {TARGET_WARM:.0f}× aim"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Kermany chest_xray folder")
    parser.add_argument("--size", type=int, default=224, help="model input side, pixels")
    parser.add_argument("--limit", type=int, default=0, help="at most this many files per set (0 = all)")
    parser.add_argument(
        "--workers", type=int, default=None, help="cache decode workers (default: one per CPU)"
    )
    parser.add_argument(
        "--upscale", type=int, default=2400, help="also time originals upscaled to this long side (0 = off)"
    )
    parser.add_argument("--upscale-count", type=int, default=60, help="how many originals to upscale")
    args = parser.parse_args(argv)
    if not (args.data / "train").is_dir():
        print(f"no train/ folder in {args.data}; pass --data <chest_xray folder>", file=sys.stderr)
        return 2

    originals, squares = split_train(args.data, 224)
    if args.limit:
        originals, squares = originals[: args.limit], squares[: args.limit]
    rows = []
    print(f"timing {len(originals)} originals and {len(squares)} 224×224 images at size {args.size} …")
    rows.append(measure("originals (long side <= 768)", originals, args.size, args.workers))
    rows.append(measure("224×224 (squashed copies)", squares, args.size, args.workers))
    if args.upscale:
        with tempfile.TemporaryDirectory(prefix="pneumocxr-bench-upscaled-") as folder:
            big = upscaled_copies(originals[: args.upscale_count], args.upscale, Path(folder))
            print(f"timing {len(big)} originals upscaled to long side {args.upscale} …")
            rows.append(measure(f"originals upscaled to {args.upscale} px", big, args.size, args.workers))
    report(rows, args.workers or default_workers())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
