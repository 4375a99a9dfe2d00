"""One loader for every checkpoint payload: a file (``load_checkpoint``) and an ensemble member
(``ensemble_file``) are rebuilt by ``rebuild_model`` and describe the same model the same way."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tests.inference.conftest import write_checkpoint

from pneumocxr.errors import CheckpointError
from pneumocxr.models import load_checkpoint
from pneumocxr.models.checkpoint import rebuild_model
from pneumocxr.models.ensemble_file import checkpoint_payload, load_ensemble, save_ensemble


def _three_class(path):
    return write_checkpoint(path, temperature=1.2, task="normal-bacterial-viral")


def test_an_ensemble_member_has_the_meta_and_weights_of_its_checkpoint_file(tmp_path):
    path = _three_class(tmp_path / "a.pt")
    model, meta = load_checkpoint(path)
    ensemble = save_ensemble(tmp_path / "e.pt", [checkpoint_payload(path)], ["a"], threshold=0.5)
    [(member, member_meta)], ensemble_meta = load_ensemble(ensemble)
    # everything but where it was read from, including the task (a member used to say "binary")
    assert dataclasses.replace(member_meta, path=meta.path) == meta
    assert member_meta.task == "normal-bacterial-viral" and member_meta.path == f"{ensemble}#a"
    assert ensemble_meta.task == "normal-bacterial-viral" and ensemble_meta.model_name == "ensemble"
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(member(x), model(x))


def test_an_incomplete_or_mismatched_payload_is_a_checkpoint_error_naming_it(tmp_path):
    data = torch.load(_three_class(tmp_path / "a.pt"), weights_only=True)
    with pytest.raises(CheckpointError, match=r"^where: checkpoint lacks 'state_dict'"):
        rebuild_model({k: v for k, v in data.items() if k != "state_dict"}, "where")
    wrong = {**data, "model_kwargs": {**data["model_kwargs"], "num_classes": 2}}
    with pytest.raises(CheckpointError, match=r"^where: weights do not fit model custom_cnn"):
        rebuild_model(wrong, "where")
