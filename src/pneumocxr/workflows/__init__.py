"""Workflows: what the CLI verbs do, built on the prediction core (``pneumocxr.inference``).

``evaluate_checkpoint`` (a split, every metric with its CI, plots, reports), ``compare_models``
(several checkpoints on the same images, paired tests), ensemble creation, the validation-split
rebuild and provenance, the stress suite, folder prediction, and the whole ``pneumocxr run``
pipeline (``workflows.run``: ``run_pipeline(RunRequest) → RunResult``). This layer may use scikit-learn,
scipy and matplotlib; the core below it may not, so serving stays cheap to import.

Names are imported lazily (PEP 562): ``import pneumocxr.workflows`` costs nothing until used.
"""

from __future__ import annotations

from pneumocxr._lazy import lazy_exports

_EXPORTS = {
    "ComparisonResult": ".compare",
    "compare_models": ".compare",
    "resolve_checkpoint": ".compare",
    "EvaluationResult": ".evaluate",
    "evaluate_checkpoint": ".evaluate",
    "model_label": ".evaluate",
    "Selection": ".provenance",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
