"""The results sections of the report: metrics with CIs per split, comparison, calibration, Grad-CAM.

Split from ``report`` only to keep modules small; the page is assembled there.
"""

from __future__ import annotations

from pathlib import Path

from pneumocxr.evaluation._report_html import (
    SELECTION_LABEL,
    TEST_LABEL,
    Html,
    Tree,
    callout,
    column_title,
    figures,
    fmt,
    fmt_ci,
    fmt_p,
    join,
    not_run,
    num,
    table,
    tag,
)
from pneumocxr.evaluation.metrics import METRIC_LABELS, METRIC_NAMES

EVAL_FIGURES = (
    ("roc", "ROC with 95% CI band"),
    ("precision_recall", "Precision–recall"),
    ("confusion_matrix", "Confusion matrix at the stored threshold"),
    ("probability_histogram", "Calibrated probability per true class"),
)
TABLE_ORDER = (  # clinical reading order: discrimination, then the operating point, then calibration
    "roc_auc",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "accuracy",
    "balanced_accuracy",
    "f1",
    "mcc",
    "pr_auc",
    "brier",
    "ece",
)
THRESHOLD_FREE = frozenset({"roc_auc", "pr_auc", "brier", "ece"})  # the same at every threshold
PAIRED_NOTE = (
    "DeLong (AUC) and McNemar (accuracy) are paired tests that treat images as independent; with several "
    "images per patient they are somewhat optimistic: the patient-bootstrap CIs are the honest companion."
)
HONEST_NOTE = (
    "How to read these numbers: the decision threshold (Youden's J) and the temperature were chosen on a "
    "patient-level validation split carved from train, never on test; the test split was evaluated once, "
    "after every choice was made. Numbers on a split used for selection are optimistic. 95% CIs: Wilson "
    "for proportions, patient-level bootstrap for the others. Metrics at 0.5 are shown for reference only."
)


def eval_title(tree: Tree, ev: dict) -> str:
    """``model — split label`` of one evaluation folder."""
    split = str(ev.get("split", "?"))
    return f"{ev.get('model', ev['_folder'].name)} — {tree.split_label(split, ev.get('selection'))}"


def skipped_models(tree: Tree) -> dict[str, dict]:
    """Models the pipeline did NOT train (``status: skipped`` in run_summary.json): name → record."""
    summary, _ = tree.json(tree.root / "results" / "run_summary.json")
    models = summary.get("models") if isinstance(summary, dict) else None
    if not isinstance(models, dict):
        return {}
    return {
        str(name): record
        for name, record in models.items()
        if isinstance(record, dict) and record.get("status") == "skipped"
    }


def skipped_notice(tree: Tree) -> Html:
    """A warning box naming each skipped model, why, and how to train it; empty when none was skipped."""
    skipped = skipped_models(tree)
    if not skipped:
        return Html()
    lines = [
        f"{len(skipped)} model(s) of this run were NOT trained and are missing from every table and "
        f"figure below: {', '.join(skipped)}. Nothing was trained from random weights in their place."
    ]
    for name, record in skipped.items():
        fix = f" To train it: {record['fix']}" if record.get("fix") else ""
        lines.append(f"{name}: {record.get('reason', 'no reason recorded')}.{fix}")
    return callout(*lines, warn=True)


# ----------------------------------------------------------------------------- metrics


def summary_section(tree: Tree) -> Html:
    """The headline: every model on the held-out test split at its stored threshold, and how to read it."""
    return join([skipped_notice(tree), _test_summary(tree)])


def _test_summary(tree: Tree) -> Html:
    rows, why = tree.csv(tree.root / "results" / "performance_metrics.csv")
    test = [
        r
        for r in rows or []
        if r.get("threshold_kind") == "checkpoint"
        and tree.split_label(r.get("split", "?"), _selection_for(tree, r)) == TEST_LABEL
    ]
    if not test:
        reason = why or "performance_metrics.csv has no rows for a held-out test split"
        return join([not_run("held-out test evaluation", reason), callout(HONEST_NOTE)])
    metrics = ("roc_auc", "sensitivity", "specificity", "ppv", "npv")
    head = ["Model", "Images (patients)", "Threshold", *(METRIC_LABELS[m] for m in metrics)]
    body = [
        [r.get("model", "?"), f"{r.get('n', '?')} ({r.get('n_patients', '?')})", fmt(r.get("threshold"))]
        + [fmt_ci(r.get(m), r.get(f"{m}_lo"), r.get(f"{m}_hi")) for m in metrics]
        for r in sorted(test, key=_model_key)
    ]
    caption = f"{TEST_LABEL}; each model at its stored threshold; 95% CIs"
    return join([table(head, body, caption=caption), callout(HONEST_NOTE)])


