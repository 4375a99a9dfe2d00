"""``stress``: a checkpoint's validation images re-rendered under acquisition shifts
(``pneumocxr evaluate --stress``)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pneumocxr.api._display import Figures, estimate, render_table, to_frame
from pneumocxr.data.discovery import Dataset
from pneumocxr.inference.predictor import DEFAULT_BATCH_SIZE

__all__ = ["StressReport", "stress"]

DEFAULT_IMAGES = 300  # = workflows.stress.DEFAULT_STRESS_IMAGES (not imported: keeps this module cheap)


@dataclass(frozen=True)
class StressReport:
    """What ``stress`` measured: one row per condition (``rows``, ``to_frame()``), the worst case
    per metric (``worst()``) and ``figures["stress"]``; Jupyter shows the table. ``result`` is the
    workflow's ``StressResult``.

    Example:
        ```python
        report.worst()["specificity"]["shift"]  # e.g. 'crop_top'
        ```
    """

    result: Any

    @property
    def rows(self) -> list[dict[str, Any]]:
        """stress.csv: one row per condition (clean first, then shift × severity) — AUC, sensitivity,
        specificity with CIs and their change from clean, median probabilities per class."""
        return self.result.rows

    def to_frame(self) -> Any:
        """``rows`` as a pandas DataFrame (needs pandas)."""
        return to_frame(self.rows)

    def worst(self, *, exclude: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
        """metric → the shifted condition where it is lowest (shifts in ``exclude`` left out)."""
        return self.result.worst(exclude=exclude)

    @property
    def figures(self) -> Figures:
        """``stress``: each metric against severity, one line per shift (when ``out_dir`` was given)."""
        png = self.result.files.get("stress_png")
        return Figures({"stress": png} if png else {})

    def __repr__(self) -> str:
        r = self.result
        return f"StressReport({r.model} on {r.split}: {r.n_images} images, {len(r.rows)} conditions)"

    def _repr_html_(self) -> str:
        r = self.result
        columns = ["shift", "severity", "in training augmentation", "AUC", "sensitivity", "specificity"]
        rows = []
        for row in r.rows:
            trained = {True: "yes", False: "NO", None: "?"}[row["in_training_augmentation"]]
            cells = [
                estimate(row[c], row[f"{c}_lo"], row[f"{c}_hi"])
                for c in ("auc", "sensitivity", "specificity")
            ]
            rows.append([row["shift"], row["severity_name"], "" if row["severity"] == 0 else trained, *cells])
        notes = [
            f"worst {metric}: {w['value']:.3f} under {w['shift']} {w['severity_name']} "
            f"({w['change_from_clean']:+.3f} from clean)"
            for metric, w in self.worst().items()
            if not math.isnan(w["value"])
        ]
        counts = ", ".join(f"{n} {name}" for name, n in r.class_counts.items())
        caption = (
            f"shift-stress suite: {r.model} on {r.split}: {r.n_images} images ({counts}), threshold "
            f"{r.threshold:.4g}, seed {r.seed}"
        )
        return render_table(caption=caption, columns=columns, rows=rows, notes=notes)


def stress(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike | Dataset,
    *,
    out_dir: str | os.PathLike | None = None,
    split: str = "validation",
    shifts: str | Sequence[str] | None = None,
    n_images: int = DEFAULT_IMAGES,
    seed: int = 0,
    n_boot: int | None = None,
    tta: bool | None = None,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> StressReport:
    """Re-render a split's images under realistic acquisition shifts (JPEG, resolution, gamma,
    contrast, noise, blur, rotation, burned-in text, field of view, crops, inverted polarity …) at
    three severities and measure AUC, sensitivity and specificity at the stored threshold with 95 %
    CIs (``pneumocxr evaluate --stress``). The carved validation split cannot show the drop on
    another hospital's films; this is the proxy that can.

    Args:
        checkpoint: ``best.pt``, its run folder or an ensemble file.
        data: the dataset the checkpoint was trained on (path or ``Dataset``).
        out_dir: write stress.csv/.json/.md/.png here (None: nothing written, no figure).
        split: ``"validation"`` (default: the split the checkpoint records) or a split of ``data``.
        shifts: names (list or comma-separated; None = every shift).
        n_images: a seeded, class-stratified subsample of whole patients (0 = every image).
        seed: fixes the subsample, every shifted image and the bootstrap. n_boot: bootstrap resamples.
        tta: as in ``evaluate``.
        device: as in ``evaluate``.
        batch_size: as in ``evaluate``.

    Returns:
        A ``StressReport``: ``rows``/``to_frame()``, ``worst()``, ``figures["stress"]``.

    Raises:
        ConfigError: an unknown shift name, a bad ``n_images`` or a k-class checkpoint.
        CheckpointError: a checkpoint that records no validation split (with ``split="validation"``).

    Example:
        >>> report = pneumocxr.stress("runs/cpu_fast", "data/chest_xray",  # doctest: +SKIP
        ...                           shifts="jpeg,gamma", n_images=100, out_dir="out/stress")
        >>> report.worst()["specificity"]  # doctest: +SKIP
    """
    from pneumocxr.data.stress_shifts import resolve_shifts
    from pneumocxr.evaluation import DEFAULT_N_BOOT
    from pneumocxr.inference import load_predictor
    from pneumocxr.training.stress_augmentation import recorded_augmentation
    from pneumocxr.workflows import resolve_checkpoint
    from pneumocxr.workflows.stress import run_stress

    resolve_shifts(shifts)  # a bad name fails before the model is loaded
    path = resolve_checkpoint(checkpoint)
    predictor = load_predictor(path, device=device, batch_size=batch_size, tta=tta)
    result = run_stress(
        path,
        data,
        split=split,
        shifts=shifts,
        seed=seed,
        n_images=n_images,
        out_dir=out_dir,
        augmentation=recorded_augmentation(predictor.meta.config),
        n_boot=DEFAULT_N_BOOT if n_boot is None else n_boot,
        predictor=predictor,
    )
    return StressReport(result)
