"""Exploratory data analysis: the plots to look at before training, each with the numbers behind it.

``run_eda`` writes PNGs under ``OUT/plots/`` and, for every plot, the data it shows under
``OUT/results/`` (CSV, NPZ or JSON), so a figure can be re-drawn or checked without re-reading
the images. Sizes come from image headers only (cheap even for full-size originals). Intensity
histograms and mean images are computed at the model's input (``image_size`` square, whole
image squashed, as training sees it), through the preprocessed cache, so a later training run
at the same size reuses the decoded images.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pneumocxr.data import eda_plots
from pneumocxr.data.cache import PreprocessedCache
from pneumocxr.data.discovery import Dataset
from pneumocxr.data.records import ImageRecord
from pneumocxr.data.sources import load_pixels
from pneumocxr.errors import ConfigError, PneumoCXRError
from pneumocxr.imaging import image_info
from pneumocxr.labels import CLASS_NAMES, SUBLABELS

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 224  # the seed's model input: the cache filled here is the one training reads
_BATCH = 2048  # images decoded at a time: ~100 MB of uint8 at 224 px
_SLICE = 64  # images per histogram update: bincount's int64 copy stays ~26 MB at 224 px


@dataclass
class EdaSummary:
    """What ``run_eda`` measured and wrote; ``to_dict`` is ``results/eda_summary.json``."""

    root: str
    n_images: int
    image_size: int
    counts: dict[str, dict[str, int]]  # split → class → images
    sublabel_counts: dict[str, dict[str, int]]  # split → sub-label → images
    sizes: dict[str, float]  # header sizes: min/median/max width, height, aspect ratio; share at 224×224
    intensity: dict[str, dict[str, float]]  # class → mean, std of pixel values in [0, 1] at image_size
    unreadable: list[dict[str, str]]  # {"path", "reason"} for images left out of the pixel statistics
    plots: list[str] = field(default_factory=list)  # PNG files written
    results: list[str] = field(default_factory=list)  # data files written (this summary included)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def run_eda(
    dataset: Dataset,
    out_dir: str | os.PathLike,
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    samples_per_class: int = 4,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> EdaSummary:
    """Write the EDA plots (``out_dir/plots``) and their data (``out_dir/results``).

    ``cache_dir`` defaults to ``out_dir/cache`` (as in ``DataConfig``); ``seed`` picks the sample
    grid's images; ``workers`` = decoding processes (None = one per CPU). Images that cannot be
    decoded are left out of the pixel statistics and listed in the summary, not raised.
    """
    if samples_per_class < 1:
        raise ConfigError(f"samples_per_class={samples_per_class}; use 1 or more")
    started = time.perf_counter()
    out = Path(out_dir)
    plots_dir, results_dir = out / "plots", out / "results"
    for folder in (plots_dir, results_dir):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {folder} ({exc}); choose a writable output folder") from None
    cache = PreprocessedCache(cache_dir if cache_dir is not None else out / "cache", image_size)
    records = list(dataset.records)
    summary = EdaSummary(
        root=str(dataset.root),
        n_images=len(records),
        image_size=image_size,
        counts=dataset.counts(),
        sublabel_counts=_sublabel_counts(dataset),
        sizes={},
        intensity={},
        unreadable=[],
    )
    written = _Writer(plots_dir, results_dir, summary)
    _class_distribution(summary, written)
    _image_sizes(records, summary, written)
    stats = _pixel_statistics(records, cache, workers, summary)
    _intensity(stats, image_size, summary, written)
    _mean_images(stats, image_size, written)
    _sample_grid(records, cache, samples_per_class, seed, written)
    summary.seconds = round(time.perf_counter() - started, 3)
    summary_path = results_dir / "eda_summary.json"
    summary.results.append(str(summary_path))
    summary_path.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    logger.info("EDA of %d images written to %s in %.1f s", len(records), out, summary.seconds)
    return summary


@dataclass
class _Writer:
    """Writes figures and tables under the output folders and records their paths in the summary."""

    plots_dir: Path
    results_dir: Path
    summary: EdaSummary

    def figure(self, figure, name: str) -> None:
        path = self.plots_dir / name
        figure.savefig(path, dpi=110)  # constrained layout already fits the labels
        self.summary.plots.append(str(path))

    def table(self, name: str, header: Sequence[str], rows: Sequence[Sequence]) -> None:
        path = self.results_dir / name
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        self.summary.results.append(str(path))

    def arrays(self, name: str, **arrays: np.ndarray) -> None:
        path = self.results_dir / name
        np.savez_compressed(path, **arrays)
        self.summary.results.append(str(path))


# ----------------------------------------------------------------------------- counts


def _sublabel_counts(dataset: Dataset) -> dict[str, dict[str, int]]:
    table = {}
    for split in dataset.splits():
        counts = Counter(r.sublabel for r in dataset.in_split(split))
        table[split] = {
            name: counts.get(name, 0) for name in (*SUBLABELS, *sorted(set(counts) - set(SUBLABELS)))
        }
    return table


def _class_distribution(summary: EdaSummary, out: _Writer) -> None:
    rows = []
    for split, per_class in summary.counts.items():
        total = sum(per_class.values())
        for name, n in per_class.items():
            rows.append([split, name, n, round(n / total, 4) if total else 0.0])
    out.table("eda_class_distribution.csv", ["split", "class", "count", "fraction_of_split"], rows)
    sub_rows = [[s, name, n] for s, row in summary.sublabel_counts.items() for name, n in row.items()]
    out.table("eda_sublabel_distribution.csv", ["split", "sublabel", "count"], sub_rows)
    out.figure(
        eda_plots.class_distribution(summary.counts, summary.sublabel_counts), "dataset_distribution.png"
    )


# ----------------------------------------------------------------------------- sizes (headers only)


def _image_sizes(records: list[ImageRecord], summary: EdaSummary, out: _Writer) -> None:
    rows = []
    for record in records:
        try:
            width, height, fmt = _size(record)
        except (PneumoCXRError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            logger.warning("no size for %s: %s", record.display_name, reason)
            continue
        name = CLASS_NAMES[record.label]
        rows.append([record.display_name, record.split, name, width, height, round(width / height, 4), fmt])
    out.table(
        "eda_image_sizes.csv", ["path", "split", "class", "width", "height", "aspect_ratio", "format"], rows
    )
    if not rows:
        return
    width = np.array([r[3] for r in rows], dtype=float)
    height = np.array([r[4] for r in rows], dtype=float)
    aspect = width / height
    summary.sizes = {"n": len(rows)}
    for name, values in (("width", width), ("height", height), ("aspect_ratio", aspect)):
        for stat, reduce in (("min", np.min), ("median", np.median), ("max", np.max)):
            summary.sizes[f"{name}_{stat}"] = float(reduce(values))
    summary.sizes["fraction_224x224"] = float(np.mean((width == 224) & (height == 224)))
    labels = [r[2] for r in rows]
    out.figure(eda_plots.image_sizes(width, height, labels), "image_sizes.png")


def _size(record: ImageRecord) -> tuple[int, int, str]:
    """(width, height, format) from the header; an archive row's size is its stored shape."""
    if record.member is not None:
        pixels = load_pixels(record)  # archive arrays are cached in memory: cheap
        return pixels.shape[1], pixels.shape[0], "NPZ"
    info = image_info(record.path)
    return info.width, info.height, info.format


