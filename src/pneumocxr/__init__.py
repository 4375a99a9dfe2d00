"""pneumocxr: train, evaluate, explain and serve chest X-ray classifiers.

The calls a notebook needs sit at the top level, named after the CLI verbs, each a thin layer over
the library call that verb makes (``pneumocxr.api`` holds them)::

    import pneumocxr

    data = pneumocxr.discover("data/chest_xray")           # pneumocxr data check / eda
    report = pneumocxr.check_dataset(data)
    pneumocxr.eda(data, "out/eda").figures["dataset_distribution"]
    run = pneumocxr.train("cpu_fast", "runs/cpu_fast", {"data.root": "data/chest_xray"})
    ev = pneumocxr.evaluate(run.best_checkpoint, "data/chest_xray", split="validation", out_dir="out/ev")
    ev.to_frame()                                         # the metrics with 95 % CIs (pandas)

``discover``, ``patient_sample``, ``check_dataset``, ``eda``, ``train``, ``evaluate``,
``compare``, ``explain_images``, ``load_predictor``/``Predictor``, ``stress``, ``model_card``
and ``export_onnx`` (``pneumocxr.explain`` is the explanations subpackage, so the explain verb's
call is ``explain_images``). They are imported on first use (PEP 562): ``import pneumocxr``
loads no torch, scikit-learn or Lightning.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("pneumocxr")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# public name → the module that defines it (imported when the name is first used)
_API = {
    "discover": "pneumocxr.api._data",
    "patient_sample": "pneumocxr.api._data",
    "check_dataset": "pneumocxr.api._data",
    "eda": "pneumocxr.api._data",
    "DataCheck": "pneumocxr.api._data",
    "EdaResult": "pneumocxr.api._data",
    "train": "pneumocxr.api._train",
    "TrainRun": "pneumocxr.api._train",
    "evaluate": "pneumocxr.api._evaluate",
    "Evaluation": "pneumocxr.api._evaluate",
    "compare": "pneumocxr.api._compare",
    "Comparison": "pneumocxr.api._compare",
    "explain_images": "pneumocxr.api._explain",
    "ExplainedImage": "pneumocxr.api._explain",
    "load_predictor": "pneumocxr.api._predict",
    "Predictor": "pneumocxr.api._predict",
    "PredictionResult": "pneumocxr.api._predict",
    "stress": "pneumocxr.api._stress",
    "StressReport": "pneumocxr.api._stress",
    "model_card": "pneumocxr.api._card",
    "ModelCard": "pneumocxr.api._card",
    "export_onnx": "pneumocxr.api._export",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
