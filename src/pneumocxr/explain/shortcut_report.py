"""Files of the shortcut check: shortcut.json (everything), shortcut.csv (one row per image),
shortcut.md (the short table and the verdict) and shortcut_examples.png (clean vs occluded, with
the Grad-CAM of the class predicted on the clean film; the dashed box is the lung box)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from pneumocxr.data.cache import decode_record
from pneumocxr.data.records import ImageRecord
from pneumocxr.explain._input import to_model_input
from pneumocxr.explain.cam import compute_cam
from pneumocxr.explain.overlay import draw_overlay
from pneumocxr.explain.shortcut import film_box, occlude_border, occlude_marks
from pneumocxr.explain.shortcut_result import ShortcutResult
from pneumocxr.models import CheckpointMeta

CSV_COLUMNS = (
    "path",
    "label",
    "p_clean",
    "p_border",
    "p_text",
    "lung_energy_clean",
    "lung_energy_border",
    "p_border_inpaint",
    "p_border_median",
    "p_border_reflect",
    "marks_px",
    "target",
)
OCCLUSIONS = {
    "border": "border band ({fill}) — verdict",
    "text": "marks only ({text}, inpainted)",
    "border_inpaint": "border band, inpaint fill",
    "border_median": "border band, median fill",
    "border_reflect": "border band, reflect fill",
}


def _plain(value):
    """JSON-safe: NaN → null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def summary_dict(result: ShortcutResult) -> dict:
    """Everything but the per-image rows (those are in the CSV)."""
    return {
        "model": result.model,
        "checkpoint": result.checkpoint,
        "threshold": result.threshold,
        "temperature": result.temperature,
        "probability": "calibrated P(PNEUMONIA) = sigmoid(logit / T); flips at the stored threshold",
        "settings": asdict(result.settings),
        "images": len(result.images),
        "images_with_marks": result.images_with_marks,
        "groups": {g: {k: asdict(s) for k, s in occ.items()} for g, occ in result.groups.items()},
        "lung_energy": result.lung,
        "lung_box_area_share": _box_share(result.settings.lung_box),
        "flagged_border": result.flagged_border,
        "flagged_text": result.flagged_text,
        "verdict": result.verdict,
    }


def _box_share(box: Sequence[float]) -> float:
    """The lung-energy share of a uniform map: the chance level."""
    x0, x1, y0, y1 = box
    return (x1 - x0) * (y1 - y0)