# ----------------------------------------------------------------------------- pixel statistics


@dataclass
class _PixelStats:
    """Per-class accumulators over the images at model input size."""

    histograms: dict[str, np.ndarray]  # class → (256,) int64 counts of uint8 pixel values
    sums: dict[str, np.ndarray]  # class → (S, S) float64 sum of images
    counts: dict[str, int]  # class → images accumulated


def _pixel_statistics(
    records: list[ImageRecord], cache: PreprocessedCache, workers: int | None, summary: EdaSummary
) -> _PixelStats:
    size = cache.image_size
    stats = _PixelStats(
        histograms={c: np.zeros(256, dtype=np.int64) for c in CLASS_NAMES},
        sums={c: np.zeros((size, size), dtype=np.float64) for c in CLASS_NAMES},
        counts=dict.fromkeys(CLASS_NAMES, 0),
    )
    for start in range(0, len(records), _BATCH):
        result = cache.load_available(records[start : start + _BATCH], workers=workers)
        for failure in result.failures:
            summary.unreadable.append({"path": failure.record.display_name, "reason": failure.reason})
        labels = np.array([r.label for r in result.records], dtype=np.int64)
        # bincount widens its input to int64: feed it slices, not the whole (N, S, S) batch
        for first in range(0, len(labels), _SLICE):
            _accumulate(stats, result.pixels[first : first + _SLICE], labels[first : first + _SLICE])
    return stats


def _accumulate(stats: _PixelStats, pixels: np.ndarray, labels: np.ndarray) -> None:
    """Add (n, S, S) uint8 images with their (n,) labels to the per-class accumulators."""
    for index, name in enumerate(CLASS_NAMES):
        chosen = pixels[labels == index]  # (k, S, S) uint8
        if len(chosen):
            stats.histograms[name] += np.bincount(chosen.reshape(-1), minlength=256)
            stats.sums[name] += chosen.sum(axis=0, dtype=np.float64)
            stats.counts[name] += len(chosen)