def performance_section(tree: Tree) -> Html:
    rows, why = tree.csv(tree.root / "results" / "performance_metrics.csv")
    parts: list[object] = []
    for ev in tree.evaluations:
        for warning in (ev.get("selection") or {}).get("warnings") or []:
            parts.append(callout(f"{ev.get('model')}: {warning}", warn=True))
    parts += _metric_tables(tree, rows) if rows else [not_run("metric table", why or "no rows")]
    parts += [tag("h3", SELECTION_LABEL.capitalize()), _selection_table(tree)]
    for ev in tree.evaluations:
        plots = ev["_folder"] / "plots"
        parts.append(tag("h3", f"Figures: {eval_title(tree, ev)}"))
        parts.append(
            figures([tree.figure(plots / f"{stem}.png", cap) for stem, cap in EVAL_FIGURES], columns=4)
        )
    return join(parts)


def _metric_tables(tree: Tree, rows: list[dict[str, str]]) -> list[Html]:
    """Per split role, one table per threshold kind: metrics down, models across, values with 95% CIs."""
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(tree.split_label(row.get("split", "?"), _selection_for(tree, row)), []).append(row)
    out = []
    for label in sorted(groups, key=lambda name: (name != TEST_LABEL, name)):
        out.append(tag("h3", f"Split: {label}"))
        kinds = sorted({r.get("threshold_kind", "") for r in groups[label]}, key=lambda k: k != "checkpoint")
        for kind in kinds:
            cols = sorted((r for r in groups[label] if r.get("threshold_kind", "") == kind), key=_model_key)
            out.append(_metric_table(cols, kind, several_data=len({r.get("data") for r in cols}) > 1))
        undefined = [
            f"{r.get('model')} at {r.get('threshold_kind')}: {r['undefined']}"
            for r in groups[label]
            if r.get("undefined")
        ]
        if undefined:
            out.append(callout("Undefined on these images (shown as n/a):", *undefined))
    return out


def _model_key(row: dict[str, str]) -> tuple[str, str]:
    return row.get("model", ""), row.get("data", "")


def _metric_table(cols: list[dict[str, str]], kind: str, *, several_data: bool) -> Html:
    stored = kind == "checkpoint"
    metrics = [m for m in TABLE_ORDER if m in METRIC_NAMES and (stored or m not in THRESHOLD_FREE)]
    metrics += [m for m in METRIC_NAMES if m not in TABLE_ORDER]
    head = ["Metric"] + [_column_title(r, several_data) for r in cols]
    body = [["Images (patients)"] + [f"{r.get('n', '?')} ({r.get('n_patients', '?')})" for r in cols]]
    body.append(
        ["TP / FP / TN / FN"] + [" / ".join(r.get(k, "?") for k in ("tp", "fp", "tn", "fn")) for r in cols]
    )
    for metric in metrics:
        body.append(
            [METRIC_LABELS[metric]]
            + [fmt_ci(r.get(metric), r.get(f"{metric}_lo"), r.get(f"{metric}_hi")) for r in cols]
        )
    what = (
        "At each model's stored threshold (chosen on validation)"
        if stored
        else f"At {kind.replace('fixed_', 'the fixed threshold ')} (reference; threshold-free rows as above)"
    )
    return table(head, body, caption=f"{what}. 95% CI: {cols[0].get('ci_method', '?')}")


def _selection_for(tree: Tree, row: dict[str, str]) -> dict | None:
    key = (row.get("checkpoint"), row.get("data"), row.get("split"))
    for ev in tree.evaluations:
        if (str(ev.get("checkpoint")), str(ev.get("data")), str(ev.get("split"))) == key:
            return ev.get("selection") if isinstance(ev.get("selection"), dict) else None
    return None


def _column_title(row: dict[str, str], with_data: bool) -> Html:
    data = f" · {Path(row.get('data', '')).name}" if with_data else ""
    sub = f"threshold {fmt(row.get('threshold'))}"
    return column_title(row.get("model", "?"), data, sub)


def _selection_table(tree: Tree) -> Html:
    seen, rows = set(), []
    for ev in tree.evaluations:
        val = (ev.get("checkpoint_meta") or {}).get("validation_metrics") or {}
        if not val or ev.get("checkpoint_sha256") in seen:
            continue
        seen.add(ev.get("checkpoint_sha256"))
        keys = ("val_auc", "val_acc", "val_sensitivity", "val_specificity", "val_loss")
        rows.append([ev.get("model", "?"), *(fmt(val.get(k)) for k in keys)])
    if not rows:
        return not_run("validation metrics", "no evaluation records its checkpoint's validation metrics")
    caption = (
        "Recorded in each checkpoint by training: a fresh pass over the selected weights, raw probability "
        "cut at 0.5, no CIs. These images chose the epoch, threshold and temperature: optimistic."
    )
    head = ["Model", "ROC AUC", "Accuracy", "Sensitivity", "Specificity", "Loss"]
    return table(head, rows, caption=caption)


# ----------------------------------------------------------------------------- comparison and the rest


