"""``POST /v1/explain``: the prediction plus a Grad-CAM map of the decided class, on the film.

FastAPI's TestClient (lifespan run) on tiny generated checkpoints (custom_cnn at 32 px).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient
from tests.inference.conftest import IMAGE_SIZE, write_checkpoint

from pneumocxr.explain import compute_cam
from pneumocxr.inference import Predictor, PredictorBase, load_predictor
from pneumocxr.inference.inputs import load_input
from pneumocxr.models import load_checkpoint, to_model_input
from pneumocxr.models.ensemble_file import checkpoint_payload, save_ensemble
from pneumocxr.serving.app import create_app
from pneumocxr.serving.settings import ServeSettings
from pneumocxr.store import open_store
from pneumocxr.store.audit import AuditLog
from pneumocxr.store.keys import create_key

HEIGHT, WIDTH = 90, 70  # not square, and not the model's 32 px: the overlay must come back at this size


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def film_pixels(seed: int = 0) -> np.ndarray:
    """A film-like (H, W) uint8 image (bright vertical band like a spine, noise): passes the scope checks."""
    rng = np.random.default_rng(seed)
    xx = np.arange(WIDTH)[None, :]
    pixels = 60 + 120 * np.exp(-(((xx - WIDTH / 2) / (WIDTH / 8)) ** 2)) + rng.normal(0, 15, (HEIGHT, WIDTH))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def film_bytes(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(film_pixels(seed), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", seed=1)


def settings_for(model: Path, tmp_path: Path, **kw) -> ServeSettings:
    card = tmp_path / "card.md"
    card.write_text("# Model card\n\nA tiny test model.\n")
    return ServeSettings(model=model, db=str(tmp_path / "audit.db"), card=card, **{"auth": False, **kw})


@pytest.fixture
def client(checkpoint, tmp_path):
    with TestClient(create_app(settings_for(checkpoint, tmp_path))) as client:
        yield client


def post(client, path: str = "/v1/explain", data: bytes | None = None, name: str = "film.png", **kw):
    data = film_bytes() if data is None else data
    return client.post(path, files={"file": (name, data, "application/octet-stream")}, **kw)


def decode_png(text_or_bytes) -> Image.Image:
    data = base64.b64decode(text_or_bytes) if isinstance(text_or_bytes, str) else text_or_bytes
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def raw_map(payload: dict) -> np.ndarray:
    spec = payload["raw_map"]
    assert spec["dtype"] == "float32" and spec["byte_order"] == "little"
    values = np.frombuffer(base64.b64decode(spec["data_base64"]), dtype="<f4")
    return values.reshape(spec["shape"])


def cam_of(checkpoint: Path, data: bytes, target: str) -> np.ndarray:
    """The map computed directly by explain.compute_cam on the same input square."""
    model, meta = load_checkpoint(checkpoint, map_location="cpu")
    square = load_input(data).square(meta.preprocess.image_size, meta.preprocess.resize_mode)
    x = to_model_input(square[None], meta.preprocess)
    return compute_cam(model, x, target=[target], class_names=meta.class_names).maps[0]


def test_explain_answers_the_prediction_and_an_overlay_in_the_original_geometry(client):
    answer = post(client)
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    predicted = post(client, "/v1/predict").json()
    for key in ("label", "probabilities", "threshold", "decision", "warnings"):
        assert payload[key] == predicted[key]
    assert payload["research_use_only"] is True
    assert payload["request_id"] == answer.headers["X-Request-ID"]
    assert decode_png(payload["overlay_png"]).size == (WIDTH, HEIGHT)
    explanation = payload["explanation"]
    assert explanation["target_class"] == payload["label"]
    assert explanation["method"] == "gradcam"
    assert explanation["image_size"] == {"width": WIDTH, "height": HEIGHT}
    assert "raw_map" not in payload and "film_png" not in payload


def test_raw_map_is_the_grad_cam_of_the_decided_class_at_model_input_resolution(client, checkpoint):
    payload = post(client, params={"raw": "true"}).json()
    values = raw_map(payload)
    assert values.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert payload["raw_map"]["geometry"] == "model input"
    assert values.min() >= 0.0 and values.max() <= 1.0
    np.testing.assert_allclose(values, cam_of(checkpoint, film_bytes(), payload["label"]), atol=1e-5)


def test_format_png_answers_the_overlay_image_itself(client):
    answer = post(client, params={"format": "png"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/png"
    assert decode_png(answer.content).size == (WIDTH, HEIGHT)
    assert answer.headers["X-Decision"] in ("NORMAL", "PNEUMONIA")


def test_layers_come_in_the_same_geometry_and_max_side_keeps_the_aspect(client):
    payload = post(client, params={"layers": "true", "max_side": 64}).json()
    sizes = {decode_png(payload[k]).size for k in ("overlay_png", "film_png", "heatmap_png")}
    assert sizes == {(50, 64)}  # 70 × 90 scaled to a long side of 64
    assert payload["explanation"]["png_size"] == {"width": 50, "height": 64}
    assert decode_png(payload["film_png"]).mode == "L"


def test_a_dicom_is_explained_on_the_film_the_server_decoded_like_its_png(client):
    dicom_factory = pytest.importorskip("dicom_factory")
    dicom = dicom_factory.dicom_bytes(film_pixels())
    from_dicom = post(client, data=dicom, name="film.dcm", params={"layers": "true"}).json()
    from_png = post(client, params={"layers": "true"}).json()
    assert from_dicom["input"]["format"] == "DICOM"
    assert from_dicom["probabilities"] == from_png["probabilities"]
    film = np.asarray(decode_png(from_dicom["film_png"]))
    assert film.shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(film, film_pixels())  # what the browser shows for a DICOM
    np.testing.assert_array_equal(film, np.asarray(decode_png(from_png["film_png"])))


def test_every_explain_request_is_audited_before_it_is_answered(client, tmp_path):
    ok = post(client)
    bad = post(client, data=b"this is not an image, just text\n" * 10, name="notes.jpg")
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "unsupported_image"
    assert bad.json()["error"]["message"]
    rows = [r for r in AuditLog(open_store(str(tmp_path / "audit.db"))).rows() if r["route"] == "/v1/explain"]
    by_id = {r["request_id"]: r for r in rows}
    good_row = by_id[ok.json()["request_id"]]
    assert good_row["status"] == 200 and good_row["decision"] == ok.json()["label"]
    assert good_row["input_format"] == "PNG"
    bad_row = by_id[bad.json()["request_id"]]
    assert (bad_row["status"], bad_row["error_code"]) == (422, "unsupported_image")


def test_explain_needs_an_api_key_when_auth_is_on(checkpoint, tmp_path):
    store = open_store(str(tmp_path / "audit.db"))
    _, token = create_key(store, "tests")
    with TestClient(create_app(settings_for(checkpoint, tmp_path, auth=True))) as client:
        refused = post(client)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert post(client, headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_an_ensemble_is_explained_by_the_mean_of_its_members_maps(tmp_path):
    members = [write_checkpoint(tmp_path / f"m{i}.pt", seed=i) for i in (1, 2)]
    ensemble = save_ensemble(
        tmp_path / "ensemble.pt", [checkpoint_payload(m) for m in members], ["a", "b"], threshold=0.5
    )
    with TestClient(create_app(settings_for(ensemble, tmp_path))) as client:
        payload = post(client, params={"raw": "true"}).json()
    label = payload["label"]
    expected = np.mean([cam_of(m, film_bytes(), label) for m in members], axis=0)
    np.testing.assert_allclose(raw_map(payload), expected, atol=1e-5)
    assert len(payload["explanation"]["layers"]) == 2
    assert decode_png(payload["overlay_png"]).size == (WIDTH, HEIGHT)


@pytest.mark.parametrize("variant", [{"tta": True}, {"mc_dropout": 3}])
def test_tta_and_mc_dropout_predictors_are_explained_too(checkpoint, tmp_path, variant):
    predictor = load_predictor(checkpoint, device="cpu", **variant)
    app = create_app(settings_for(checkpoint, tmp_path), predictor=predictor)
    with TestClient(app) as client:
        payload = post(client, params={"raw": "true"}).json()
    assert raw_map(payload).shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert payload["model"]["variant"]


class NoTorchModel(PredictorBase):
    """A predictor that answers but holds no torch model (as an ONNX Runtime backend would)."""

    def __init__(self, inner: Predictor):
        self.inner, self.meta, self.device = inner, inner.meta, inner.device

    @property
    def num_parameters(self):
        return self.inner.num_parameters

    def _predict_input(self, loaded):
        return self.inner._predict_input(loaded)


def test_a_predictor_that_cannot_make_maps_answers_501_and_still_predicts(checkpoint, tmp_path):
    predictor = NoTorchModel(load_predictor(checkpoint, device="cpu"))
    with TestClient(create_app(settings_for(checkpoint, tmp_path), predictor=predictor)) as client:
        refused = post(client)
        assert refused.status_code == 501
        assert refused.json()["error"]["code"] == "explain_unavailable"
        assert "Grad-CAM" in refused.json()["error"]["message"]
        assert post(client, "/v1/predict").status_code == 200
