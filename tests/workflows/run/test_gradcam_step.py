"""The `run` pipeline's Grad-CAM step draws its grid for whatever the best evaluation was: a checkpoint
or an ensemble file (whose members' maps are averaged)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
from tests.conftest import make_kermany_tree
from tests.inference.conftest import write_checkpoint

from pneumocxr.data.discovery import discover
from pneumocxr.models.ensemble_file import checkpoint_payload, save_ensemble
from pneumocxr.workflows.run.state import RunState
from pneumocxr.workflows.run.steps import gradcam


def _state(tmp_path, checkpoint) -> RunState:
    """A RunState as the evaluate step leaves it, with one evaluated model: ``checkpoint``."""
    dataset = discover(
        make_kermany_tree(tmp_path / "cx", splits=("test",), patients_per_class=2, size=(32, 32))
    )
    records = dataset.in_split("test")
    evaluation = SimpleNamespace(
        checkpoint=checkpoint,
        metrics={"checkpoint": {"roc_auc": (0.8, 0.6, 0.9)}},
        predictions=SimpleNamespace(
            calibrated_probability=np.linspace(0.05, 0.95, len(records)), threshold=0.5
        ),
    )
    state = RunState(dataset=dataset, out=tmp_path / "out", workers=1)
    state.results["evaluate"] = [
        (SimpleNamespace(dataset=dataset, split="test"), SimpleNamespace(evaluations={"best": evaluation}))
    ]
    return state


def test_gradcam_step_draws_the_grid_of_an_ensemble_file(tmp_path):
    members = [write_checkpoint(tmp_path / f"m{i}.pt", seed=i) for i in range(2)]
    ensemble = save_ensemble(
        tmp_path / "ens.pt", [checkpoint_payload(m) for m in members], ["m0", "m1"], threshold=0.5
    )
    state = _state(tmp_path, ensemble)
    assert gradcam(state) == "done (best)"
    figure = state.out / "plots" / "gradcam_visualizations.png"
    assert figure.is_file() and state.summary["gradcam"]["figure"] == str(figure)
    drawn = json.loads(figure.with_suffix(".json").read_text())
    assert drawn["members"] == 2 and drawn["model"].startswith("ensemble of 2")
    assert drawn["threshold"] == 0.5  # the evaluation's threshold, not another one


def test_gradcam_step_still_draws_a_single_checkpoint(tmp_path):
    state = _state(tmp_path, write_checkpoint(tmp_path / "one.pt", threshold=0.3))
    assert gradcam(state) == "done (best)"
    drawn = json.loads((state.out / "plots" / "gradcam_visualizations.json").read_text())
    assert drawn["members"] == 1 and drawn["model"] == "custom_cnn"
    assert drawn["threshold"] == 0.5  # the evaluation's threshold wins over the file's 0.3
