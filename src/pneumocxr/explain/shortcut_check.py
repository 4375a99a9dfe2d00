"""Is the model reading the scanner instead of the lungs? A shortcut check on a set of images.

For each image the checkpoint's calibrated P(PNEUMONIA) is measured on the clean film, on the film
with its outer border band filled (``shortcut.occlude_border``; also with the ``median`` control
fill), and with only its burned-in marks filled (``shortcut.occlude_marks``). Grad-CAM (the
existing ``compute_cam``) of the class predicted on the clean film is measured before and after
the border occlusion as the share of its mass inside a crude lung box.

A model whose probability moves by more than a few points when nothing but the border changes
is flagged: it may have learned the scanner, the film's frame or its letters (a flag, not a
proof — the fill itself is an unusual input; the ``median`` column shows how sensitive the model
is to the kind of fill). The report: ``shortcut_report``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pneumocxr.data.cache import decode_record
from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.explain._input import decide, probabilities, to_model_input
from pneumocxr.explain.cam import compute_cam
from pneumocxr.explain.shortcut import (
    BORDER_FILLS,
    film_box,
    lung_energy,
    lung_mask,
    occlude_border,
    occlude_marks,
)
from pneumocxr.explain.shortcut_report import write_report
from pneumocxr.explain.shortcut_result import ImageResult, ShiftStats, ShortcutResult, ShortcutSettings
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import CheckpointMeta

logger = logging.getLogger(__name__)

DEFAULT_SETTINGS = ShortcutSettings()  # frozen: safe to share as a default argument


def sample_records(records: Sequence[ImageRecord], count: int | None, seed: int = 0) -> list[ImageRecord]:
    """Up to ``count`` records, half per class where both exist (the rest from whichever has more),
    chosen reproducibly and sorted by path; all of them when ``count`` is None."""
    records = sorted(records, key=lambda r: (str(r.path), r.member or ""))
    if count is None or count >= len(records):
        return records
    rng = np.random.default_rng(seed)
    pools = [[r for r in records if r.label == c] for c in sorted({r.label for r in records})]
    quota = [min(len(p), count // len(pools)) for p in pools]
    for i in np.argsort([-len(p) for p in pools], kind="stable"):  # leftovers to the larger pools
        quota[i] += min(len(pools[i]) - quota[i], count - sum(quota))
    chosen = [p[j] for p, q in zip(pools, quota) for j in sorted(rng.choice(len(p), q, replace=False))]
    return sorted(chosen, key=lambda r: (str(r.path), r.member or ""))


def file_records(paths: Sequence[str | os.PathLike]) -> list[ImageRecord]:
    """Image files (and the images under folders) as records; the label is the parent folder's
    name when it is a class (``…/NORMAL/x.jpeg``), else unknown (-1: reported as "unknown")."""
    from pneumocxr.data.image_files import collect_inputs
    from pneumocxr.labels import SUBLABEL_UNKNOWN, class_index

    records = []
    for path in collect_inputs(paths):
        try:
            label = class_index(path.parent.name)
        except ValueError:
            label = -1
        records.append(
            ImageRecord(path=path, label=label, split="input", patient_id="", sublabel=SUBLABEL_UNKNOWN)
        )
    return records


def _calibrated(model: nn.Module, squares: np.ndarray, meta: CheckpointMeta, device) -> np.ndarray:
    """(N,) calibrated P(class 1) of uint8 squares (N, S, S)."""
    with torch.no_grad():
        logits = model(to_model_input(squares, meta.preprocess).to(device))
    return probabilities(logits, meta.temperature)[1][:, 1]


def _label_name(label: int, class_names: Sequence[str]) -> str:
    return class_names[label] if 0 <= label < len(class_names) else "unknown"


def measure_batch(
    model: nn.Module,
    meta: CheckpointMeta,
    records: Sequence[ImageRecord],
    settings: ShortcutSettings,
    *,
    layer: str | None = None,
) -> list[ImageResult]:
    """Every measurement of ``ImageResult`` for a batch of records (model in eval mode)."""
    size, mode = meta.preprocess.image_size, meta.preprocess.resize_mode
    device = next(model.parameters()).device
    squares = np.stack([decode_record(r, size, mode) for r in records])  # (N, S, S) uint8
    boxes = [film_box(r, size, mode) for r in records]
    filled = {
        fill: np.stack([occlude_border(s, settings.band, fill, b) for s, b in zip(squares, boxes)])
        for fill in BORDER_FILLS
    }
    text = [occlude_marks(s, settings.text, box=b, corner=settings.corner) for s, b in zip(squares, boxes)]
    batches = {"clean": squares, **filled, "text": np.stack([t[0] for t in text])}
    p = {name: _calibrated(model, batch, meta, device) for name, batch in batches.items()}
    border = filled[settings.fill]
    targets = [
        meta.class_names[int(i)] for i in decide(np.stack([1 - p["clean"], p["clean"]], 1), meta.threshold)
    ]
    common = {"method": settings.method, "target": targets, "class_names": meta.class_names, "layer": layer}
    lungs = np.stack([lung_mask(squares.shape[1:], b, settings.lung_box) for b in boxes])
    energy = {
        name: lung_energy(compute_cam(model, to_model_input(batch, meta.preprocess), **common).maps, lungs)
        for name, batch in (("clean", squares), ("border", border))
    }
    return [
        ImageResult(
            path=r.display_name,
            label=_label_name(r.label, meta.class_names),
            p_clean=float(p["clean"][i]),
            p_border=float(p[settings.fill][i]),
            p_text=float(p["text"][i]),
            p_border_inpaint=float(p["inpaint"][i]),
            p_border_median=float(p["median"][i]),
            p_border_reflect=float(p["reflect"][i]),
            marks_px=int(text[i][1].sum()),
            lung_energy_clean=float(energy["clean"][i]),
            lung_energy_border=float(energy["border"][i]),
            target=targets[i],
        )
        for i, r in enumerate(records)
    ]


def _distribution(values: np.ndarray) -> dict[str, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return {
            "n": 0,
            "mean": float("nan"),
            "q25": float("nan"),
            "median": float("nan"),
            "q75": float("nan"),
        }
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return {
        "n": len(values),
        "mean": float(values.mean()),
        "q25": float(q25),
        "median": float(q50),
        "q75": float(q75),
    }


def summarize(
    images: Sequence[ImageResult], threshold: float
) -> tuple[dict[str, dict[str, ShiftStats]], dict[str, dict[str, dict[str, float]]]]:
    """Shift statistics and lung-energy distributions per label group and over all images."""
    groups: dict[str, list[ImageResult]] = {}
    for item in images:
        groups.setdefault(item.label, []).append(item)
    order = [g for g in (*CLASS_NAMES, "unknown") if g in groups] + sorted(
        set(groups) - {*CLASS_NAMES, "unknown"}
    )
    named = {g: groups[g] for g in order}
    named["all"] = list(images)
    shifts, lung = {}, {}
    for name, items in named.items():
        col = {
            k: np.array([getattr(i, k) for i in items], dtype=np.float64)
            for k in ImageResult.__annotations__
            if k.startswith(("p_", "lung_"))
        }
        shifts[name] = {
            "border": ShiftStats.of(col["p_clean"], col["p_border"], threshold),
            "text": ShiftStats.of(col["p_clean"], col["p_text"], threshold),
            **{
                f"border_{f}": ShiftStats.of(col["p_clean"], col[f"p_border_{f}"], threshold)
                for f in BORDER_FILLS
            },
        }
        lung[name] = {
            "clean": _distribution(col["lung_energy_clean"]),
            "border": _distribution(col["lung_energy_border"]),
        }
    return shifts, lung


def flagged(stats: dict[str, dict[str, ShiftStats]], occlusion: str, settings: ShortcutSettings) -> bool:
    """True when, in any group with images, mean |Δp| or the flip share exceeds its limit."""
    return any(
        s[occlusion].n > 0
        and (
            s[occlusion].mean_abs > settings.max_mean_shift
            or s[occlusion].flip_share > settings.max_flip_share
        )
        for s in stats.values()
    )


def verdict_line(model: str, stats: dict[str, dict[str, ShiftStats]], settings: ShortcutSettings) -> str:
    """One line per model: the flag, the limits, and the worst group's numbers."""
    worst = max(stats, key=lambda g: stats[g]["border"].mean_abs if stats[g]["border"].n else -1)
    s = stats[worst]["border"]
    limits = (
        f"mean |Δp| > {settings.max_mean_shift:.2f} or > {settings.max_flip_share:.0%} of decisions flipped"
    )
    numbers = f"worst class {worst}: mean |Δp| {s.mean_abs:.3f}, {s.flip_share:.1%} flipped"
    agree = [f for f in BORDER_FILLS if flagged(stats, f"border_{f}", settings)]
    fills = f"fills over the limits: {len(agree)} of {len(BORDER_FILLS)} ({', '.join(agree) or 'none'})"
    if flagged(stats, "border", settings):
        return (
            f"{model}: FLAG — P(PNEUMONIA) moves too much ({limits}) when only the outer "
            f"{settings.band:.0%} border band changes ({settings.fill} fill; {numbers}; {fills}) → may be "
            "learning the scanner/film, not the lungs (a flag, not a proof)"
        )
    return (
        f"{model}: no flag — occluding the outer {settings.band:.0%} border band ({settings.fill} fill) "
        f"stays under the limits ({limits}; {numbers}; {fills})"
    )


