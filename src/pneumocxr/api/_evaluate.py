"""``evaluate``: one checkpoint on one split, every metric with its 95 % CI (``pneumocxr evaluate``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumocxr.api._display import Figures, estimate, render_table, saved_figure, to_frame
from pneumocxr.data.discovery import Dataset
from pneumocxr.inference.predictor import DEFAULT_BATCH_SIZE

__all__ = ["Evaluation", "evaluate", "resolve_data"]

VALIDATION = "validation"  # = workflows.validation.VALIDATION (not imported: keeps this module cheap)


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluate`` measured: the metrics table with 95 % CIs (``rows``, ``to_frame()``),
    per-image predictions, the saved plots as ``figures`` and ``gradcam_grid()``; Jupyter shows the
    table. ``result`` is the workflow's own result (``EvaluationResult``, or
    ``MulticlassEvaluationResult`` for a k-class checkpoint), with every field and file.

    Example:
        ```python
        ev.metrics["checkpoint"]["sensitivity"]  # (value, low, high)
        ev.figures["roc"]
        ```
    """

    result: Any
    data: str | os.PathLike | Dataset  # what was read: a dataset path, or the rebuilt validation split

    # -- what was measured --------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self.result.model

    @property
    def split(self) -> str:
        """The split's name, saying what it was to the model, e.g. "validation (used for model
        selection: optimistic)"."""
        return self.result.split

    @property
    def binary(self) -> bool:
        return getattr(self.result, "task", "binary") == "binary"

    @property
    def metrics(self) -> Any:
        """Binary: threshold kind ("checkpoint", "fixed_0.5") → ``MetricsCI`` (``m["roc_auc"]`` is
        (value, low, high)); k classes: the ``MulticlassMetrics``."""
        return self.result.metrics

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The metrics table (as metrics.csv): one row per metric and threshold kind — value, 95 % CI
        (low, high), how the interval was computed, and why a metric is undefined (note)."""
        if self.binary:
            return [
                {"threshold_kind": kind, "threshold": ci.info["threshold"], **row}
                for kind, ci in self.result.metrics.items()
                for row in ci.rows()
            ]
        m = self.result.metrics
        rows = [{"scope": "overall", "metric": k, **vars(e)} for k, e in m.overall.items()]
        rows += [
            {"scope": c, "metric": k, **vars(e)} for c, per in m.per_class.items() for k, e in per.items()
        ]
        return rows

    def to_frame(self) -> Any:
        """``rows`` as a pandas DataFrame (needs pandas)."""
        return to_frame(self.rows)

    @property
    def per_image(self) -> list[dict[str, Any]]:
        """One row per evaluated image: path, patient, true class, calibrated probability (of
        PNEUMONIA; k classes: of the predicted class) and the predicted class."""
        r, batch = self.result, self.result.predictions
        names = batch.class_names
        return [
            {
                "path": path,
                "patient_id": patient,
                "label": names[int(label)],
                "calibrated_probability": float(p),
                "prediction": names[int(pred)],
            }
            for path, patient, label, p, pred in zip(
                r.paths, r.patient_ids, r.labels, batch.calibrated_probability, batch.prediction
            )
        ]

    # -- figures --------------------------------------------------------------------------------------
    @property
    def figures(self) -> Figures:
        """name → Figure of every plot the evaluation saved (roc, precision_recall, confusion_matrix,
        reliability, probability_histogram, risk_coverage …)."""
        return Figures({k: v for k, v in self.result.files.items() if Path(v).suffix == ".png"})

    def gradcam_grid(
        self,
        out_path: str | os.PathLike | None = None,
        *,
        per_category: int = 3,
        method: str = "gradcam",
        device: str = "cpu",
    ) -> Any:
        """The Grad-CAM grid of this evaluation (``pneumocxr run``'s gradcam_visualizations.png): the
        most confident true/false positives/negatives, each map explaining the predicted class.

        Args:
            out_path: the PNG to write (default ``out_dir/plots/gradcam_visualizations.png``); the
                cases shown are written beside it as JSON.
            per_category: images per outcome row.
            method: gradcam, gradcam++, scorecam or eigencam.

        Returns:
            The grid as a matplotlib Figure.

        Raises:
            ConfigError: a k-class evaluation (the grid is of binary outcomes) or an unknown method.
        """
        from pneumocxr.data.discovery import discover
        from pneumocxr.errors import ConfigError
        from pneumocxr.explain import gradcam_grid_for

        if not self.binary:
            raise ConfigError(
                "the Grad-CAM grid shows binary outcomes (TP/FP/FN/TN); this model has k classes"
            )
        r = self.result
        out = Path(out_path) if out_path is not None else r.out_dir / "plots" / "gradcam_visualizations.png"
        path = gradcam_grid_for(
            r.checkpoint,
            (self.data if isinstance(self.data, Dataset) else discover(self.data)).in_split(r.split),
            r.predictions.calibrated_probability,
            out,
            threshold=r.predictions.threshold,
            method=method,
            per_category=per_category,
            device=device,
        )
        return saved_figure(path)

    # -- display ----------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        r = self.result
        return f"Evaluation({r.model} on {r.split}: {r.n_images} images, out_dir={r.out_dir})"

    def _repr_html_(self) -> str:
        r = self.result
        notes = [*(f"WARNING: {w}" for w in r.selection.warnings), *r.selection.notes]
        caption = f"{r.model} ({r.architecture}) on {r.data} [{r.split}]: {r.n_images} images"
        if not self.binary:
            rows = [
                [row["scope"], row["metric"], estimate(row["value"], row["low"], row["high"], 4)]
                for row in self.rows
            ]
            return render_table(
                caption=caption, columns=["scope", "metric", "value (95% CI)"], rows=rows, notes=notes
            )
        from pneumocxr.evaluation import METRIC_LABELS

        kinds = list(r.metrics)
        columns = ["metric", *(f"threshold {r.metrics[k].info['threshold']:.4g} ({k})" for k in kinds)]
        rows = []
        for name, label in METRIC_LABELS.items():
            cells = [estimate(*r.metrics[k][name], digits=4) for k in kinds]
            rows.append([label, *cells])
        info = r.metrics[kinds[0]].info
        notes.append(
            f"{info['n_patients']} patients, {info['n_positive']} PNEUMONIA; calibrated probability "
            f"(temperature {r.predictions.temperature:.4g}); 95% CIs: Wilson for proportions, patient "
            f"bootstrap (n={info['n_boot']}) for the rest"
        )
        notes += [f"undefined: {METRIC_LABELS.get(k, k)}: {why}" for k, why in r.undefined().items()]
        return render_table(caption=caption, columns=columns, rows=rows, notes=notes)


def resolve_data(
    checkpoint: Path, data: str | os.PathLike | Dataset, split: str
) -> tuple[str | os.PathLike | Dataset, str]:
    """(the data, the split name) evaluate reads: ``split="validation"`` is the patient-level split
    the checkpoint records, rebuilt exactly and named for what it is (as ``pneumocxr evaluate``)."""
    from pneumocxr.workflows.validation import recorded_validation

    if split == VALIDATION:
        dataset = recorded_validation(checkpoint, data)
        return dataset, dataset.splits()[0]
    return data, split


def evaluate(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike | Dataset,
    *,
    out_dir: str | os.PathLike,
    split: str = "test",
    n_boot: int | None = None,
    seed: int = 0,
    tta: bool | None = None,
    mc_dropout: int = 0,
    threshold_rule: str | None = None,
    prevalence: float | None = None,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    runtime: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    results_csv: str | os.PathLike | None = None,
) -> Evaluation:
    """Evaluate a checkpoint on one split with 95 % confidence intervals (``pneumocxr evaluate``).

    Metrics are reported at the checkpoint's stored threshold (chosen on validation) and at 0.5:
    Wilson intervals for proportions, a patient-level bootstrap for AUC and the rest. Writes
    predictions.csv, metrics.json/csv, reports and plots into ``out_dir``.

    Args:
        checkpoint: ``best.pt``, its run folder, an ensemble file or an exported ``.onnx``.
        data: a dataset path or ``Dataset``.
        out_dir: output folder.
        split: ``"test"`` (default), ``"val"``, or ``"validation"`` = the patient-level split the
            checkpoint records, rebuilt exactly (optimistic: it chose the model; labelled so).
        n_boot: bootstrap resamples (default 2000). seed: bootstrap seed.
        tta: test-time augmentation (None: off, or as an ensemble file was created).
        mc_dropout: N >= 2 stochastic passes with dropout on (0 = off).
        threshold_rule: decide at another stored rule (youden, youden_edge, target_sensitivity,
            bootstrap_median). prevalence: also report PPV/NPV at this disease prevalence.
        device: auto, cpu, cuda, cuda:N. runtime: auto, torch or onnx.
        cache_dir: preprocessed-image cache to read/fill. results_csv: performance table to update.

    Returns:
        An ``Evaluation``: ``rows``/``to_frame()`` (the metrics table), ``metrics``, ``per_image``,
        ``figures`` and ``gradcam_grid()``; Jupyter shows the table with its CIs.

    Raises:
        CheckpointError: a missing or unreadable checkpoint, or ``split="validation"`` for one that
            records no split. DatasetError: no such split in ``data``. ConfigError: a bad option.

    Example:
        ```python
        ev = pneumocxr.evaluate("runs/cpu_fast", "data/chest_xray", split="validation", out_dir="out/eval")
        ev.metrics["checkpoint"]["roc_auc"]  # (value, low, high)
        ```
    """
    from pneumocxr.evaluation import DEFAULT_N_BOOT, check_prevalence
    from pneumocxr.inference import load_predictor
    from pneumocxr.workflows import evaluate_checkpoint, resolve_checkpoint

    if prevalence is not None:
        prevalence = check_prevalence(prevalence)
    path = resolve_checkpoint(checkpoint)
    source, split_name = resolve_data(path, data, split)
    predictor = load_predictor(
        path, device=device, batch_size=batch_size, tta=tta, mc_dropout=mc_dropout, runtime=runtime
    )
    result = evaluate_checkpoint(
        path,
        source,
        split=split_name,
        out_dir=out_dir,
        n_boot=DEFAULT_N_BOOT if n_boot is None else n_boot,
        seed=seed,
        cache_dir=cache_dir,
        device=device,
        batch_size=batch_size,
        results_csv=results_csv,
        predictor=predictor,
        threshold_rule=threshold_rule,
        prevalence=prevalence,
    )
    return Evaluation(result, source)