def _intensity(stats: _PixelStats, image_size: int, summary: EdaSummary, out: _Writer) -> None:
    values = np.arange(256) / 255.0
    densities = {}
    for name, hist in stats.histograms.items():
        total = hist.sum()
        densities[name] = hist / total if total else np.zeros(256)
        if total:
            mean = float((values * hist).sum() / total)
            std = float(np.sqrt(((values - mean) ** 2 * hist).sum() / total))
            summary.intensity[name] = {
                "images": stats.counts[name],
                "mean": round(mean, 4),
                "std": round(std, 4),
            }
    header = ["value", *(f"{c}_count" for c in CLASS_NAMES), *(f"{c}_fraction" for c in CLASS_NAMES)]
    rows = []
    for v in range(256):
        counts = [int(stats.histograms[c][v]) for c in CLASS_NAMES]
        fractions = [round(float(densities[c][v]), 7) for c in CLASS_NAMES]
        rows.append([round(values[v], 5), *counts, *fractions])
    out.table("eda_intensity_histograms.csv", header, rows)
    figure = eda_plots.intensity_histograms(values, densities, summary.intensity, image_size)
    out.figure(figure, "intensity_histograms.png")


def _mean_images(stats: _PixelStats, image_size: int, out: _Writer) -> None:
    means = {
        name: (stats.sums[name] / stats.counts[name] / 255.0).astype(np.float32)
        for name in CLASS_NAMES
        if stats.counts[name]
    }  # class → (S, S) float32 in [0, 1]
    counts = {f"count_{name}": np.array(stats.counts[name]) for name in means}
    out.arrays("eda_mean_images.npz", **means, **counts)
    if means:
        out.figure(eda_plots.mean_images(means, stats.counts, image_size), "mean_images.png")


# ----------------------------------------------------------------------------- sample grid


def _sample_grid(
    records: list[ImageRecord], cache: PreprocessedCache, per_class: int, seed: int, out: _Writer
) -> None:
    """A few random images per class (seeded), shown with file name and label."""
    rng = np.random.default_rng(seed)
    rows, images = [], []
    for index, name in enumerate(CLASS_NAMES):
        pool = [r for r in records if r.label == index]
        order = rng.permutation(len(pool))
        shown = 0
        for position in order:  # skip (and log) unreadable picks: take the next random one
            record = pool[int(position)]
            try:
                pixels = cache.get(record)
            except (PneumoCXRError, OSError) as exc:
                logger.warning("sample grid: skipping %s (%s)", record.display_name, exc)
                continue
            rows.append([index, shown, name, record.sublabel, record.split, record.display_name])
            title = Path(record.path).name if record.member is None else record.member
            images.append((pixels, title, f"{name} ({record.sublabel}, {record.split})"))
            shown += 1
            if shown == per_class:
                break
    out.table("eda_sample_grid.csv", ["row", "column", "class", "sublabel", "split", "path"], rows)
    if images:
        grid_rows = [[img for row, img in zip(rows, images) if row[0] == i] for i in range(len(CLASS_NAMES))]
        out.figure(eda_plots.sample_grid([r for r in grid_rows if r], per_class), "sample_grid.png")


def format_summary(summary: EdaSummary) -> str:
    """A few lines: what was analysed, what was written and where.

    ``pneumocxr data eda`` and ``pneumocxr run`` print it.
    """
    lines = [f"EDA of {summary.n_images:,} images from {summary.root} ({summary.seconds:.1f} s)"]
    for name, stats in summary.intensity.items():
        mean, std = stats["mean"], stats["std"]
        lines.append(f"  {name}: {stats['images']:,} images, mean intensity {mean:.3f} (std {std:.3f})")
    if summary.sizes:
        sizes = summary.sizes
        lines.append(
            f"  sizes: width {sizes['width_min']:.0f}–{sizes['width_max']:.0f}, height "
            f"{sizes['height_min']:.0f}–{sizes['height_max']:.0f} px; "
            f"{sizes['fraction_224x224']:.0%} are 224×224"
        )
    if summary.unreadable:
        bad = len(summary.unreadable)
        lines.append(f"  {bad} image(s) could not be decoded and were left out (see eda_summary.json)")
    folders = sorted({str(Path(p).parent) for p in summary.plots + summary.results})
    lines.append(
        f"  wrote {len(summary.plots)} plots and {len(summary.results)} data files to {', '.join(folders)}"
    )
    return "\n".join(lines)