def shortcut_check(
    model: nn.Module,
    meta: CheckpointMeta,
    records: Sequence[ImageRecord],
    settings: ShortcutSettings = DEFAULT_SETTINGS,
    *,
    batch_size: int = 16,
    layer: str | None = None,
) -> ShortcutResult:
    """Measure ``records`` with a loaded binary model (no files written; see ``run_shortcut_check``)."""
    if len(meta.class_names) != 2:
        raise ConfigError(
            f"the shortcut check needs a binary NORMAL/PNEUMONIA checkpoint; this one has classes "
            f"{', '.join(meta.class_names)}"
        )
    if not records:
        raise DatasetError("the shortcut check got no images; give image files or a --data split with images")
    was_training = model.training
    model.eval()
    try:
        images: list[ImageResult] = []
        for start in range(0, len(records), batch_size):
            images += measure_batch(model, meta, records[start : start + batch_size], settings, layer=layer)
            logger.info("shortcut check: %d of %d images", len(images), len(records))
    finally:
        model.train(was_training)
    shifts, lung = summarize(images, meta.threshold)
    return ShortcutResult(
        model=meta.model_name,
        checkpoint=str(meta.path),
        threshold=meta.threshold,
        temperature=meta.temperature,
        settings=settings,
        images=tuple(images),
        groups=shifts,
        lung=lung,
        flagged_border=flagged(shifts, "border", settings),
        flagged_text=flagged(shifts, "text", settings),
        verdict=verdict_line(meta.model_name, shifts, settings),
        images_with_marks=sum(1 for i in images if i.marks_px > 0),
    )