def markdown(result: ShortcutResult) -> str:
    """The short table: per group and occlusion, mean/p95 |Δp| and flips; lung-energy shares."""
    s = result.settings
    names = {
        k: v.format(fill=s.fill, text="detected" if s.text == "detect" else "corner squares")
        for k, v in OCCLUSIONS.items()
    }
    lines = [
        f"**{result.model}** (`{result.checkpoint}`), {len(result.images)} images; threshold "
        f"{result.threshold:.3f}, temperature {result.temperature:.3f}; band {s.band:.0%}; marks found in "
        f"{result.images_with_marks} images",
        "",
        "| class | occlusion | n | mean abs Δp | p95 abs Δp | mean Δp | flips |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for group, occ in result.groups.items():
        for key, stats in occ.items():
            if key == f"border_{s.fill}":
                continue  # the same numbers as the verdict's "border" row
            lines.append(
                f"| {group} | {names[key]} | {stats.n} | {stats.mean_abs:.3f} | {stats.p95_abs:.3f} | "
                f"{stats.mean_signed:+.3f} | {stats.flips} ({stats.flip_share:.1%}) |"
            )
    lines += [
        "",
        f"Grad-CAM ({s.method}) mass inside the lung box (x {s.lung_box[0]:.0%}–{s.lung_box[1]:.0%}, "
        f"y {s.lung_box[2]:.0%}–{s.lung_box[3]:.0%}; a uniform map gives {_box_share(s.lung_box):.2f}):",
        "",
        "| class | map | n | mean | q25 | median | q75 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for group, maps in result.lung.items():
        for key, d in maps.items():
            cells = " | ".join(f"{d[k]:.3f}" for k in ("mean", "q25", "median", "q75"))
            lines.append(f"| {group} | {key} | {d['n']} | {cells} |")
    return "\n".join([*lines, "", result.verdict, ""])


def write_csv(path: Path, result: ShortcutResult) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for item in result.images:
            row = asdict(item)
            writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6f}"
    return str(value)


def write_report(
    result: ShortcutResult,
    model: nn.Module,
    meta: CheckpointMeta,
    records: Sequence[ImageRecord],
    out_dir: Path,
    *,
    examples: int = 4,
) -> dict[str, Path]:
    """Write the four files into ``out_dir``; returns them by kind."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "json": out_dir / "shortcut.json",
        "csv": out_dir / "shortcut.csv",
        "md": out_dir / "shortcut.md",
        "figure": out_dir / "shortcut_examples.png",
    }
    files["json"].write_text(json.dumps(_plain(summary_dict(result)), indent=2) + "\n")
    write_csv(files["csv"], result)
    files["md"].write_text(markdown(result))
    if examples > 0:
        example_figure(files["figure"], result, model, meta, records, examples)
    else:
        del files["figure"]
    return files


def pick_examples(result: ShortcutResult, count: int) -> list[int]:
    """Indices of the images the border moved most, at most one more from each class than the other."""
    order = np.argsort([-abs(i.p_border - i.p_clean) for i in result.images], kind="stable")
    by_label: dict[str, list[int]] = {}
    for i in order:
        by_label.setdefault(result.images[i].label, []).append(int(i))
    picked: list[int] = []
    while len(picked) < min(count, len(order)):
        for items in by_label.values():
            if items and len(picked) < count:
                picked.append(items.pop(0))
    return picked


def example_figure(
    path: Path,
    result: ShortcutResult,
    model: nn.Module,
    meta: CheckpointMeta,
    records: Sequence[ImageRecord],
    count: int,
) -> Path:
    """Rows: images the border moved most; columns: clean, border occluded, marks occluded."""
    s = result.settings
    picked = pick_examples(result, count)
    fig = Figure(figsize=(9, 3.2 * len(picked) + 0.3), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(picked), 3, squeeze=False)
    size, mode = meta.preprocess.image_size, meta.preprocess.resize_mode
    for row, index in enumerate(picked):
        item, record = result.images[index], records[index]
        square = decode_record(record, size, mode)
        box = film_box(record, size, mode)
        marks, mask = occlude_marks(square, s.text, box=box, corner=s.corner)
        variants = [
            ("clean", square, item.p_clean),
            (f"border {s.band:.0%} ({s.fill})", occlude_border(square, s.band, s.fill, box), item.p_border),
            (f"marks ({int(mask.sum())} px)", marks, item.p_text),
        ]
        batch = to_model_input(np.stack([v[1] for v in variants]), meta.preprocess)
        maps = compute_cam(
            model, batch, method=s.method, target=[item.target] * 3, class_names=meta.class_names
        ).maps
        for col, ((name, pixels, p), cam) in enumerate(zip(variants, maps)):
            ax = axes[row][col]
            draw_overlay(ax, pixels.astype(np.float32) / 255.0, cam)
            _lung_rectangle(ax, box, s.lung_box)
            if col == 2 and mask.any():
                ax.contour(mask, levels=[0.5], colors="red", linewidths=0.6)  # what was filled
            ax.set_title(f"{name}\nP(PNEUMONIA) = {p:.3f}", fontsize=8)
        axes[row][0].set_ylabel(f"{Path(item.path).name}\n{item.label}, map of {item.target}", fontsize=7)
    fig.suptitle(f"{result.model}: {s.method} before/after occlusion", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _lung_rectangle(ax, box, lung) -> None:
    top, left, height, width = box
    x0, x1, y0, y1 = lung
    ax.add_patch(
        Rectangle(
            (left + x0 * width - 0.5, top + y0 * height - 0.5),
            (x1 - x0) * width,
            (y1 - y0) * height,
            fill=False,
            linestyle="--",
            linewidth=0.8,
            edgecolor="white",
        )
    )
