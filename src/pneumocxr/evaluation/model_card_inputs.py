"""Read the ``evaluate`` output folders a model card reports, labelled by what their split is worth.

Files only (metrics.json), never models, so the card can be rebuilt anywhere. Tolerant by design:
a missing or unrecognised folder becomes ``{"ok": False, "reason": …}`` and the card says so,
never a crash. Stress-suite results: ``model_card_stress``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pneumocxr.evaluation.metrics import METRIC_LABELS, METRIC_NAMES
from pneumocxr.evaluation.model_card import fmt, fmt_ci, table
from pneumocxr.evaluation.multiclass import MULTICLASS_LABELS, OVERALL_METRICS

SELECTION_WORDS = ("optimistic", "used for model selection", "used for selection")
TEST_LABEL = "test — withheld: not used for training or model selection"


# ----------------------------------------------------------------------------- evaluate folders


def load_json(path: Path) -> tuple[Any, str]:
    """(data, "") or (None, why it cannot be read)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), ""
    except FileNotFoundError:
        return None, f"{path} not found"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path} is unreadable ({type(exc).__name__}: {exc})"


def split_label(split: str, selection: Mapping[str, Any] | None, data: str = "") -> str:
    """What a split's numbers are worth: optimistic validation, withheld test, external, or unknown."""
    selection = selection or {}
    used = selection.get("could_have_been_used_for_selection")
    if any(word in split for word in SELECTION_WORDS):
        return split  # the carved validation split's name already says it
    if used is True:
        return f"{split} — used for training or model selection: optimistic"
    if used is None:
        return f"{split} — use in training or model selection not recorded"
    if selection.get("same_dataset") is False:
        return f"{split} — external validation ({data or 'another dataset'})"
    if split == "test":
        return TEST_LABEL
    if split == "val":
        return "val — the dataset's own val folder (not used for model selection)"
    return f"{split} — not used for training or model selection"


def read_evaluation(path: str | Path, checkpoint_sha256: str = "") -> dict[str, Any]:
    """One ``evaluate`` output folder (or its metrics.json) as a card section.

    ``checkpoint_sha256``: the card's checkpoint; an evaluation of another file is flagged.
    """
    path = Path(path)
    file = path / "metrics.json" if path.is_dir() or not path.suffix else path
    data, reason = load_json(file)
    if not isinstance(data, dict) or "metrics" not in data or "split" not in data:
        reason = reason or f"{file} is not the metrics.json of `pneumocxr evaluate`"
        return {"ok": False, "path": str(path), "reason": reason, "label": str(path)}
    split = str(data["split"])
    notes = list((data.get("selection") or {}).get("notes") or []) + _inference_notes(
        data.get("inference") or {}
    )
    warnings = list((data.get("selection") or {}).get("warnings") or [])
    sha = str(data.get("checkpoint_sha256", ""))
    if checkpoint_sha256 and sha and sha != checkpoint_sha256:
        warnings.insert(0, f"this evaluation is of another checkpoint (sha256 {sha[:12]}…), not this one")
    counts = data.get("class_counts") or {}
    binary = "class_names" not in data or len(data.get("class_names") or []) <= 2
    return {
        "ok": True,
        "path": str(path),
        "label": split_label(split, data.get("selection"), str(data.get("data", ""))),
        "model": str(data.get("model", "")),
        "data": str(data.get("data", "")),
        "evaluated_at": str(data.get("evaluated_at", "")),
        "summary": (
            f"{fmt(data.get('n_images'))} images of {fmt(data.get('n_patients'))} patients ("
            + ", ".join(f"{fmt(n)} {c}" for c, n in counts.items())
            + ")"
        ),
        "notes": notes,
        "warnings": warnings,
        "ci_text": (
            f"95 % CIs: Wilson for proportions, patient bootstrap (n={data.get('n_boot', '?')}) for the rest."
        ),
        "tables": _binary_tables(data) if binary else _multiclass_tables(data),
    }


def _inference_notes(settings: Mapping[str, Any]) -> list[str]:
    parts = ["test-time augmentation"] if settings.get("tta") else []
    if settings.get("mc_dropout_passes"):
        parts.append(f"MC-dropout ({settings['mc_dropout_passes']} passes)")
    if not parts:
        return []
    chosen = "" if settings.get("threshold_chosen_with_these_settings", True) else "; the threshold was not"
    return [f"measured with {' and '.join(parts)}{chosen}"]


def _estimate_text(estimate: Mapping[str, Any] | None) -> str:
    if not isinstance(estimate, Mapping) or estimate.get("value") is None:
        note = (estimate or {}).get("note") if isinstance(estimate, Mapping) else ""
        return f"n/a ({note})" if note else "n/a"
    return fmt_ci(estimate.get("value"), estimate.get("low"), estimate.get("high"))


def _binary_tables(data: Mapping[str, Any]) -> list[dict]:
    kinds = [k for k in ("checkpoint", "fixed_0.5") if k in data["metrics"]]
    heads = []
    for kind in kinds:
        t = data["metrics"][kind].get("threshold")
        heads.append(f"at the stored threshold {fmt(t, 4)}" if kind == "checkpoint" else "at 0.5")
    order = ("roc_auc", "sensitivity", "specificity", "accuracy", "balanced_accuracy", "ppv", "npv")
    order += tuple(n for n in METRIC_NAMES if n not in order)
    rows = []
    for name in order:
        cells = [_estimate_text(data["metrics"][k].get("estimates", {}).get(name)) for k in kinds]
        rows.append([METRIC_LABELS.get(name, name), *cells])
    return [table(["metric", *heads], rows)]


def _multiclass_tables(data: Mapping[str, Any]) -> list[dict]:
    m = data["metrics"]
    overall = [
        [MULTICLASS_LABELS.get(k, k), _estimate_text((m.get("overall") or {}).get(k))]
        for k in OVERALL_METRICS
    ]
    per_class = [
        [c, fmt((m.get("support") or {}).get(c))]
        + [_estimate_text(d.get(k)) for k in ("recall", "specificity", "precision", "auc_ovr")]
        for c, d in (m.get("per_class") or {}).items()
    ]
    return [
        table(["metric (argmax of the calibrated probabilities)", "value (95 % CI)"], overall),
        table(
            ["class", "images", "recall (sensitivity)", "specificity", "precision", "AUC (one-vs-rest)"],
            per_class,
        ),
    ]
