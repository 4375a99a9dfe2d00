"""``build_report``: one self-contained HTML page from a pipeline output folder.

The page is a Jinja2 template with autoescape (report.html.j2; its building blocks are the macros
of report_blocks.html.j2), so nothing is escaped by hand. The report reads FILES only (JSON, CSV,
PNG, YAML as text) written by the data check, EDA, training, evaluate and compare steps, so it can
be rebuilt from any output tree on any machine, without models or data. Every figure is embedded
as a base64 PNG and the stylesheet is inline: the page works offline, can be mailed as one file
and prints cleanly.

Each section is tolerant by design: a step that did not run (or wrote something unreadable)
renders as a visible "not run" note with the reason, never as a crash and never as silence.
Which split a number comes from is always stated, with how honest it is (``Tree.split_label``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from pneumocxr.errors import ConfigError
from pneumocxr.evaluation import _report_results as results
from pneumocxr.evaluation._report_html import (
    Html,
    Tree,
    callout,
    data_block,
    figures,
    fmt,
    jinja_environment,
    join,
    not_run,
    num,
    pre,
    table,
    tag,
)
from pneumocxr.evaluation._report_stress import stress_section
from pneumocxr.labels import CLASS_NAMES

logger = logging.getLogger(__name__)

PAGE = "report.html.j2"  # the page template (package data), rendered with autoescape
MAX_LISTED = 20  # unreadable files listed in the page (the JSON has all of them)
PACKAGES = ("pneumocxr", "torch", "torchvision", "lightning", "timm", "numpy", "scikit-learn", "scipy")
EDA_FIGURES = (
    ("dataset_distribution", "Images per split and class (bacterial / viral within PNEUMONIA)"),
    ("image_sizes", "Original image sizes (from file headers)"),
    ("intensity_histograms", "Pixel intensity per class, at model input size"),
    ("mean_images", "Mean image per class"),
    ("sample_grid", "Random sample per class (seeded)"),
)


def load_tree(out_dir: Path) -> Tree:
    """The output folder with every evaluation's metrics.json and the pipeline's split labels."""
    tree = Tree(out_dir.resolve())
    for folder in tree.folders("evaluation"):
        data, why = tree.json(folder / "metrics.json")
        if isinstance(data, dict):
            tree.evaluations.append({**data, "_folder": folder})
        else:
            logger.warning("report: skipping %s (%s)", folder, why or "not a JSON object")
    summary, _ = tree.json(tree.root / "results" / "run_summary.json")
    labels = summary.get("split_labels") if isinstance(summary, dict) else None
    if isinstance(labels, dict):
        tree.split_labels = {str(k): str(v) for k, v in labels.items()}
    return tree


# ----------------------------------------------------------------------------- data


def _data_section(tree: Tree) -> Html:
    results = tree.root / "results"
    check, why = tree.json(results / "data_check.json")
    eda, eda_why = tree.json(results / "eda_summary.json")
    parts: list[object] = []
    if isinstance(check, dict):
        parts += [_counts_table(check, "data check"), _findings(check)]
    else:
        parts.append(not_run("data check", why or "data_check.json is not a JSON object"))
        if isinstance(eda, dict):
            parts.append(_counts_table(eda, "EDA summary"))
    parts.append(tag("h3", "Exploratory analysis"))
    if not isinstance(eda, dict):
        return join([*parts, not_run("EDA", eda_why or "eda_summary.json is not a JSON object")])
    sizes, intensity = eda.get("sizes") or {}, eda.get("intensity") or {}
    if sizes:
        parts.append(
            tag(
                "p",
                f"Original sizes of {sizes.get('n', '?')} images (from headers): width "
                f"{fmt(sizes.get('width_min'), 0)}–{fmt(sizes.get('width_max'), 0)} px (median "
                f"{fmt(sizes.get('width_median'), 0)}), height {fmt(sizes.get('height_min'), 0)}–"
                f"{fmt(sizes.get('height_max'), 0)} px (median {fmt(sizes.get('height_median'), 0)}).",
            )
        )
    rows = [(c, v.get("images", ""), fmt(v.get("mean")), fmt(v.get("std"))) for c, v in intensity.items()]
    caption = f"pixel values in [0, 1] at {eda.get('image_size', '?')} px"
    parts.append(table(["Class", "Images", "Mean intensity", "SD"], rows, caption=caption))
    plots = tree.root / "plots"
    parts.append(figures([tree.figure(plots / f"{stem}.png", cap) for stem, cap in EDA_FIGURES], columns=2))
    return join(parts)


def _counts_table(report: dict[str, Any], source: str) -> Html:
    counts: dict[str, dict[str, int]] = report.get("counts") or {}
    subs: dict[str, dict[str, int]] = report.get("sublabel_counts") or {}
    classes = list(dict.fromkeys([*CLASS_NAMES, *(c for row in counts.values() for c in row)]))
    kinds = list(dict.fromkeys(k for row in subs.values() for k in row if k != "normal"))
    head = ["Split", *classes, *(f"of which {k}" for k in kinds), "Total"]
    rows = []
    for split, row in counts.items():
        sub = subs.get(split, {})
        rows.append(
            [split, *(row.get(c, 0) for c in classes), *(sub.get(k, 0) for k in kinds), sum(row.values())]
        )
    total = ["all", *(sum(int(r[i]) for r in rows) for i in range(1, len(head)))]
    caption = f"{report.get('n_images', '?')} images in {report.get('root', '?')} (from the {source})"
    return table(head, [*rows, total] if rows else [], caption=caption)


def _findings(check: dict[str, Any]) -> Html:
    exact, near = check.get("exact_duplicates") or {}, check.get("near_duplicates") or {}
    shared = check.get("shared_patients") or {}
    unreadable = check.get("unreadable") or []
    head = ["Check", "Groups", "Files", "Within one split", "Across splits (leakage)"]
    rows = [
        (
            "Exact duplicates (sha256 of bytes)",
            *(exact.get(k, "–") for k in ("n_groups", "n_files", "within_split", "across_splits")),
        ),
        (
            f"Near duplicates ({near.get('method', 'perceptual hash')})",
            *(near.get(k, "–") for k in ("n_groups", "n_files", "within_split", "across_splits")),
        ),
    ]
    facts = [
        ("Unreadable files", len(unreadable)),
        ("Duplicate groups with conflicting labels", check.get("label_conflicts", "–")),
        ("Patient ids in more than one split", shared.get("n_patients", "–")),
        ("… of which with images duplicated across splits", shared.get("with_duplicated_images", "–")),
    ]
    parts: list[object] = [tag("h3", "Data quality"), table(head, rows), table(["Check", "Count"], facts)]
    leaking = num(exact.get("across_splits")) + num(near.get("across_splits"))
    if unreadable or leaking > 0:
        parts.append(
            callout(
                f"{len(unreadable)} file(s) cannot be decoded and {leaking:.0f} duplicate group(s) span "
                "splits (leakage): numbers on the affected splits are suspect until this is resolved.",
                warn=True,
            )
        )
    if shared.get("note"):
        parts.append(tag("p", f"Note on shared patient ids: {shared['note']}.", "muted"))
    if unreadable:
        listed = [
            (u.get("path", "?"), u.get("split", ""), u.get("label", ""), u.get("reason", ""))
            for u in unreadable
        ]
        caption = f"first {min(len(listed), MAX_LISTED)} of {len(listed)} (all in results/data_check.json)"
        parts.append(
            table(["File", "Split", "Class", "Reason"], listed[:MAX_LISTED], labels=4, caption=caption)
        )
    return join(parts)


# ----------------------------------------------------------------------------- training


def _auc_or_minus_one(row: dict[str, str]) -> float:
    auc = num(row.get("val_auc"))
    return -1.0 if math.isnan(auc) else auc


def _training_section(tree: Tree) -> Html:
    marks = ("history.csv", "config.yaml", "training_curves.png", "best.pt")
    runs = [f for f in tree.folders("runs") if any((f / m).exists() for m in marks)]
    if not runs:
        return not_run("training", f"no run folders under {tree.rel(tree.root / 'runs')}")
    rows, notes, figs = [], [], []
    for run in runs:
        history, why = tree.csv(run / "history.csv")
        if not history:
            notes.append(not_run(f"training history of {run.name}", why or "history.csv has no epochs"))
            history = []
        best = max(history, key=_auc_or_minus_one, default={})
        last = history[-1] if history else {}
        phases = sorted({r.get("phase", "1") for r in history})
        rows.append(
            [
                run.name,
                len(history),
                ", ".join(phases) or "–",
                fmt(best.get("val_auc")),
                best.get("epoch", "–"),
                fmt(last.get("train_loss")),
                fmt(last.get("val_loss")),
            ]
        )
        figs.append(
            tree.figure(run / "training_curves.png", f"{run.name}: loss and validation AUC per epoch")
        )
    head = ["Model", "Epochs", "Phases", "Best val AUC", "at epoch", "Last train loss", "Last val loss"]
    note = (
        "Validation here is the patient-level split carved from train: it chose the best epoch, so its AUC "
        "is optimistic. Phase 2 (if any) is fine-tuning of the last block."
    )
    return join([tag("p", note, "muted"), table(head, rows), *notes, figures(figs)])


# ----------------------------------------------------------------------------- provenance


def _provenance_section(tree: Tree) -> Html:
    summary, why = tree.json(tree.root / "results" / "run_summary.json")
    parts: list[object] = [tag("h3", "Pipeline run")]
    if isinstance(summary, dict):
        flat = {k: v for k, v in summary.items() if v is None or isinstance(v, (str, int, float, bool))}
        if flat:
            parts.append(data_block(flat))
        for key, value in summary.items():
            if key not in flat:
                parts += [tag("h4", str(key).replace("_", " ").capitalize()), data_block(value)]
    else:
        parts.append(not_run("run summary", why or "run_summary.json is not a JSON object"))
    parts += [tag("h3", "Resolved training configs"), _configs(tree)]
    parts += [tag("h3", "Checkpoints evaluated"), _checkpoint_table(tree)]
    env = environment()
    parts += [
        tag("h3", "Environment that built this report"),
        table(["Component", "Version"], env.items(), labels=2),
    ]
    return join(parts)


def _configs(tree: Tree) -> Html:
    """Each run's config.yaml verbatim (escaped), side by side."""
    blocks = []
    for run in (r for r in tree.folders("runs") if (r / "config.yaml").exists()):
        path = run / "config.yaml"
        try:
            blocks.append(tag("div", join([tag("p", tree.rel(path), "tcap"), pre(path.read_text("utf-8"))])))
        except (OSError, UnicodeDecodeError) as exc:
            blocks.append(not_run(f"config of {run.name}", f"{tree.rel(path)} is unreadable ({exc})"))
    if not blocks:
        return not_run("training configs", f"no runs/*/config.yaml under {tree.root}")
    return figures(blocks, columns=2)


