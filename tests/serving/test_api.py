"""The HTTP API in-process (FastAPI's TestClient): auth, every bad input → a clear 4xx, parity with the
core, one audit row per answer, no unaudited answers, bounded queue, time-out, metrics."""

from __future__ import annotations

import re
import struct
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dicom_factory as df
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from tests.inference.conftest import IMAGE_SIZE, write_checkpoint
from tests.serving.conftest import encode, film

from pneumocxr.errors import ConfigError
from pneumocxr.imaging import MAX_PIXELS
from pneumocxr.inference import load_predictor
from pneumocxr.serving.app import create_app
from pneumocxr.serving.model_info import model_card
from pneumocxr.serving.settings import ServeSettings
from pneumocxr.store import open_store
from pneumocxr.store.audit import AuditLog
from pneumocxr.store.keys import create_key, revoke_key

JPEG = {"content-type": "image/jpeg"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("model") / "best.pt", threshold=0.45, temperature=1.5)


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return load_predictor(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> Path:
    """A given model card: building one from the checkpoint would import the training stack."""
    path = tmp_path_factory.mktemp("card") / "card.md"
    path.write_text("# Model card\n\nA tiny untrained test model.\n", encoding="utf-8")
    return path


@contextmanager
def serving(tmp_path: Path, checkpoint: Path, predictor, card: Path, **settings) -> Iterator[tuple]:
    """(client, store, app) for an app on ``predictor`` with its own SQLite audit database."""
    store = open_store(tmp_path / f"audit-{len(list(tmp_path.glob('audit-*')))}.db")
    options = {"auth": False, "card": card, **settings}
    app = create_app(ServeSettings(model=checkpoint, **options), predictor=predictor, store=store)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, store, app
    finally:
        store.dispose()


@pytest.fixture
def api(tmp_path, checkpoint, predictor, card):
    with serving(tmp_path, checkpoint, predictor, card) as served:
        yield served


def audit_rows(store) -> dict[str, dict]:
    return {row["request_id"]: row for row in AuditLog(store).rows()}


def good_jpeg(seed: int = 0) -> bytes:
    return encode(film(seed=seed), "JPEG")


def assert_healthy(client) -> None:
    """The server still answers its probes and a good image after whatever came before."""
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["status"] == "ready"
    answer = client.post("/v1/predict", content=good_jpeg(), headers=JPEG)
    assert answer.status_code == 200, answer.text


def assert_error(answer, status: int, code: str, message: str = "") -> dict:
    assert answer.status_code == status, answer.text
    payload = answer.json()
    assert payload["error"]["code"] == code
    assert message in payload["error"]["message"]
    assert payload["request_id"] == answer.headers["x-request-id"]
    return payload


# ----------------------------------------------------------------------------- auth


@pytest.fixture
def keyed(tmp_path, checkpoint, predictor, card):
    with serving(tmp_path, checkpoint, predictor, card, auth=True) as served:
        yield served


def test_a_key_is_required_by_default(keyed):
    client, _, _ = keyed
    answer = client.post("/v1/predict", content=good_jpeg(), headers=JPEG)
    assert_error(answer, 401, "unauthorized", "serve keys create")
    assert answer.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/model").status_code == 401
    for probe in ("/healthz", "/readyz", "/metrics"):  # probes stay open for load balancers
        assert client.get(probe).status_code == 200


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_a_valid_key_is_accepted_and_recorded(keyed, header):
    client, store, _ = keyed
    info, token = create_key(store, "ward 3")
    value = f"Bearer {token}" if header == "authorization" else token
    answer = client.post("/v1/predict", content=good_jpeg(), headers={**JPEG, header: value})
    assert answer.status_code == 200, answer.text
    assert audit_rows(store)[answer.json()["request_id"]]["key_id"] == info.id
    assert client.get("/v1/model", headers={header: value}).status_code == 200


def test_a_revoked_or_forged_key_is_refused(keyed):
    client, store, _ = keyed
    info, token = create_key(store, "leaver")
    bearer = {"authorization": f"Bearer {token}"}
    assert client.post("/v1/predict", content=good_jpeg(), headers={**JPEG, **bearer}).status_code == 200
    revoke_key(store, info.id)
    answer = client.post("/v1/predict", content=good_jpeg(), headers={**JPEG, **bearer})
    assert_error(answer, 401, "unauthorized", "revoked")
    forged = {"authorization": f"Bearer pcx_{info.id}_{'A' * 43}"}
    assert client.post("/v1/predict", content=good_jpeg(), headers={**JPEG, **forged}).status_code == 401


def test_without_auth_no_key_is_needed_and_none_is_recorded(api):
    client, store, _ = api
    answer = client.post("/v1/predict", content=good_jpeg(), headers=JPEG)
    assert answer.status_code == 200
    assert audit_rows(store)[answer.json()["request_id"]]["key_id"] is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org"])
def test_no_auth_is_refused_off_loopback(checkpoint, host):
    with pytest.raises(ConfigError, match="loopback"):
        ServeSettings(model=checkpoint, host=host, auth=False).check()
    assert ServeSettings(model=checkpoint, host=host, auth=True).check().host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_no_auth_is_allowed_on_loopback(checkpoint, host):
    assert not ServeSettings(model=checkpoint, host=host, auth=False).check().auth


def test_the_cli_refuses_no_auth_off_loopback_before_serving(checkpoint, capsys):
    from pneumocxr.cli.main import main

    code = main(["serve", "--model", str(checkpoint), "--host", "0.0.0.0", "--no-auth"])
    assert code == 2 and "loopback" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad input


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _bomb_png(side: int = 10_240) -> bytes:
    """A real decompression bomb: a valid grayscale PNG of side² black pixels (~100 KB compressed)."""
    assert side * side > MAX_PIXELS
    compressor = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def _dicom_without_pixels() -> bytes:
    return df.dicom_bytes(df.ramp(96, 96, 4095), bits_stored=12, edit=lambda ds: delattr(ds, "PixelData"))


BAD_INPUTS = {
    # name: (body, content type or "multipart:<filename>", status, code, words in the message)
    "empty body": (b"", "image/jpeg", 422, "unsupported_image", "empty input"),
    "empty upload": (b"", "multipart:x.jpg", 422, "unsupported_image", "empty input"),
    "truncated JPEG": (good_jpeg()[:600], "image/jpeg", 422, "unsupported_image", "truncated"),
    "text named .jpg": (b"not an image\n" * 20, "multipart:scan.jpg", 422, "unsupported_image", "not a JPEG"),
    "zip as octet-stream": (
        b"PK\x03\x04" + b"\0" * 300,
        "application/octet-stream",
        422,
        "unsupported_image",
        "",
    ),
    "GIF": (encode(film(), "GIF"), "image/png", 422, "unsupported_image", "convert it to PNG"),
    "decompression bomb": (_bomb_png(), "image/png", 422, "unsupported_image", "decompression bomb"),
    "RGB DICOM": (
        df.dicom_bytes(np.zeros((96, 96, 3), np.uint8), photometric="RGB"),
        "application/dicom",
        422,
        "unsupported_image",
        "colour DICOM",
    ),
    "DICOM without pixels": (
        _dicom_without_pixels(),
        "application/dicom",
        422,
        "unsupported_image",
        "no pixel",
    ),
    "image smaller than the model input": (
        encode(film(IMAGE_SIZE - 8, IMAGE_SIZE - 8), "PNG"),
        "image/png",
        422,
        "image_too_small",
        "smaller than the model",
    ),
    "inverted film": (
        encode(film().point(lambda v: 255 - v), "PNG"),
        "multipart:neg.png",
        422,
        "inverted_polarity",
        "inverted",
    ),
    "wrong content type": (good_jpeg(), "text/plain", 415, "unsupported_media_type", "text/plain"),
    "JSON": (b'{"image": "..."}', "application/json", 415, "unsupported_media_type", "image/jpeg"),
    "no content type": (good_jpeg(), None, 415, "unsupported_media_type", "no Content-Type"),
}


def _send(client, body: bytes, kind: str | None, headers: dict | None = None):
    headers = dict(headers or {})
    if kind is not None and kind.startswith("multipart:"):
        return client.post("/v1/predict", files={"file": (kind.split(":", 1)[1], body)}, headers=headers)
    if kind is not None:
        headers["content-type"] = kind
    return client.post("/v1/predict", content=body, headers=headers)


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_a_clear_4xx_and_the_server_stays_healthy(api, name):
    client, store, _ = api
    body, kind, status, code, words = BAD_INPUTS[name]
    answer = _send(client, body, kind)
    payload = assert_error(answer, status, code, words)
    assert "probabilities" not in payload
    # no traceback, and no "<N bytes in memory>" source name: an upload has no name to show
    assert "Traceback" not in answer.text and not payload["error"]["message"].startswith("<")
    row = audit_rows(store)[payload["request_id"]]  # refused answers are audited too
    assert (row["status"], row["error_code"], row["decision"]) == (status, code, None)
    assert_healthy(client)


def test_a_missing_multipart_field_is_a_400(api):
    client, store, _ = api
    answer = client.post("/v1/predict", files={"image": ("a.jpg", good_jpeg())})
    payload = assert_error(answer, 400, "missing_file", "'file'")
    assert audit_rows(store)[payload["request_id"]]["status"] == 400
    assert_healthy(client)


def test_a_16_bit_png_is_accepted_and_scored_like_the_core(api, predictor):
    """The core accepts 16-bit grayscale PNG (Pillow mode I;16) and scales it to the model input."""
    client, _, _ = api
    data = encode(film(bits=16), "PNG")
    answer = client.post("/v1/predict", content=data, headers={"content-type": "image/png"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["input"]["format"] == "PNG"
    assert answer.json()["probabilities"] == predictor.predict(data).probabilities


@pytest.fixture
def small_limit(tmp_path, checkpoint, predictor, card):
    with serving(tmp_path, checkpoint, predictor, card, max_upload_bytes=64 * 1024) as served:
        yield served


def _chunks(total: int, size: int = 16 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"\xff" * min(size, total - sent)
        sent += size


@pytest.mark.parametrize("how", ["content-length", "chunked", "multipart"])
def test_an_oversize_upload_is_a_413_and_the_server_stays_healthy(small_limit, how):
    client, _, _ = small_limit
    big = good_jpeg() + b"\0" * (128 * 1024)
    if how == "content-length":
        answer = client.post("/v1/predict", content=big, headers=JPEG)
    elif how == "chunked":  # no Content-Length: the limit is enforced while reading
        answer = client.post("/v1/predict", content=_chunks(len(big)), headers=JPEG)
    else:
        answer = client.post("/v1/predict", files={"file": ("big.jpg", big, "image/jpeg")})
    assert_error(answer, 413, "too_large", "64 KB")
    assert_healthy(client)


def test_an_upload_just_under_the_limit_is_read(small_limit):
    client, _, _ = small_limit
    data = good_jpeg()
    padded = data + b"\0" * (64 * 1024 - len(data))  # trailing bytes after the JPEG end marker
    assert client.post("/v1/predict", content=padded, headers=JPEG).status_code == 200


# ----------------------------------------------------------------------------- parity and the answer


def _parity_inputs(shared: Path | None) -> dict[str, bytes]:
    inputs = {
        "JPEG": good_jpeg(3),
        "PNG": encode(film(120, 100, seed=4), "PNG"),
        "16-bit PNG": encode(film(seed=5, bits=16), "PNG"),
        "RGB JPEG": encode(film(seed=6, mode="RGB"), "JPEG"),
        "DICOM": df.dicom_bytes(
            np.round(np.asarray(film(seed=7, bits=16), dtype=np.float64) / 16).astype(np.uint16),
            bits_stored=12,
        ),
    }
    if shared is not None:
        for path in sorted((shared / "chest_xray" / "train" / "PNEUMONIA").glob("*.jpeg"))[:2]:
            inputs[f"real {path.name}"] = path.read_bytes()
    return inputs


def test_the_api_answers_exactly_what_the_core_answers(api, predictor):
    from tests.conftest import SHARED_DATA

    client, _, _ = api
    shared = SHARED_DATA if (SHARED_DATA / "chest_xray" / "train").is_dir() else None
    for name, data in _parity_inputs(shared).items():
        expected = predictor.predict(data)
        raw = client.post("/v1/predict", content=data, headers={"content-type": "application/octet-stream"})
        upload = client.post("/v1/predict", files={"file": ("x", data)})
        for answer in (raw, upload):
            assert answer.status_code == 200, (name, answer.text)
            got = answer.json()
            assert got["probabilities"] == expected.probabilities, name  # exactly: floats survive JSON
            assert (got["label"], got["threshold"]) == (expected.label, expected.threshold), name
            assert got["input"]["sha256"] == expected.input.sha256, name
            assert got["model"]["sha256"] == predictor.identity.sha256
            assert got["research_use_only"] is True


def test_the_model_endpoint_describes_what_answers(api, predictor):
    client, _, _ = api
    info = client.get("/v1/model").json()
    assert info["identity"]["sha256"] == predictor.identity.sha256
    assert info["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert info["operating_point"]["threshold"] == pytest.approx(0.45)
    assert "Research use only" in info["intended_use"] and info["model_card"].startswith("# Model card")


def _run_layout(tmp_path: Path, checkpoint: Path, card_text: str) -> Path:
    """``<out>/models/<model>.pt`` with ``<out>/model_cards/<model>.md`` beside it, as ``run`` writes them."""
    model = tmp_path / "out" / "models" / "tiny.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(checkpoint.read_bytes())
    (tmp_path / "out" / "model_cards").mkdir()
    (tmp_path / "out" / "model_cards" / "tiny.md").write_text(card_text, encoding="utf-8")
    return model


def test_the_card_run_wrote_beside_the_checkpoint_is_served_when_it_names_its_sha256(tmp_path, checkpoint):
    sha = load_predictor(checkpoint, device="cpu").identity.sha256
    model = _run_layout(tmp_path, checkpoint, f"# Card from run\n\nCheckpoint (sha256 {sha})\n")
    predictor = load_predictor(model, device="cpu")
    store = open_store(tmp_path / "audit.db")
    app = create_app(ServeSettings(model=model, auth=False), predictor=predictor, store=store)
    try:
        with TestClient(app) as client:
            assert client.get("/v1/model").json()["model_card"].startswith("# Card from run")
    finally:
        store.dispose()


def test_a_card_for_another_checkpoint_is_not_served_as_this_ones(tmp_path, checkpoint):
    model = _run_layout(tmp_path, checkpoint, "# Card from run\n\nCheckpoint (sha256 0123abcd)\n")
    settings = ServeSettings(model=model, auth=False)
    card = model_card(settings, load_predictor(model, device="cpu").identity.sha256)
    assert card is None or not card.startswith("# Card from run")


# ----------------------------------------------------------------------------- audit


def test_every_answer_has_its_audit_row_with_its_request_id(api):
    client, store, _ = api
    answers = [client.post("/v1/predict", content=good_jpeg(seed), headers=JPEG) for seed in range(3)] + [
        _send(client, body, kind) for body, kind, *_ in BAD_INPUTS.values()
    ]
    rows = audit_rows(store)
    assert len(rows) == len(answers)
    for answer in answers:
        request_id = answer.headers["x-request-id"]
        assert answer.json()["request_id"] == request_id
        row = rows[request_id]
        assert row["status"] == answer.status_code and row["route"] == "/v1/predict"
        if answer.status_code == 200:
            got = answer.json()
            assert row["decision"] == got["label"] and row["model_sha256"] == got["model"]["sha256"]
            assert row["input_sha256"] == got["input"]["sha256"] and row["input_format"] == "JPEG"
            assert row["latency_ms"] > 0


def test_no_patient_identifier_reaches_the_audit_log(api):
    client, store, _ = api
    data = df.dicom_bytes(df.ramp(96, 96, 4095), bits_stored=12, edit=_name_patient)
    answer = client.post("/v1/predict", content=data, headers={"content-type": "application/dicom"})
    assert answer.status_code in (200, 422), answer.text
    with store.engine.connect() as connection:
        dump = repr(connection.execute(text("SELECT * FROM audit_log")).all())
    assert "DOE^JANE" not in dump and "TEST-0001" not in dump and "ACC-77" not in dump


def _name_patient(ds) -> None:
    ds.PatientName, ds.AccessionNumber = "DOE^JANE", "ACC-77"


def test_a_failed_audit_write_withholds_the_answer(api):
    client, store, _ = api
    with store.engine.begin() as connection:
        connection.execute(text("DROP TABLE audit_log"))
    answer = client.post("/v1/predict", content=good_jpeg(), headers=JPEG)
    payload = assert_error(answer, 503, "audit_unavailable", "withheld")
    assert "probabilities" not in payload and "label" not in payload and "PNEUMONIA" not in answer.text
    bad = client.post("/v1/predict", content=b"junk", headers=JPEG)  # a refusal is not answered either
    assert_error(bad, 503, "audit_unavailable")
    assert client.get("/healthz").status_code == 200


def test_an_audit_error_of_any_kind_fails_the_request(api, monkeypatch):
    client, _, app = api
    from pneumocxr.store.audit import AuditError

    def broken(entry):
        raise AuditError("the audit log could not be written (OperationalError)")

    monkeypatch.setattr(app.state.service.audit, "record", broken)
    answer = client.post("/v1/predict", content=good_jpeg(), headers=JPEG)
    assert_error(answer, 503, "audit_unavailable")
    assert "probabilities" not in answer.json()


def test_a_bug_in_the_model_is_a_500_that_is_audited_and_names_no_internals(api, monkeypatch):
    client, store, app = api
    predictor = app.state.service.predictor

    def broken(source, *, refuse=None):
        raise RuntimeError("secret internal state /srv/models/x.pt")

    monkeypatch.setattr(predictor, "predict", broken)
    answer = client.post("/v1/predict", content=good_jpeg(), headers=JPEG)
    payload = assert_error(answer, 500, "internal_error", "request id")
    assert "secret" not in answer.text
    assert audit_rows(store)[payload["request_id"]]["status"] == 500
    monkeypatch.undo()
    assert_healthy(client)


# ----------------------------------------------------------------------------- queue, time-out, metrics


class GatedPredictor:
    """The real predictor, but a prediction on uploaded bytes waits for ``release`` (a slow model)."""

    def __init__(self, inner):
        self.inner = inner
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.lock = threading.Lock()
        self.running = self.most_at_once = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, source, *, refuse=None):
        if isinstance(source, bytes):
            with self.lock:
                self.running += 1
                self.most_at_once = max(self.most_at_once, self.running)
            self.entered.release()
            try:
                assert self.release.wait(timeout=30), "the test never released the model"
            finally:
                with self.lock:
                    self.running -= 1
        return self.inner.predict(source, refuse=refuse)


@pytest.fixture
def gated(tmp_path, checkpoint, predictor, card):
    slow = GatedPredictor(predictor)
    with serving(tmp_path, checkpoint, slow, card, workers=1, max_queue=0, timeout_s=0.5) as served:
        yield (*served, slow)
        slow.release.set()


def _in_background(client, results: list) -> threading.Thread:
    def post():
        results.append(client.post("/v1/predict", content=good_jpeg(), headers=JPEG))

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def test_a_full_queue_answers_503_with_retry_after_at_once(tmp_path, checkpoint, predictor, card):
    slow = GatedPredictor(predictor)
    with serving(tmp_path, checkpoint, slow, card, workers=1, max_queue=0, timeout_s=20) as (
        client,
        store,
        _,
    ):
        first: list = []
        thread = _in_background(client, first)
        try:
            assert slow.entered.acquire(timeout=20)  # the one model slot is taken
            answer = client.post("/v1/predict", content=good_jpeg(), headers=JPEG)
            payload = assert_error(answer, 503, "busy")
            assert int(answer.headers["retry-after"]) >= 1
            assert audit_rows(store)[payload["request_id"]]["error_code"] == "busy"
            assert client.get("/healthz").status_code == 200  # probes never queue behind the model
        finally:
            slow.release.set()
            thread.join(timeout=30)
        assert first[0].status_code == 200 and slow.most_at_once == 1
        metrics = client.get("/metrics").text
        assert _sample(metrics, "pneumocxr_rejected_total") == 1


def test_a_slow_answer_is_a_504_and_keeps_its_slot_until_the_model_returns(gated):
    """A timed-out call goes on running in its thread: its slot stays taken until it ends, so
    timed-out calls cannot pile up threads and CPU beyond ``workers + max_queue``."""
    client, store, _, slow = gated
    answer = client.post("/v1/predict", content=good_jpeg(), headers=JPEG)
    payload = assert_error(answer, 504, "timeout", "0.5 s")
    assert audit_rows(store)[payload["request_id"]]["status"] == 504
    assert_error(client.post("/v1/predict", content=good_jpeg(), headers=JPEG), 503, "busy")
    assert slow.most_at_once == 1
    slow.release.set()
    for _ in range(100):  # the abandoned call ends, and its slot comes back (just after its thread returns)
        answer = client.post("/v1/predict", content=good_jpeg(), headers=JPEG)
        if answer.status_code != 503:
            break
        threading.Event().wait(0.05)
    assert answer.status_code == 200, answer.text


def _sample(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if wanted else "") + r" ([0-9.e+-]+)"
    found = re.search(pattern, metrics)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_requests_by_route_and_status(keyed):
    client, store, _ = keyed
    _, token = create_key(store, "metrics")
    bearer = {**JPEG, "authorization": f"Bearer {token}"}
    for _ in range(3):
        client.post("/v1/predict", content=good_jpeg(), headers=bearer)
    client.post("/v1/predict", content=b"junk", headers=bearer)
    client.post("/v1/predict", content=good_jpeg(), headers=JPEG)  # no key
    client.get("/healthz")
    for path in ("/v1/nothing-here", "/v1/a1", "/v1/a2"):  # unknown paths share one label
        assert client.get(path).status_code == 404
    metrics = client.get("/metrics").text
    assert _sample(metrics, "pneumocxr_requests_total", route="/v1/predict", status="200") == 3
    assert _sample(metrics, "pneumocxr_requests_total", route="/v1/predict", status="422") == 1
    assert _sample(metrics, "pneumocxr_requests_total", route="/v1/predict", status="401") == 1
    assert _sample(metrics, "pneumocxr_requests_total", route="/healthz", status="200") >= 1
    assert "/v1/a1" not in metrics and "/v1/nothing-here" not in metrics
    assert _sample(metrics, "pneumocxr_request_seconds_count", route="/v1/predict") == 5
    assert _sample(metrics, "pneumocxr_model_seconds_count") == 3  # the answers the model gave
    assert _sample(metrics, "pneumocxr_in_flight") == 1  # this /metrics request
