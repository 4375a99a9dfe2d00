"""The data-dependent sections of a model card, from a checkpoint's metadata (``training.model_card``).

Each function returns plain data for ``evaluation/model_card.md.j2``. Checkpoints differ in what they
record (binary or k-class, a trained run or an ensemble, older files without a split or operating
point, newer ones with several threshold rules), so every read is defensive: what is missing is said
in words, never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pneumocxr.evaluation import wilson_interval
from pneumocxr.evaluation.model_card import (
    MISSING,
    fmt,
    fmt_ci,
    hanley_mcneil_interval,
    table,
)
from pneumocxr.evaluation.model_card_inputs import SELECTION_WORDS
from pneumocxr.models import CheckpointMeta

CARVED_LABEL = "Validation — carved validation split, used for model selection: optimistic"
WIDE_ZOOM = 0.35  # the "fov" preset's zoom range (training/augment.py)
_RULE_WORDS = {
    "youden": "Youden's J: the centre (in logit space) of the interval of thresholds that maximise "
    "sensitivity + specificity − 1",
    "youden_edge": "Youden's J (sensitivity + specificity − 1): the highest threshold where it is maximal, "
    "placed on a validation score (the older rule)",
    "target_sensitivity": "the most specific threshold that keeps validation sensitivity at the target",
    "bootstrap_median": "the median of the Youden centre over patient-bootstrap resamples of validation",
    "fixed": "a fixed threshold",
}


def _split(meta: CheckpointMeta) -> dict[str, Any]:
    split = meta.extra.get("split")
    return dict(split) if isinstance(split, Mapping) else {}


def _counts(split: Mapping[str, Any], which: str, class_names: Sequence[str]) -> list[int] | None:
    """Images per class of ``which`` ("train"/"val"), in ``class_names`` order, or None."""
    for key in (f"{which}_class_counts", f"{which}_counts"):
        values = split.get(key)
        if isinstance(values, (list, tuple)) and len(values) == len(class_names):
            return [int(v) for v in values]
    return None


# ----------------------------------------------------------------------------- training data


def training_data(meta: CheckpointMeta, *, ensemble: bool) -> dict[str, Any]:
    split = _split(meta)
    names = list(split.get("class_names") or meta.class_names)
    train, val = _counts(split, "train", names), _counts(split, "val", names)
    patients = split.get("val_patients") or []
    fraction = split.get("val_fraction")
    rows = [
        [
            "Dataset the recipes are built for",
            "Kermany et al. 2018 pediatric chest X-rays (Guangzhou), Mendeley v2",
        ],
        ["Data read (recorded path)", split.get("source") or "not recorded"],
        ["Training images", fmt(sum(train)) if train else "not recorded"],
        ["Validation images", f"{fmt(sum(val))} of {fmt(len(patients))} patients" if val else "not recorded"],
    ]
    if fraction is not None:
        rows.append(
            [
                "Validation split",
                f"{float(fraction):.0%} of train/ by whole patients, stratified by class, "
                f"split_seed {split.get('split_seed', '?')}",
            ]
        )
    if split.get("val_patients_sha256"):
        rows.append(["Validation patient list (sha256)", split["val_patients_sha256"]])
    if split.get("limit_train_images"):
        rows.append(["Training subset", f"only {fmt(int(split['limit_train_images']))} images (a smoke run)"])
    counts = None
    if train or val:
        body = [
            [
                c,
                fmt(train[i]) if train else MISSING,
                fmt(val[i]) if val else MISSING,
                fmt((train[i] if train else 0) + (val[i] if val else 0)),
            ]
            for i, c in enumerate(names)
        ]
        counts = table(["class", "training", "validation (carved)", "total"], body)
    return {"rows": table(["field", "value"], rows), "counts": counts, "carving": _carving(split, ensemble)}


def _carving(split: Mapping[str, Any], ensemble: bool) -> list[str]:
    if not split:
        return ["The checkpoint records no split: which images trained and selected it cannot be verified."]
    lines = []
    if split.get("kind") == "cv-holdout":
        lines.append(
            "The members are cross-validation folds. The validation patients above were held out of every "
            "fold: no member trained or was selected on them."
        )
    elif split.get("kind") == "out-of-fold":
        lines.append(
            "The members are cross-validation folds; no patients were held out "
            f"({split.get('no_holdout', '')})."
        )
    else:
        lines.append(
            "The validation split was carved from the dataset's `train/` folder **by patient** (no child "
            "has films on both sides; patient ids come from the file names), stratified by class. It chose "
            "the best epoch, the temperature and the threshold, so its numbers are optimistic."
        )
    if ensemble and split.get("kind") != "cv-holdout":
        lines.append("The ensemble's threshold was chosen on its members' predictions of this split.")
    lines.append(
        "The dataset's own `val/` folder (16 images in the Kermany release) is too small to select on and "
        "was not used; `test/` was never read by training."
    )
    return lines


# ----------------------------------------------------------------------------- validation metrics


def _proportion(name: str, value: Any, n: int | None) -> list[str]:
    if value is None:
        return [name, "not recorded", MISSING]
    value = float(value)
    if not n:
        return [name, fmt_ci(value), "no CI: class counts not recorded"]
    low, high = wilson_interval(round(value * n), n)
    return [name, fmt_ci(value, low, high), f"Wilson, n = {n:,}"]


def _auc_row(name: str, auc: Any, n_pos: int | None, n_neg: int | None) -> list[str]:
    if auc is None:
        return [name, "not recorded", MISSING]
    if not (n_pos and n_neg):
        return [name, fmt_ci(float(auc)), "no CI: class counts not recorded"]
    low, high = hanley_mcneil_interval(float(auc), n_pos, n_neg)
    return [
        name,
        fmt_ci(float(auc), low, high),
        "Hanley–McNeil approximation (films as independent: too narrow)",
    ]


def validation_section(
    meta: CheckpointMeta, evaluations: Sequence[Mapping[str, Any]], *, ensemble: bool
) -> dict[str, Any]:
    """Validation metrics stored in the checkpoint, with the intervals its counts allow."""
    if ensemble:
        rows, label = _ensemble_validation(meta)
    elif len(meta.class_names) > 2:
        rows, label = _multiclass_validation(meta), CARVED_LABEL
    else:
        rows, label = _binary_validation(meta), CARVED_LABEL
    notes = [
        "These numbers come from the images that chose this model (epoch, temperature, threshold): they "
        "overstate performance on new patients, and much more so on other hospitals (see Known limitations)."
    ]
    rebuilt = any(e.get("ok") and any(w in e.get("label", "") for w in SELECTION_WORDS) for e in evaluations)
    if rebuilt:
        notes.append("Patient-bootstrap intervals for this split: see the validation evaluation below.")
    else:
        notes.append(
            "The checkpoint stores no per-image scores, so these intervals are approximate. Evaluating "
            "`--split validation` rebuilds the split exactly and gives patient-bootstrap intervals (the "
            "commands under Stress-suite results do it); pass its folder to the card with `--evaluation`."
        )
    if not rows:
        return {
            "label": label,
            "table": None,
            "notes": ["The checkpoint records no validation metrics.", *notes[1:]],
        }
    return {"label": label, "table": table(["metric", "value (95 % CI)", "interval"], rows), "notes": notes}


def _binary_validation(meta: CheckpointMeta) -> list[list[str]]:
    m, op = meta.metrics, meta.extra.get("operating_point") or {}
    counts = _counts(_split(meta), "val", meta.class_names)
    n_neg, n_pos = (counts[0], counts[1]) if counts else (None, None)
    sens, spec = _rule_value(op, "sensitivity"), _rule_value(op, "specificity")
    rows = [_auc_row("ROC AUC", m.get("val_auc"), n_pos, n_neg)]
    t = f"{meta.threshold:.4f}"
    rows.append(_proportion(f"Sensitivity at the stored threshold {t}", sens, n_pos))
    rows.append(_proportion(f"Specificity at the stored threshold {t}", spec, n_neg))
    if sens is not None and spec is not None and counts:
        accuracy = (float(sens) * n_pos + float(spec) * n_neg) / (n_pos + n_neg)
        rows.append(_proportion(f"Accuracy at the stored threshold {t}", accuracy, n_pos + n_neg))
    if m.get("val_loss") is not None:
        rows.append(["Validation loss (unweighted BCE)", fmt(float(m["val_loss"]), 4), MISSING])
    return rows if any(r[1] != "not recorded" for r in rows) else []


def _multiclass_validation(meta: CheckpointMeta) -> list[list[str]]:
    m, op = meta.metrics, meta.extra.get("operating_point") or {}
    counts = _counts(_split(meta), "val", meta.class_names)
    total = sum(counts) if counts else None
    rows = []
    if m.get("val_auc") is not None:
        rows.append(
            ["Macro ROC AUC (one-vs-rest)", fmt_ci(float(m["val_auc"])), "no CI without per-image scores"]
        )
    rows.append(_proportion("Accuracy (argmax)", op.get("accuracy", m.get("val_acc")), total))
    if op.get("balanced_accuracy") is not None:
        rows.append(["Balanced accuracy (mean recall)", fmt_ci(float(op["balanced_accuracy"])), MISSING])
    recall = op.get("recall") or {}
    for i, name in enumerate(meta.class_names):
        rows.append(_proportion(f"Recall of {name}", recall.get(name), counts[i] if counts else None))
    if m.get("val_loss") is not None:
        rows.append(["Validation loss (unweighted cross-entropy)", fmt(float(m["val_loss"]), 4), MISSING])
    return rows if any(r[1] != "not recorded" for r in rows) else []


def _ensemble_validation(meta: CheckpointMeta) -> tuple[list[list[str]], str]:
    m = meta.metrics
    choice = meta.extra.get("threshold_choice") or {}
    labels = (meta.extra.get("conformal") or {}).get("labels")
    if isinstance(labels, list) and labels:
        n_pos = sum(1 for v in labels if int(v) == 1)
        n_neg = len(labels) - n_pos
    else:
        counts = _counts(_split(meta), "val", meta.class_names)
        n_neg, n_pos = (counts[0], counts[1]) if counts else (None, None)
    chosen = choice.get("chosen_on") or "the members' validation predictions"
    label = f"Validation — {chosen}: the same images chose the ensemble's threshold: optimistic"
    if len(meta.class_names) > 2 or not m:
        return [], label
    t = f"{meta.threshold:.4f}"
    rows = [
        _auc_row("ROC AUC", m.get("roc_auc"), n_pos, n_neg),
        _proportion(f"Sensitivity at the stored threshold {t}", m.get("sensitivity"), n_pos),
        _proportion(f"Specificity at the stored threshold {t}", m.get("specificity"), n_neg),
        _proportion(
            f"Accuracy at the stored threshold {t}", m.get("accuracy"), (n_pos or 0) + (n_neg or 0) or None
        ),
    ]
    for key, name in (("brier", "Brier score"), ("ece", "Expected calibration error")):
        if m.get(key) is not None:
            rows.append([name, fmt(float(m[key]), 4), MISSING])
    return rows, label


# ----------------------------------------------------------------------------- operating point


def _rules(op: Mapping[str, Any]) -> dict[str, Any]:
    rules = op.get("rules") or op.get("threshold_rules") or {}
    if isinstance(rules, list):
        rules = {
            str(r.get("rule") or r.get("method") or r.get("name") or i): r
            for i, r in enumerate(rules)
            if isinstance(r, Mapping)
        }
    return dict(rules) if isinstance(rules, Mapping) else {}


def _rule_name(op: Mapping[str, Any]) -> str | None:
    """The rule that chose the stored threshold. A checkpoint written before every rule was stored
    records method "youden" with its threshold ON a validation score: today's ``youden_edge`` (as
    ``inference.operating_rules.own_rule`` reads it; that module is a sibling layer)."""
    if op.get("threshold_rule"):
        return str(op["threshold_rule"])
    name = op.get("rule") or op.get("method")
    if name == "youden" and "rules" not in op and "margin_logit" not in op:
        return "youden_edge"
    return str(name) if name else None


def _rule_value(op: Mapping[str, Any], key: str) -> Any:
    """``key`` (sensitivity …) of the stored rule: top-level, else from the rules mapping."""
    if op.get(key) is not None:
        return op[key]
    chosen = _rules(op).get(_rule_name(op) or "")
    return chosen.get(key) if isinstance(chosen, Mapping) else None


def _rule_text(name: str | None, op: Mapping[str, Any]) -> str:
    if not name:
        return "not recorded"
    words = _RULE_WORDS.get(name, name)
    target = op.get("target_sensitivity")
    return f"{name}: {words}" + (
        f" (target {float(target):.2f})" if target is not None and name == "target_sensitivity" else ""
    )


def operating_point(meta: CheckpointMeta, *, ensemble: bool) -> dict[str, Any]:
    op = dict(meta.extra.get("threshold_choice" if ensemble else "operating_point") or {})
    notes: list[str] = []
    if len(meta.class_names) > 2:
        rows = [
            ["Decision", "the most probable class (argmax); no threshold"],
            ["Temperature", f"{meta.temperature:.4g} (softmax(logits / T), fitted by validation log-loss)"],
            ["Chosen on", op.get("chosen_on", "not recorded")],
        ]
        return {"rows": table(["field", "value"], rows), "rules": None, "notes": notes}
    name = _rule_name(op)
    sens, spec = _rule_value(op, "sensitivity"), _rule_value(op, "specificity")
    positive = meta.class_names[1]
    rows = [
        ["Threshold", f"{meta.threshold:.4f}: {positive} when the calibrated probability is ≥ it"],
        ["Rule", _rule_text(name, op)],
        ["Chosen on", op.get("chosen_on", "not recorded")],
        ["Validation sensitivity at it", fmt(sens) if sens is not None else "not recorded"],
        ["Validation specificity at it", fmt(spec) if spec is not None else "not recorded"],
    ]
    if sens is not None and spec is not None:
        rows.append(["Youden's J", fmt(float(sens) + float(spec) - 1.0)])
    if ensemble:
        rows.append(
            ["Temperature", "1 for the mean; each member divides its logits by its own temperature first"]
        )
        if meta.extra.get("tta"):
            notes.append("Predictions use test-time augmentation by default (stored in the ensemble file).")
        conformal = meta.extra.get("conformal") or {}
        if conformal.get("alpha") is not None:
            notes.append(
                f"Conformal prediction sets ({conformal.get('method', '?')}, alpha {conformal['alpha']}) are "
                f"calibrated on {conformal.get('source', '?')} predictions."
            )
    else:
        rows.append(
            ["Temperature", f"{meta.temperature:.4g} (sigmoid(logit / T), fitted by validation log-loss)"]
        )
    if abs(meta.threshold - 0.5) > 1e-9:
        notes.append("`evaluate` reports every metric at this threshold and at 0.5.")
    rules = _rules(op)
    if not rules:
        return {"rows": table(["field", "value"], rows), "rules": None, "notes": notes}
    body = []
    for rule, value in rules.items():
        v = value if isinstance(value, Mapping) else {"threshold": value}
        stored = v.get("threshold") is not None and abs(float(v["threshold"]) - meta.threshold) < 1e-9
        body.append(
            [
                rule,
                fmt(_number(v.get("threshold")), 4),
                fmt(_number(v.get("sensitivity"))),
                fmt(_number(v.get("specificity"))),
                _rule_detail(v),
                "**yes**" if rule == name or (name is None and stored) else "no",
            ]
        )
    header = ["rule", "threshold", "val. sensitivity", "val. specificity", "detail", "the stored one"]
    return {"rows": table(["field", "value"], rows), "rules": table(header, body), "notes": notes}


def _rule_detail(rule: Mapping[str, Any]) -> str:
    """The target of target_sensitivity, the resampled range of bootstrap_median, else nothing."""
    target, low, high = (_number(rule.get(k)) for k in ("target_sensitivity", "range_low", "range_high"))
    if target is not None:
        return f"target sensitivity {target:.2f}"
    if low is not None and high is not None and rule.get("n_boot"):
        return f"95 % of {rule['n_boot']} resampled thresholds in {low:.4f}–{high:.4f}"
    if low is not None and high is not None:
        return f"optimal interval {low:.4f}–{high:.4f}"
    return ""


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


# ----------------------------------------------------------------------------- limitations


def limitations(meta: CheckpointMeta, ranges: Mapping[str, Any] | None, *, has_external: bool) -> list[str]:
    """What is known to limit THIS checkpoint, from what it records (the static evidence follows)."""
    lines = []
    if not has_external:
        lines.append(
            "No test or external evaluation is attached to this card: every number in it comes from the "
            "split that chose the model."
        )
    split = _split(meta)
    if not split:
        lines.append(
            "The checkpoint records no training split: whether the evaluated images chose it cannot be "
            "verified."
        )
    if split.get("limit_train_images"):
        lines.append(
            f"Trained on only {int(split['limit_train_images']):,} images (a smoke run): do not report "
            "its numbers."
        )
    if ranges is not None and float(ranges.get("zoom") or 0.0) < WIDE_ZOOM:
        lines.append(
            f"Trained with zoom ±{float(ranges.get('zoom') or 0):g}, narrower than the `fov` preset's "
            f"±{WIDE_ZOOM:g}. The frame-filling failure below was seen with ±0.1; widening it to ±0.35 "
            "raised test AUC 0.951 → 0.982 and specificity 0.47 → 0.75 in one comparison (one seed each)."
        )
    if ranges is not None and ranges.get("hflip"):
        lines.append(
            "Trained with horizontal flips: the model was taught to ignore left and right (laterality)."
        )
    if len(meta.class_names) > 2:
        lines.append(
            "Three-class task: expect most errors between BACTERIAL and VIRAL; the cause comes from the "
            "original study's file names, not from microbiology recorded with the images."
        )
    lines.append(
        "The model scores any image it is given: out-of-scope inputs (adults, lateral views, other "
        "modalities) are not refused by the model itself."
    )
    return lines