def _checkpoint_table(tree: Tree) -> Html:
    if not tree.evaluations:
        return not_run("checkpoint provenance", "no evaluation folders")
    metas = [(ev, (ev.get("checkpoint_meta") or {})) for ev in tree.evaluations]
    packages = list(dict.fromkeys(k for _, m in metas for k in (m.get("versions") or {})))
    head = ["Evaluation", "Checkpoint", "sha256", "Created", "Threshold", "Temperature", *packages]
    rows = [
        [
            ev["_folder"].name,
            ev.get("checkpoint", "?"),
            str(ev.get("checkpoint_sha256", "?"))[:12],
            str(m.get("created", "?"))[:16].replace("T", " "),
            fmt(m.get("threshold")),
            fmt(m.get("temperature")),
            *((m.get("versions") or {}).get(p, "–") for p in packages),
        ]
        for ev, m in metas
    ]
    align = [False, False, False, False, True, True, *[False] * len(packages)]
    return table(head, rows, align=align, caption="versions recorded in each checkpoint at training time")


SECTIONS: tuple[tuple[str, str, Callable[[Tree], Html]], ...] = (
    ("summary", "Summary", results.summary_section),
    ("data", "Data", _data_section),
    ("training", "Training", _training_section),
    ("performance", "Performance with 95% CIs", results.performance_section),
    ("comparison", "Model comparison", results.comparison_section),
    ("calibration", "Calibration", results.calibration_section),
    ("gradcam", "Grad-CAM", results.gradcam_section),
    ("stress", "Under acquisition shifts (stress suite)", stress_section),
    ("provenance", "Configuration and versions", _provenance_section),
)


