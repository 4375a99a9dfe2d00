"""``compare``: several models on the same images, with paired tests (``pneumocxr compare``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pneumocxr.api._display import Figures, estimate, render_table, to_frame
from pneumocxr.api._evaluate import VALIDATION, Evaluation
from pneumocxr.data.discovery import Dataset
from pneumocxr.inference.predictor import DEFAULT_BATCH_SIZE

__all__ = ["Comparison", "compare"]

HEADLINE = ("roc_auc", "accuracy", "sensitivity", "specificity")


def _p(value: float) -> str:
    if value != value:  # NaN: the reference itself
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


@dataclass(frozen=True)
class Comparison:
    """What ``compare`` measured: the comparison table (``rows``, ``to_frame()``), the paired tests
    (``pairwise``), each model's ``Evaluation`` and the comparison plots (``figures``). Jupyter shows
    the table with CIs and p-values. ``result`` is the workflow's ``ComparisonResult``.

    Example:
        >>> cmp.to_frame()[["roc_auc", "roc_auc_lo", "roc_auc_hi"]]  # doctest: +SKIP
        >>> cmp.figures["roc_comparison"]  # doctest: +SKIP
    """

    result: Any
    evaluations: dict[str, Evaluation]  # model name → its evaluation, in the given order

    @property
    def reference(self) -> str:
        """The first model: p-values are against it."""
        return self.result.reference

    @property
    def rows(self) -> list[dict[str, Any]]:
        """comparison.csv: one row per model — every metric at its own stored threshold with its CI
        (``roc_auc``, ``roc_auc_lo``, ``roc_auc_hi`` …), parameters, images/s, and p-values against
        the reference (DeLong for AUC, McNemar for accuracy)."""
        return self.result.table

    @property
    def pairwise(self) -> list[dict[str, Any]]:
        """comparison_pairwise.csv: the two tests for every pair of models."""
        return self.result.pairwise

    def to_frame(self) -> Any:
        """``rows`` as a pandas DataFrame indexed by model (needs pandas)."""
        return to_frame(self.rows, index="model")

    @property
    def figures(self) -> Figures:
        """``roc_comparison`` and ``confusion_matrix_comparison``, as saved."""
        files = self.result.files
        return Figures(
            {
                "roc_comparison": files["roc_comparison_png"],
                "confusion_matrix_comparison": files["confusion_matrix_comparison_png"],
            }
        )

    def __repr__(self) -> str:
        return f"Comparison({', '.join(self.evaluations)}; reference {self.reference}; {self.result.out_dir})"

    def _repr_html_(self) -> str:
        columns = ["model", "params", "img/s", "ROC AUC", "accuracy", "sensitivity", "specificity"]
        columns += ["p DeLong", "p McNemar"]
        rows = []
        for r in self.rows:
            cells = [r["model"], f"{r['parameters'] / 1e6:.2f}M", f"{r['images_per_s']:.1f}"]
            cells += [estimate(r[m], r[f"{m}_lo"], r[f"{m}_hi"]) for m in HEADLINE]
            cells += [_p(r["delong_p_vs_reference"]), _p(r["mcnemar_p_vs_reference"])]
            rows.append(cells)
        splits = dict.fromkeys(ev.split for ev in self.evaluations.values())
        first = self.rows[0]
        notes = [
            f"each model at its stored threshold; 95% CIs; p-values vs {self.reference} (paired, images "
            "treated as independent: somewhat optimistic with several images per child)",
            f"speed on {first['speed_device']}, batch {first['speed_batch_size']} (decoding excluded)",
            *(f"{r['model']}: undefined — {r['undefined']}" for r in self.rows if r["undefined"]),
        ]
        caption = f"{len(rows)} models on the same {self.rows[0]['n']} images: " + " / ".join(splits)
        return render_table(caption=caption, columns=columns, rows=rows, notes=notes)


def compare(
    models: Sequence[str | os.PathLike],
    data: str | os.PathLike | Dataset,
    *,
    out_dir: str | os.PathLike,
    split: str = "test",
    n_boot: int | None = None,
    seed: int = 0,
    tta: bool | None = None,
    speed_seconds: float = 2.0,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    cache_dir: str | os.PathLike | None = None,
    results_csv: str | os.PathLike | None = None,
) -> Comparison:
    """Evaluate two or more models on the same images and compare them (``pneumocxr compare``):
    metrics with 95 % CIs, parameters, speed, DeLong (AUC) and McNemar (accuracy) p-values against
    the first model.

    Each model is evaluated into ``out_dir/evaluation/<model>/`` (saved predictions of the same
    checkpoint on the same images are reused); the tables go to ``out_dir/results``, the plots to
    ``out_dir/plots``.

    Args:
        models: checkpoints or run folders (the first is the reference).
        data: a dataset path or ``Dataset``.
        out_dir: output folder.
        split: ``"test"`` (default), ``"val"``, or ``"validation"``: the validation split every
            model records (they must record the same patients).
        n_boot: bootstrap resamples (default 2000). seed: bootstrap seed.
        tta: test-time augmentation for every model. speed_seconds: time spent measuring images/s.
        device: as in ``evaluate``.
        batch_size: as in ``evaluate``.
        cache_dir: as in ``evaluate``.
        results_csv: as in ``evaluate``.

    Returns:
        A ``Comparison``: ``rows``/``to_frame()`` (one row per model), ``pairwise``, ``evaluations``
        (model → ``Evaluation``) and ``figures``; Jupyter shows the table.

    Raises:
        ConfigError: fewer than two models, or a k-class model. CheckpointError: a missing
        checkpoint, or models recording different validation patients. DatasetError: no such split.

    Example:
        >>> cmp = pneumocxr.compare(["runs/cpu_fast", "runs/custom_cnn"], "data/chest_xray",  # doctest: +SKIP
        ...                         split="validation", out_dir="out/compare")
        >>> cmp.to_frame()[["roc_auc", "delong_p_vs_reference"]]  # doctest: +SKIP
    """
    from pneumocxr.evaluation import DEFAULT_N_BOOT
    from pneumocxr.workflows import compare_models, resolve_checkpoint
    from pneumocxr.workflows.validation import shared_validation

    result = compare_models(
        models,
        data,
        split=split,
        out_dir=out_dir,
        n_boot=DEFAULT_N_BOOT if n_boot is None else n_boot,
        seed=seed,
        cache_dir=cache_dir,
        device=device,
        batch_size=batch_size,
        results_csv=results_csv,
        speed_seconds=speed_seconds,
        tta=tta,
    )
    sources: list[Any] = [data] * len(models)
    if split == VALIDATION and not isinstance(
        data, Dataset
    ):  # each model's rebuilt split, as compare read it
        sources = list(shared_validation([resolve_checkpoint(m) for m in models], data))
    evaluations = {
        name: Evaluation(ev, source) for (name, ev), source in zip(result.evaluations.items(), sources)
    }
    return Comparison(result, evaluations)
