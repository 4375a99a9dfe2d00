"""Write tidy rows (list of dicts) as CSV: every figure and table is also saved as data."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np


def _cell(value: object) -> object:
    if isinstance(value, np.generic):
        value = value.item()  # numpy scalar -> Python (repr of np.float64 is "np.float64(…)")
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)  # repr: round-trips exactly
    return value


def write_rows(path: str | Path, rows: Iterable[Mapping[str, object]]) -> Path:
    """CSV with the union of the rows' keys as header (first-seen order); NaN as ``nan``, None empty."""
    rows = list(rows)
    header: list[str] = []
    for row in rows:
        header.extend(k for k in row if k not in header)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
    return path