def _render_section(tree: Tree, anchor: str, title: str, build: Callable[[Tree], Html]) -> dict[str, Any]:
    """One section for the page template: anchor, title and its body (markup)."""
    try:
        body = build(tree)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OSError) as exc:
        # Inputs come from other steps (and other versions): a malformed file costs one section, not the page.
        logger.warning("report section %r failed: %s", title, exc, exc_info=True)
        body = not_run(title, f"its input files could not be interpreted ({type(exc).__name__}: {exc})")
    return {"anchor": anchor, "title": title, "body": body}


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, str]:
    """The report builder's environment (package metadata only: nothing heavy is imported)."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **{name: package_version(name) for name in PACKAGES},
    }


def build_report(out_dir: str | os.PathLike, *, title: str = "pneumocxr report") -> Path:
    """Write ``out_dir/report.html`` from the output tree under ``out_dir``; returns its path."""
    out = Path(out_dir)
    if not out.is_dir():
        raise ConfigError(f"{out} is not a folder; pass the output folder of `pneumocxr run` (e.g. output/)")
    tree = load_tree(out)
    text = (
        jinja_environment()
        .get_template(PAGE)
        .render(  # autoescape: text escaped, section markup kept
            title=title,
            version=package_version("pneumocxr"),
            generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            out_dir=str(tree.root),
            sections=[_render_section(tree, *spec) for spec in SECTIONS],
        )
    )
    target = out / "report.html"
    tmp = out / f".report.{os.getpid()}.tmp"  # not mkstemp: its 0600 mode would make the page private
    try:  # temp file + rename: a reader never sees half a page
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(f"cannot write {target} ({exc}); choose a writable output folder") from None
    logger.info("wrote %s (%.1f MB)", target, len(text) / 1e6)
    return target