def run_shortcut_check(
    checkpoint: str | os.PathLike,
    records: Sequence[ImageRecord],
    out_dir: str | os.PathLike,
    *,
    settings: ShortcutSettings = DEFAULT_SETTINGS,
    max_images: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    examples: int = 4,
) -> ShortcutResult:
    """The shortcut check of one checkpoint on ``records`` (a sample of ``max_images``, half per
    class, when given), written to ``out_dir``: shortcut.json, shortcut.csv, shortcut.md and
    shortcut_examples.png (see ``shortcut_report``)."""
    from pneumocxr.models import load_checkpoint
    from pneumocxr.models.ensemble_file import is_ensemble_file

    if is_ensemble_file(checkpoint):
        raise ConfigError(
            f"{checkpoint} is an ensemble file; run the shortcut check on each member checkpoint"
        )
    if max_images is not None and max_images < 1:
        raise ConfigError(f"--images {max_images}: give at least 1")
    model, meta = load_checkpoint(checkpoint, map_location=device)
    model.to(device)
    chosen = sample_records(records, max_images, seed)
    result = shortcut_check(model, meta, chosen, settings, batch_size=batch_size)
    files = write_report(result, model, meta, chosen, Path(out_dir), examples=examples)
    return ShortcutResult(**{**result.__dict__, "files": files})
