"""Stress-suite results for a model card: read them, whatever their shape, and lay them out.

Pure (files and plain data, no models). The stress suite's file shape may still change, so
``read_stress`` accepts the likely spellings (a list of rows, or a mapping holding one; a metric as
a number with ``_lo``/``_low``/… siblings, a ``[low, high]`` ``_ci``, or a ``{"value", "low",
"high"}`` mapping; the worst case as one row or per metric) and ignores what it does not know. A
missing or unrecognised file is ``{"ok": False, "reason": …}``: the card says "not run", never
crashes. ``stress_section`` adds, per shift, whether the recipe's augmentation covered that kind
of shift (``model_card.shift_coverage``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pneumocxr.evaluation.model_card import MISSING, fmt, fmt_ci, shift_coverage, table
from pneumocxr.evaluation.model_card_inputs import load_json

_SHIFT_KEYS = ("shift", "name", "transform", "perturbation", "corruption", "kind")
_SEVERITY_KEYS = ("severity_name", "severity", "level", "strength", "magnitude", "intensity")
_ROW_LISTS = ("rows", "results", "table", "stress", "shifts")
_BASELINE_KEYS = ("baseline", "clean", "reference", "unshifted")
_WORST_KEYS = ("worst", "worst_case")
_METRICS = {
    "auc": ("auc", "roc_auc", "AUC"),
    "sensitivity": ("sensitivity", "sens", "recall", "tpr"),
    "specificity": ("specificity", "spec", "tnr"),
}
_LOW = ("_lo", "_low", "_lower", "_ci_low")
_HIGH = ("_hi", "_high", "_upper", "_ci_high")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _flag(value: Any) -> bool | None:
    """A yes/no cell from JSON (bool/None) or CSV ("True"/"False"/"")."""
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    return True if text in ("true", "yes", "1") else False if text in ("false", "no", "0") else None


def _first(row: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    return next((row[k] for k in keys if k in row and row[k] not in (None, "")), None)


def _estimate(
    row: Mapping[str, Any], names: tuple[str, ...]
) -> tuple[float, float | None, float | None] | None:
    """(value, low, high) of the first spelling of a metric present in ``row``, else None."""
    for name in names:
        if name not in row:
            continue
        raw = row[name]
        if isinstance(raw, Mapping):
            value = _number(_first(raw, ("value", "estimate", "mean", "point")))
            low, high = (
                _first(raw, ("low", "lower", "lo", "ci_low")),
                _first(raw, ("high", "upper", "hi", "ci_high")),
            )
            ci = raw.get("ci")
        else:
            value = _number(raw)
            low, high = (
                _first(row, tuple(name + s for s in _LOW)),
                _first(row, tuple(name + s for s in _HIGH)),
            )
            ci = row.get(f"{name}_ci")
        if isinstance(ci, (list, tuple)) and len(ci) == 2:
            low, high = ci
        if value is not None:
            return value, _number(low), _number(high)
    return None


def _severity(row: Mapping[str, Any]) -> str:
    """``moderate (0.75)``: the severity's name or number, with the shift's parameter when given."""
    key = next((k for k in _SEVERITY_KEYS if row.get(k) not in (None, "")), None)
    if key is None:
        return ""
    text = row[key] if isinstance(row[key], str) else fmt(row[key])
    level = _number(row.get("level")) if key != "level" else None
    return f"{text} ({level:g})" if level is not None else text


def stress_row(row: Any) -> dict[str, Any] | None:
    """One stress result as ``{"shift", "severity", "auc", "sensitivity", "specificity", "covered"}``
    (estimates as (value, low, high)); None when it names no shift or carries none of the three metrics."""
    if not isinstance(row, Mapping):
        return None
    shift = _first(row, _SHIFT_KEYS)
    metrics = {key: _estimate(row, names) for key, names in _METRICS.items()}
    if shift is None or all(v is None for v in metrics.values()):
        return None
    covered = _flag(row.get("in_training_augmentation", row.get("covered")))
    return {"shift": str(shift), "severity": _severity(row), **metrics, "covered": covered}


def _rows_of(data: Any) -> list[Any]:
    """The list of result rows in whatever container the file uses."""
    if isinstance(data, list):
        return data
    if not isinstance(data, Mapping):
        return []
    for key in _ROW_LISTS:
        value = data.get(key)
        if isinstance(value, list) and any(stress_row(r) for r in value):
            return value
        if isinstance(value, Mapping) and value and all(isinstance(v, list) for v in value.values()):
            return [{"shift": s, **r} for s, rows in value.items() for r in rows if isinstance(r, Mapping)]
    return []


def _worst(data: Any) -> list[dict[str, Any]]:
    """The stress suite's own worst cases: ``[{"heading", "items": [{"metric", "shift", "severity",
    "estimate", "change"}]}]``, from a per-metric mapping (``{"auc": {...}, …}``) or one row."""
    if not isinstance(data, Mapping):
        return []
    out = []
    keys = [k for k in data if k in _WORST_KEYS or str(k).startswith("worst_excluding_")]
    for key in keys:
        value = data[key]
        if not isinstance(value, Mapping):
            continue
        heading = (
            "Worst case" if key in _WORST_KEYS else "Worst case without " + str(key)[16:].replace("_", " ")
        )
        if (row := stress_row(value)) is not None:  # one worst row
            items = [{"metric": "", "shift": row["shift"], "severity": row["severity"], "row": row}]
        else:  # metric → the condition where it is lowest
            items = [
                {
                    "metric": str(metric),
                    "shift": str(w.get("shift", "?")),
                    "severity": _severity(w),
                    "estimate": _estimate(
                        {"v": w.get("value"), "v_low": w.get("low"), "v_high": w.get("high")}, ("v",)
                    ),
                    "change": _number(w.get("change_from_clean")),
                }
                for metric, w in value.items()
                if isinstance(w, Mapping)
            ]
        if items:
            out.append({"heading": heading, "items": items})
    return out


def _definitions(data: Any) -> dict[str, list[str]]:
    """Shift name → the augmentation fields that cover it, where the file defines its shifts."""
    shifts = data.get("shifts") if isinstance(data, Mapping) else None
    if not isinstance(shifts, list):
        return {}
    return {
        str(s["name"]): [str(f) for f in s.get("covered_by") or []]
        for s in shifts
        if isinstance(s, Mapping) and "name" in s and isinstance(s.get("covered_by", []), list)
    }


def _read_csv(path: Path) -> tuple[Any, str]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh)), ""
    except FileNotFoundError:
        return None, f"{path} not found"
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return None, f"{path} is unreadable ({type(exc).__name__}: {exc})"


def _stress_file(path: Path) -> Path:
    """A folder means its stress.json, else its stress.csv; a file is itself."""
    if not path.is_dir():
        return path
    if (path / "stress.json").is_file() or not (path / "stress.csv").is_file():
        return path / "stress.json"
    return path / "stress.csv"


def read_stress(path: str | Path | None, checkpoint_sha256: str = "") -> dict[str, Any]:
    """Stress-suite results (a folder holding stress.json or stress.csv, or the file itself).

    ``{"ok": True, "path", "rows", "worst", "definitions", "threshold", "about", "warnings"}``, or
    ``{"ok": False, "reason"}`` when there is nothing this version can read.
    """
    if path is None:
        return {"ok": False, "reason": "no stress-suite results were given"}
    path = _stress_file(Path(path))
    data, reason = _read_csv(path) if path.suffix.lower() == ".csv" else load_json(path)
    if reason:
        return {"ok": False, "path": str(path), "reason": reason}
    rows = [r for r in map(stress_row, _rows_of(data)) if r is not None]
    info = data if isinstance(data, Mapping) else {}
    baseline = _first(info, _BASELINE_KEYS)
    if isinstance(baseline, Mapping) and (row := stress_row({"shift": "none (baseline)", **baseline})):
        rows.insert(0, row)
    if not rows:
        reason = f"{path}: no stress results in a shape this version of the card reads"
        return {"ok": False, "path": str(path), "reason": reason}
    warnings = []
    sha = str(info.get("checkpoint_sha256") or "")
    if checkpoint_sha256 and sha and sha != checkpoint_sha256:
        warnings.append(f"these results are of another checkpoint (sha256 {sha[:12]}…), not this one")
    about = ""
    if info.get("split"):
        about = f"on {info['split']}" + (f", {fmt(info['n_images'])} images" if info.get("n_images") else "")
        about += f", seed {info['seed']}" if info.get("seed") is not None else ""
    return {
        "ok": True,
        "path": str(path),
        "rows": rows,
        "worst": _worst(data),
        "definitions": _definitions(data),
        "threshold": _number(info.get("threshold")),
        "about": about,
        "warnings": warnings,
    }


# ----------------------------------------------------------------------------- layout


def _est(estimate: tuple | None) -> str:
    return fmt_ci(*estimate) if estimate else MISSING


_METRIC_NAMES = {"auc": "AUC", "sensitivity": "sensitivity", "specificity": "specificity"}


def _where(shift: str, severity: str) -> str:
    return f"{shift}" + (f" at severity {severity}" if severity else "")


def _row_text(row: Mapping[str, Any]) -> str:
    parts = [f"{n} {_est(row[k])}" for k, n in _METRIC_NAMES.items() if row.get(k)]
    return f"{_where(row['shift'], row['severity'])}: " + ", ".join(parts)


def _is_baseline(row: Mapping[str, Any]) -> bool:
    name = row["shift"].lower()
    clean = ("none", "baseline", "clean", "identity", "unshifted")
    return any(w in name for w in clean) or row["severity"].split(" ")[0] in ("0", "clean")


def _worst_lines(stress: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The suite's own worst cases where it reports them, else the lowest of each metric here."""
    lines = []
    baseline = next((r for r in rows if _is_baseline(r)), None)
    if baseline:
        parts = [f"{n} {_est(baseline[k])}" for k, n in _METRIC_NAMES.items() if baseline.get(k)]
        lines.append("Unshifted reference: " + ", ".join(parts) + ".")
    for worst in stress.get("worst") or []:
        parts = []
        for item in worst["items"]:
            if "row" in item:
                parts.append(_row_text(item["row"]))
                continue
            change = f", {item['change']:+.3f} from unshifted" if item.get("change") is not None else ""
            metric = _METRIC_NAMES.get(item["metric"], item["metric"])
            parts.append(
                f"{metric} {_est(item['estimate'])} ({_where(item['shift'], item['severity'])}{change})"
            )
        lines.append(f"**{worst['heading']}:** " + "; ".join(parts) + ".")
    if stress.get("worst"):
        return lines
    shifted = [r for r in rows if not _is_baseline(r)]
    for key, name in _METRIC_NAMES.items():
        scored = [r for r in shifted if r.get(key)]
        if scored:
            low = min(scored, key=lambda r: r[key][0])
            lines.append(f"**Lowest {name}:** {_row_text(low)}.")
    return lines


def stress_section(stress: Mapping[str, Any], ranges: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stress table (with what training augmentation covered) and the worst cases, or why not."""
    if not stress.get("ok"):
        return {"ok": False, "reason": str(stress.get("reason", "no stress-suite results")).rstrip(".")}
    rows, definitions = stress["rows"], stress.get("definitions") or {}
    body = [
        [
            r["shift"],
            r["severity"] or MISSING,
            _est(r["auc"]),
            _est(r["sensitivity"]),
            _est(r["specificity"]),
            MISSING
            if _is_baseline(r)
            else shift_coverage(r["shift"], ranges, definitions.get(r["shift"]), r["covered"]),
        ]
        for r in rows
    ]
    header = [
        "shift",
        "severity",
        "AUC (95 % CI)",
        "sensitivity (95 % CI)",
        "specificity (95 % CI)",
        "covered by training augmentation",
    ]
    return {
        "ok": True,
        "path": stress["path"],
        "about": stress.get("about", ""),
        "threshold": stress.get("threshold"),
        "table": table(header, body),
        "warnings": list(stress.get("warnings", [])),
        "worst": _worst_lines(stress, rows),
    }
