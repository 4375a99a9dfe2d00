"""The EDA figures, drawn with Matplotlib's object API (``matplotlib.figure.Figure``).

A bare ``Figure`` needs no pyplot and no global backend: ``savefig`` renders PNG with Agg
whatever backend the caller (a notebook, a server) has selected. Each function takes the
numbers ``eda.py`` also writes as data and returns the figure; saving is the caller's job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from pneumocxr.labels import CLASS_NAMES

CLASS_COLORS = {"NORMAL": "#1f77b4", "PNEUMONIA": "#d62728"}
SUBLABEL_COLORS = {"bacterial": "#d62728", "viral": "#ff9896", "unknown": "#c7c7c7"}


def class_distribution(
    counts: Mapping[str, Mapping[str, int]], sublabels: Mapping[str, Mapping[str, int]]
) -> Figure:
    """One panel per split (each on its own scale: val has 16 images, train thousands).

    NORMAL is one bar; PNEUMONIA is stacked by bacterial / viral (/ unknown).
    """
    splits = list(counts)
    fig = Figure(figsize=(4.2 * max(1, len(splits)), 4.2), layout="constrained")
    axes = fig.subplots(1, max(1, len(splits)), squeeze=False)[0]
    for ax, split in zip(axes, splits):
        normal = counts[split].get("NORMAL", 0)
        ax.bar(0, normal, color=CLASS_COLORS["NORMAL"], label="NORMAL")
        bottom = 0
        for sub in ("bacterial", "viral", "unknown"):
            n = sublabels.get(split, {}).get(sub, 0)
            if n:
                ax.bar(1, n, bottom=bottom, color=SUBLABEL_COLORS[sub], label=f"PNEUMONIA: {sub}")
                ax.text(1, bottom + n / 2, f"{n:,}", ha="center", va="center", fontsize=9)
                bottom += n
        pneumonia = counts[split].get("PNEUMONIA", 0)
        top = max(normal, pneumonia, 1)
        for x, n in ((0, normal), (1, pneumonia)):
            ax.text(x, n + 0.02 * top, f"{n:,}", ha="center", va="bottom", fontsize=10, fontweight="bold")
        total = normal + pneumonia
        ratio = f", 1:{pneumonia / normal:.1f}" if normal else ""
        ax.set_title(f"{split} ({total:,} images{ratio})")
        ax.set_xticks([0, 1], list(CLASS_NAMES))
        ax.set_ylim(0, top * 1.12)
        ax.set_ylabel("images")
    handles = {}
    for ax in axes:  # one legend for all panels, below them: it never hides a bar
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=len(handles), fontsize=9)
    fig.suptitle("Class distribution per split", fontsize=13)
    return fig


def image_sizes(width: np.ndarray, height: np.ndarray, labels: Sequence[str]) -> Figure:
    """Width × height scatter (from headers) and the aspect-ratio histogram, per class."""
    labels = np.asarray(labels)
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    scatter, hist = fig.subplots(1, 2)
    aspect = width / height
    bins = np.linspace(aspect.min(), aspect.max(), 41) if aspect.max() > aspect.min() else 10
    for name in CLASS_NAMES:
        chosen = labels == name
        if not chosen.any():
            continue
        color = CLASS_COLORS[name]
        scatter.scatter(
            width[chosen], height[chosen], s=6, alpha=0.4, color=color, label=f"{name} (n={chosen.sum():,})"
        )
        hist.hist(aspect[chosen], bins=bins, alpha=0.6, color=color, label=name)
    limit = max(width.max(), height.max()) * 1.05
    scatter.plot([0, limit], [0, limit], color="grey", lw=0.8, ls="--", label="square")
    scatter.set(xlim=(0, limit), ylim=(0, limit), xlabel="width (px)", ylabel="height (px)")
    scatter.set_title("Image size (from file headers)")
    scatter.legend(fontsize=8, markerscale=2)
    hist.set(xlabel="aspect ratio (width / height)", ylabel="images")
    hist.set_title("Aspect ratio")
    hist.legend(fontsize=8)
    pairs, counts = np.unique(np.stack([width, height], axis=1), axis=0, return_counts=True)
    (common_w, common_h), share = pairs[counts.argmax()], counts.max() / len(width)
    common = f"{share:.0%} are {common_w:.0f}×{common_h:.0f}"
    fig.suptitle(f"Image sizes: {len(width):,} images ({common})", fontsize=13)
    return fig


def intensity_histograms(
    values: np.ndarray,
    densities: Mapping[str, np.ndarray],
    stats: Mapping[str, Mapping[str, float]],
    image_size: int,
) -> Figure:
    """Pixel-value distribution per class (fraction of pixels per uint8 level)."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, density in densities.items():
        if name not in stats:
            continue
        label = f"{name} (mean {stats[name]['mean']:.3f}, std {stats[name]['std']:.3f})"
        ax.plot(values, density, color=CLASS_COLORS.get(name), lw=1.5, label=label)
    ax.set(xlabel="pixel intensity (0 = black, 1 = white)", ylabel="fraction of pixels", xlim=(0, 1))
    # Black borders pile up at 0 (and burnt-out areas at 1); scale to the rest so the shapes show.
    inner = max((float(d[2:-2].max()) for n, d in densities.items() if n in stats), default=0.0)
    if inner > 0:
        ax.set_ylim(0, inner * 1.15)
        ends = ", ".join(f"{n} {d[0]:.1%}" for n, d in densities.items() if n in stats)
        note = f"y clipped; pixels at exactly 0: {ends}"
        ax.text(0.01, 0.97, note, transform=ax.transAxes, fontsize=8, va="top", color="dimgray")
    ax.set_title(f"Intensity histograms per class (images at {image_size}×{image_size}, whole image)")
    ax.legend(fontsize=9, loc="upper right")
    ax.grid(alpha=0.3)
    return fig


def mean_images(means: Mapping[str, np.ndarray], counts: Mapping[str, int], image_size: int) -> Figure:
    """Mean image per class and, with both classes, their difference (PNEUMONIA − NORMAL)."""
    panels = len(means) + (1 if len(means) == 2 else 0)
    fig = Figure(figsize=(4 * panels, 4.4), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax, (name, image) in zip(axes, means.items()):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{name} mean (n={counts[name]:,})")
        ax.axis("off")
    if len(means) == 2:
        first, second = (means[n] for n in CLASS_NAMES)
        diff = second - first
        bound = float(np.abs(diff).max()) or 1.0
        ax = axes[-1]
        shown = ax.imshow(diff, cmap="RdBu_r", vmin=-bound, vmax=bound)
        ax.set_title(f"{CLASS_NAMES[1]} − {CLASS_NAMES[0]}")
        ax.axis("off")
        fig.colorbar(shown, ax=ax, shrink=0.8, label="difference in mean intensity")
    fig.suptitle(f"Mean image per class ({image_size}×{image_size}, whole image squashed)", fontsize=13)
    return fig


def sample_grid(rows: Sequence[Sequence[tuple[np.ndarray, str, str]]], columns: int) -> Figure:
    """Rows of (pixels uint8 S×S, file name, label) tuples: one row per class."""
    fig = Figure(figsize=(2.6 * columns, 2.9 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(row):
                pixels, name, label = row[c]
                ax.imshow(pixels, cmap="gray", vmin=0, vmax=255)
                ax.set_title(f"{name}\n{label}", fontsize=8)
    fig.suptitle("Random sample per class (file name, label)", fontsize=13)
    return fig
