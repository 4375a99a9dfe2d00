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

from typing import TYPE_CHECKING

from pneumocxr._lazy import lazy_exports
from pneumocxr._version import __version__ as __version__

if TYPE_CHECKING:  # type checkers and the API reference (griffe) see the names; at run time they load lazily
    from pneumocxr.api._card import ModelCard as ModelCard
    from pneumocxr.api._card import model_card as model_card
    from pneumocxr.api._compare import Comparison as Comparison
    from pneumocxr.api._compare import compare as compare
    from pneumocxr.api._data import (
        DataCheck as DataCheck,
    )
    from pneumocxr.api._data import (
        EdaResult as EdaResult,
    )
    from pneumocxr.api._data import (
        check_dataset as check_dataset,
    )
    from pneumocxr.api._data import (
        discover as discover,
    )
    from pneumocxr.api._data import (
        eda as eda,
    )
    from pneumocxr.api._data import (
        patient_sample as patient_sample,
    )
    from pneumocxr.api._evaluate import Evaluation as Evaluation
    from pneumocxr.api._evaluate import evaluate as evaluate
    from pneumocxr.api._explain import ExplainedImage as ExplainedImage
    from pneumocxr.api._explain import explain_images as explain_images
    from pneumocxr.api._export import export_onnx as export_onnx
    from pneumocxr.api._predict import (
        PredictionResult as PredictionResult,
    )
    from pneumocxr.api._predict import (
        Predictor as Predictor,
    )
    from pneumocxr.api._predict import (
        load_predictor as load_predictor,
    )
    from pneumocxr.api._stress import StressReport as StressReport
    from pneumocxr.api._stress import stress as stress
    from pneumocxr.api._train import TrainRun as TrainRun
    from pneumocxr.api._train import train as train


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

__all__ = [
    "Comparison",
    "DataCheck",
    "EdaResult",
    "Evaluation",
    "ExplainedImage",
    "ModelCard",
    "PredictionResult",
    "Predictor",
    "StressReport",
    "TrainRun",
    "check_dataset",
    "compare",
    "discover",
    "eda",
    "evaluate",
    "explain_images",
    "export_onnx",
    "load_predictor",
    "model_card",
    "patient_sample",
    "stress",
    "train",
]


__getattr__, __dir__ = lazy_exports(__name__, _API)