def comparison_section(tree: Tree) -> Html:
    results = tree.root / "results"
    rows, why = tree.csv(results / "comparison.csv")
    if not rows:
        why = why or "comparison.csv has no rows"
        if skipped_models(tree):  # the likely cause: fewer than two models left to compare
            why += f"; not trained in this run: {', '.join(skipped_models(tree))} (see Summary)"
        return not_run("model comparison", why)
    ref = rows[0].get("model", "?")
    evs = {str(ev.get("model")): ev for ev in tree.evaluations}
    first = evs.get(ref)
    split = (
        tree.split_label(str(first.get("split")), first.get("selection")) if first else "split not recorded"
    )
    metrics = ("roc_auc", "sensitivity", "specificity")
    head = ["Model", "Params", "Images/s", *(METRIC_LABELS[m] for m in metrics)]
    head += [f"p AUC vs {ref} (DeLong)", f"p accuracy vs {ref} (McNemar)"]
    body = [
        [r.get("model", "?"), f"{num(r.get('parameters')) / 1e6:.2f} M", fmt(r.get("images_per_s"), 1)]
        + [fmt_ci(r.get(m), r.get(f"{m}_lo"), r.get(f"{m}_hi")) for m in metrics]
        + [fmt_p(r.get("delong_p_vs_reference")), fmt_p(r.get("mcnemar_p_vs_reference"))]
        for r in rows
    ]
    device = f"{rows[0].get('speed_device', '?')}, batch {rows[0].get('speed_batch_size', '?')}"
    parts: list[object] = [
        tag("p", f"Split: {split}. Metrics at each model's stored threshold; p-values against {ref}."),
        table(head, body, caption=f"speed: model step from preprocessed pixels on {device}"),
    ]
    pairs, pair_why = tree.csv(results / "comparison_pairwise.csv")
    if pairs:
        head = ["Model A", "Model B", "AUC A − B (95% CI)", "p (DeLong)", "Discordant b / c", "p (McNemar)"]
        body = [
            [
                p.get("model_a"),
                p.get("model_b"),
                fmt_ci(p.get("auc_difference"), p.get("auc_diff_ci_low"), p.get("auc_diff_ci_high")),
                fmt_p(p.get("delong_p")),
                f"{p.get('mcnemar_b')} / {p.get('mcnemar_c')}",
                f"{fmt_p(p.get('mcnemar_p'))} ({p.get('mcnemar_method', '')})",
            ]
            for p in pairs
        ]
        parts += [tag("h3", "Every pair"), table(head, body, labels=2)]
    else:
        parts.append(not_run("pairwise tests", pair_why or "comparison_pairwise.csv has no rows"))
    parts.append(tag("p", PAIRED_NOTE, "muted"))
    plots = tree.root / "plots"
    parts.append(
        figures(
            [
                tree.figure(plots / "roc_comparison.png", "ROC curves of every model on the same images"),
                tree.figure(
                    plots / "confusion_matrix_comparison.png", "Confusion matrices at each stored threshold"
                ),
            ]
        )
    )
    return join(parts)


def calibration_section(tree: Tree) -> Html:
    if not tree.evaluations:
        return not_run("calibration", f"no evaluation folders under {tree.rel(tree.root / 'evaluation')}")
    rows, figs = [], []
    for ev in tree.evaluations:
        before = ev.get("uncalibrated") or {}
        after = ((ev.get("metrics") or {}).get("checkpoint") or {}).get("estimates") or {}
        ece, brier = after.get("ece") or {}, after.get("brier") or {}
        rows.append(
            [
                eval_title(tree, ev),
                fmt(ev.get("temperature")),
                fmt(before.get("ece")),
                fmt_ci(ece.get("value"), ece.get("low"), ece.get("high")),
                fmt(before.get("brier")),
                fmt_ci(brier.get("value"), brier.get("low"), brier.get("high")),
            ]
        )
        figs.append(
            tree.figure(ev["_folder"] / "plots" / "reliability.png", f"Reliability: {eval_title(tree, ev)}")
        )
    head = [
        "Model — split",
        "Temperature",
        "ECE before",
        "ECE after (95% CI)",
        "Brier before",
        "Brier after (95% CI)",
    ]
    note = (
        "Temperature scaling was fitted on the validation split (negative log-likelihood); 'before' is the "
        "raw sigmoid, 'after' is sigmoid(logit / T), the probability every threshold metric above uses. "
        "ECE: equal-width bins of P(PNEUMONIA)."
    )
    return join([tag("p", note, "muted"), table(head, rows), figures(figs, columns=3)])


def gradcam_section(tree: Tree) -> Html:
    png = tree.root / "plots" / "gradcam_visualizations.png"
    info, _ = tree.json(png.with_suffix(".json"))
    caption = "Where the model looks: most confident true/false positives and negatives"
    if isinstance(info, dict):
        cases = info.get("cases") or []
        caption += f" ({info.get('method', '?')}, threshold {fmt(info.get('threshold'))}, {len(cases)} cases)"
    if not png.is_file():
        return not_run("Grad-CAM", f"{tree.rel(png)} not found")
    note = (
        "The maps show which pixels drove the score, not where the pathology is; read confident errors first."
    )
    return join([figures([tree.figure(png, caption)], columns=1), tag("p", note, "muted")])
