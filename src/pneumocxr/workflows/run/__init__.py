"""``pneumocxr run`` as a library: ``run_pipeline(RunRequest(data=…), notify=…) → RunResult``.

- ``pipeline``: the request, the steps in order, the run summary's bookkeeping, the exit status;
- ``recipes``: which models a preset trains, on which recipe, with which ``--set`` overrides;
- ``weights``: the pre-flight check that every model can get its pretrained weights (or is skipped);
- ``steps`` / ``robustness``: each step, one library call plus its account;
- ``state``: what the steps share; ``summary``: results/run_summary.json.

Names are imported lazily (PEP 562), as in ``pneumocxr.workflows``.
"""

from __future__ import annotations

from pneumocxr._lazy import lazy_exports

_EXPORTS = {
    "RunRequest": ".pipeline",
    "RunResult": ".pipeline",
    "run_pipeline": ".pipeline",
    "step_ids": ".pipeline",
    "PRESETS": ".recipes",
    "SkippedModel": ".weights",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
