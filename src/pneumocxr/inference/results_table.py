"""``results/performance_metrics.csv``: one row per (model, checkpoint, data, split, threshold kind).

Every evaluation appends its rows; re-evaluating the same checkpoint on the same data and split
REPLACES its earlier rows with the same threshold kind instead of adding duplicates, so the table
always holds the latest numbers once. The key deliberately:

- includes ``data``, so an external-validation run does not overwrite the internal one;
- uses ``threshold_kind`` ("checkpoint" / "fixed_0.5") rather than the threshold value, so a
  checkpoint whose threshold was re-chosen replaces its stale row instead of leaving two rows
  that contradict each other.

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

from pneumocxr.evaluation import METRIC_NAMES, MetricsCI

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
