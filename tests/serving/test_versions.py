"""The version a release carries reaches the checkpoint it writes and the API that serves it."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient
from tests.inference.conftest import write_checkpoint

import pneumocxr
from pneumocxr.serving.app import create_app
from pneumocxr.serving.settings import ServeSettings


def test_a_checkpoint_records_the_pneumocxr_version_that_wrote_it(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "best.pt")
    versions = torch.load(checkpoint, weights_only=True)["versions"]
    assert versions["pneumocxr"] == pneumocxr.__version__
    assert {"python", "torch", "torchvision", "timm"} <= set(versions)


@pytest.mark.slow  # a real app with its lifespan: model load and the audit database
def test_the_api_reports_its_version_and_the_one_that_trained_the_model(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "best.pt")
    recorded = torch.load(checkpoint, weights_only=True)["versions"]
    settings = ServeSettings(model=checkpoint, db=str(tmp_path / "audit.db"), auth=False, runtime="torch")
    with TestClient(create_app(settings)) as client:
        model = client.get("/v1/model").json()
        schema = client.get("/openapi.json").json()
    assert model["versions"]["pneumocxr"] == pneumocxr.__version__
    assert model["versions"]["trained_with"] == recorded
    assert schema["info"]["version"] == pneumocxr.__version__
