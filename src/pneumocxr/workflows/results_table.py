"""``results/performance_metrics.csv``: one row per (model, checkpoint, data, split, threshold kind).

Every evaluation appends its rows; re-evaluating the same checkpoint on the same data and split
REPLACES its earlier rows with the same threshold kind instead of adding duplicates, so the table
always holds the latest numbers once. The key deliberately:

- includes ``data``, so an external-validation run does not overwrite the internal one;
- uses ``threshold_kind`` ("checkpoint" / "fixed_0.5") rather than the threshold value, so a
  checkpoint whose threshold was re-chosen replaces its stale row instead of leaving two rows
  that contradict each other.

A k-class checkpoint (``normal-bacterial-viral``) adds ONE row, ``threshold_kind = "argmax"``, with
a ``task`` column naming its task (binary rows leave ``task`` empty), its ``class_names``, and its
metrics in the columns that mean the same thing (``accuracy``, ``balanced_accuracy``, and ``roc_auc``
= the macro one-vs-rest AUC) plus its own (``macro_precision``, ``macro_recall``, ``macro_f1``,
``weighted_f1``, ``cohen_kappa``, ``recall_<CLASS>``), each with ``_lo``/``_hi``. The binary-only
columns (sensitivity, PPV, F1 of PNEUMONIA, …) stay empty in such a row.

Rows from older versions with other columns are kept; the header is the union (existing columns
first). The file is rewritten atomically under an exclusive lock, so concurrent evaluations
(e.g. one per model) neither corrupt it nor lose each other's rows.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pneumocxr.evaluation import METRIC_NAMES, MetricsCI, MulticlassMetrics

KEY_COLUMNS = ("model", "checkpoint", "data", "split", "threshold_kind")


def metric_row(ci: MetricsCI, **identity: object) -> dict[str, object]:
    """One table row: identity columns, n, counts, then ``metric``, ``metric_lo``, ``metric_hi`` each."""
    info = ci.info
    row: dict[str, object] = dict(identity)
    row.update(threshold=info["threshold"], n=info["n"], n_positive=info["n_positive"])
    row.update(n_patients=info["n_patients"], tp=info["tp"], fp=info["fp"], tn=info["tn"], fn=info["fn"])
    for name in METRIC_NAMES:
        value, low, high = ci[name]
        row.update({name: value, f"{name}_lo": low, f"{name}_hi": high})
    undefined = {k: e.note for k, e in ci.estimates.items() if e.note and value_is_nan(e.value)}
    row["undefined"] = "; ".join(f"{k}: {why}" for k, why in undefined.items())
    row["ci_method"] = f"Wilson (proportions), patient bootstrap n={info['n_boot']} (others)"
    return row


# k-class overall metric -> column (the binary column where it means the same thing, else its own)
MULTICLASS_COLUMNS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced_accuracy",
    "macro_auc": "roc_auc",
    "macro_precision": "macro_precision",
    "macro_recall": "macro_recall",
    "macro_f1": "macro_f1",
    "weighted_f1": "weighted_f1",
    "cohen_kappa": "cohen_kappa",
}


def multiclass_row(metrics: MulticlassMetrics, *, task: str, **identity: object) -> dict[str, object]:
    """The one table row of a k-class evaluation (module docstring): decided by argmax."""
    info = metrics.info
    row: dict[str, object] = dict(identity)
    row.update(threshold_kind="argmax", task=task, class_names="/".join(metrics.class_names))
    row.update(n=metrics.n, n_patients=info.get("n_patients", ""))
    for name, column in MULTICLASS_COLUMNS.items():
        e = metrics.overall[name]
        row.update({column: e.value, f"{column}_lo": e.low, f"{column}_hi": e.high})
    for name in metrics.class_names:
        e = metrics.per_class[name]["recall"]
        row.update({f"recall_{name}": e.value, f"recall_{name}_lo": e.low, f"recall_{name}_hi": e.high})
    undefined = {k: e.note for k, e in metrics.overall.items() if e.note and value_is_nan(e.value)}
    row["undefined"] = "; ".join(f"{k}: {why}" for k, why in undefined.items())
    row["ci_method"] = (
        f"Wilson (accuracy, per-class recall), {info.get('bootstrap', 'patient_bootstrap')} "
        f"n={info.get('n_boot', '')} (others); macro AUC = mean one-vs-rest AUC"
    )
    return row


def value_is_nan(value: float) -> bool:
    return value != value


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive lock on ``path.lock`` (POSIX); a no-op where fcntl is unavailable."""
    try:
        import fcntl
    except ImportError:  # Windows: single-writer assumption
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _key(row: Mapping[str, object]) -> tuple[str, ...]:
    return tuple(str(row.get(k, "")) for k in KEY_COLUMNS)


def csv_cell(value: object) -> object:
    if isinstance(value, float):
        return "nan" if value != value else repr(value)
    return "" if value is None else value


def performance_csv_path(out_dir: str | os.PathLike, results_csv: str | os.PathLike | None) -> Path:
    """Where an evaluation into ``out_dir`` adds its rows: ``results_csv``, by default
    ``out_dir/results/performance_metrics.csv``."""
    return (
        Path(results_csv)
        if results_csv is not None
        else Path(out_dir) / "results" / "performance_metrics.csv"
    )


def update_performance_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, object]]) -> Path:
    """Append ``rows``, first removing existing rows with the same key (see module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new_keys = {_key(r) for r in rows}
    with _locked(path):
        header: list[str] = []
        kept: list[dict[str, str]] = []
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                header = list(reader.fieldnames or [])
                kept = [r for r in reader if _key(r) not in new_keys]
        for row in rows:
            header.extend(k for k in row if k not in header)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=header, restval="")
                writer.writeheader()
                writer.writerows(kept)
                writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return path
