"""The report's shift-stress section: results/stress_summary.csv and each model's stress.png.

Written by ``pneumocxr run``'s stress step (the carved validation split re-rendered under acquisition
shifts). The headline is specificity under shift: on another hospital's films the NORMAL scores
rise, and that is what a near-perfect clean validation AUC hides.
"""

from __future__ import annotations

from pneumocxr.evaluation._report_html import Html, Tree, figures, fmt, join, not_run, table, tag

COLUMNS = (
    ("model", "Model"),
    ("clean_auc", "AUC clean"),
    ("mean_shifted_auc", "AUC mean shifted"),
    ("worst_auc", "AUC worst"),
    ("worst_auc_shift", "where"),
    ("clean_specificity", "Specificity clean"),
    ("worst_specificity", "Specificity worst"),
    ("worst_specificity_shift", "where"),
    ("blind_worst_specificity", "Specificity worst, shifts not trained on"),
    ("blind_worst_specificity_shift", "where"),
)
TEXT = {"model", "worst_auc_shift", "worst_specificity_shift", "blind_worst_specificity_shift"}


def stress_section(tree: Tree) -> Html:
    path = tree.root / "results" / "stress_summary.csv"
    rows, why = tree.csv(path)
    if not rows:
        return not_run("shift-stress suite", why or f"{tree.rel(path)} has no rows")
    body = [[row.get(key, "") if key in TEXT else fmt(row.get(key)) for key, _ in COLUMNS] for row in rows]
    align = [key not in TEXT for key, _ in COLUMNS]
    n = rows[0].get("n_images", "?")
    caption = (
        f"Validation images ({n} per shift) re-rendered under acquisition shifts at 3 severities; "
        "sensitivity and specificity at each model's stored threshold. Per-shift tables with CIs: "
        "stress/<model>/."
    )
    plots = [
        tree.figure(folder / "stress.png", f"{folder.name}: metric vs severity per shift")
        for folder in tree.folders("stress")
    ]
    note = (
        "A shift the training augmentation covers is no longer blind; the last columns leave those out. "
        "A large drop here predicts a drop on another hospital's films; a small one does not promise "
        "the opposite."
    )
    return join(
        [
            table([h for _, h in COLUMNS], body, align=align, caption=caption),
            figures(plots),
            tag("p", note, "muted"),
        ]
    )
