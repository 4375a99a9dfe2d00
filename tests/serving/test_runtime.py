"""The service answers on ONNX Runtime by default (a checkpoint exported once, cached by its sha256)
and keeps torch for Grad-CAM; ``--runtime torch`` serves the checkpoint itself."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from tests.inference.conftest import write_checkpoint

from pneumocxr.inference import load_predictor
from pneumocxr.serving.app import create_app
from pneumocxr.serving.settings import ServeSettings

pytestmark = pytest.mark.slow


def film_png(path):
    xx = np.linspace(-1, 1, 96)[None, :].repeat(80, 0)
    film = np.clip(70 + 110 * np.exp(-(xx**2) / 0.02), 0, 255).astype(np.uint8)  # bright spine, darker sides
    Image.fromarray(film).save(path)
    return path.read_bytes()


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_the_runtime_answers_like_the_checkpoint_and_explain_still_maps(tmp_path, runtime):
    checkpoint = write_checkpoint(tmp_path / "best.pt", threshold=0.45, temperature=1.5)
    data = film_png(tmp_path / "film.png")
    settings = ServeSettings(model=checkpoint, db=str(tmp_path / "audit.db"), auth=False, runtime=runtime)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/predict", content=data, headers={"content-type": "image/png"}).json()
        explained = client.post("/v1/explain", content=data, headers={"content-type": "image/png"})
    expected = load_predictor(checkpoint, device="cpu").predict(data)
    assert answer["probabilities"]["PNEUMONIA"] == pytest.approx(
        expected.probabilities["PNEUMONIA"], abs=1e-5
    )
    assert answer["label"] == expected.label
    assert answer["model"]["runtime"] == runtime
    assert (tmp_path / "models").exists() == (runtime == "onnx")  # the export lives beside the database
    assert explained.status_code == 200 and explained.json()["overlay_png"]
