"""``create_app(settings)``: the FastAPI application behind ``pneumocxr serve``.

Routes (OpenAPI schema at /openapi.json): ``POST /v1/predict``, ``POST /v1/explain``
(``explain_route``), ``GET /v1/model``, ``GET /healthz``
(live), ``GET /readyz`` (model loaded and warmed up), ``GET /metrics`` (Prometheus). The shapes follow
the Open Inference Protocol where it fits — live/ready probes, a model-metadata endpoint — and depart
where a radiograph needs more: one image in (multipart or raw bytes, format sniffed from content),
a typed clinical answer out (class probabilities, decision at the stored operating point, scope
warnings, model sha256) rather than raw tensors. The web page at ``/`` (``page``) uses the same API.

Every request that reaches the model is written to the audit log before its answer leaves; if that
write fails, the request fails (503), so there are no unaudited answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.requests import ClientDisconnect

from pneumocxr._version import __version__
from pneumocxr.errors import PneumoCXRError
from pneumocxr.inference import PredictorBase
from pneumocxr.serving import errors, explain_route, page
from pneumocxr.serving.auth import key_checker
from pneumocxr.serving.limits import Admission, BodyLimit, BodyTooLarge, too_large
from pneumocxr.serving.metrics import Metrics
from pneumocxr.serving.model_info import model_card, model_info
from pneumocxr.serving.model_loading import load_for_serving
from pneumocxr.serving.referral import Referral
from pneumocxr.serving.settings import ServeSettings
from pneumocxr.serving.uploads import read_image_body
from pneumocxr.store import Store, open_store
from pneumocxr.store.audit import AuditEntry, AuditError, AuditLog, prediction_fields

logger = logging.getLogger(__name__)

ModelWork = Callable[[bytes], tuple[Any, Any]]  # image bytes → (PredictionResult, route-specific extra)


@dataclass
class ServiceState:
    settings: ServeSettings
    predictor: PredictorBase | None = None
    store: Store | None = None
    audit: AuditLog | None = None
    info: dict[str, Any] = field(default_factory=dict)
    referral: Referral | None = None
    explain_predictor: Any = None  # () -> the torch predictor /v1/explain maps with
    ready: bool = False
    card_looked_up: bool = False


def create_app(
    settings: ServeSettings, *, predictor: PredictorBase | None = None, store: Store | None = None
) -> FastAPI:
    """The app; ``predictor`` / ``store`` may be given (tests), else loaded in the lifespan."""
    state = ServiceState(settings.check(), predictor=predictor, store=store)
    metrics = Metrics()
    admission = Admission(
        settings.workers,
        settings.max_queue,
        on_change=metrics.queue_depth.set,
        on_reject=metrics.rejected.inc,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await anyio.to_thread.run_sync(_start, state)
        yield
        if state.store is not None and store is None:
            state.store.dispose()

    app = FastAPI(
        title="pneumocxr",
        version=__version__,
        description="Chest X-ray pneumonia classifier. Research use only, not a medical device.",
        lifespan=lifespan,
        # Swagger UI and ReDoc load their scripts from a CDN, which an offline hospital network cannot
        # reach: the schema is served (/openapi.json) for any local OpenAPI viewer instead.
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = state
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"]
        )
    require_key = key_checker(state)

    @app.middleware("http")
    async def request_id_and_metrics(request: Request, call_next):
        request.state.request_id = uuid.uuid4().hex
        started = time.perf_counter()
        metrics.in_flight.inc()
        try:
            response = await call_next(request)
        finally:
            metrics.in_flight.dec()
        # the matched route's template: a label per URL a scanner tries would grow the registry forever
        matched = request.scope.get("route")
        route = getattr(matched, "path", None) or "other"
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        response.headers["X-Request-ID"] = request.state.request_id
        return response

    @app.exception_handler(errors.ApiError)
    async def api_error(request: Request, exc: errors.ApiError):
        request_id = getattr(request.state, "request_id", None)
        return JSONResponse(errors.body(exc.code, exc.message, request_id), exc.status, headers=exc.headers)

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict:
        """Liveness: the process answers."""
        return {"status": "live"}

    @app.get("/readyz", tags=["probes"])
    async def readyz() -> JSONResponse:
        """Readiness: the model is loaded and warmed up, and the audit database is open."""
        if not state.ready:
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse({"status": "ready", "model": state.info["identity"]})

    @app.get("/metrics", tags=["probes"])
    async def prometheus() -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/model", tags=["model"])
    async def model(key_id: str | None = Depends(require_key)) -> dict:
        """What answers: identity (sha256), classes, operating point, intended use and the model card."""
        _ready(state)
        if state.info["model_card"] is None and not state.card_looked_up:
            identity = state.predictor.identity
            checkpoint_sha = identity.source_sha256 or identity.sha256
            state.info["model_card"] = await anyio.to_thread.run_sync(model_card, settings, checkpoint_sha)
            state.card_looked_up = True
        return state.info

    async def answer(request: Request, key_id: str | None, route: str, work: ModelWork) -> tuple[dict, Any]:
        """The shared path of every model route: read the image, run ``work(data)`` →
        (PredictionResult, extra) in a model slot within the time-out, audit, then fail or return
        (the prediction's JSON, extra)."""
        _ready(state)
        started = time.perf_counter()
        data, result, extra, failure = None, None, None, None
        try:  # every answer from here on, refusals included, is audited under its request id
            data = await read_image_body(request)
            result, extra = await asyncio.wait_for(admission.run(work, data), settings.timeout_s)
        except PneumoCXRError as exc:
            failure = errors.from_library(exc)
        except asyncio.TimeoutError:
            failure = errors.ApiError(
                504, "timeout", f"no answer within {settings.timeout_s:g} s; retry later"
            )
        except errors.ApiError as exc:
            failure = exc
        except BodyTooLarge:  # a chunked body that passed the limit while being read
            failure = too_large(settings.max_upload_bytes)
        except ClientDisconnect:  # nobody will read the answer; the row says what happened
            failure = errors.ApiError(400, "client_disconnected", "the client left before the upload ended")
        except Exception:  # a bug, not the input: logged here, audited, and answered without internals
            logger.exception("request %s failed", request.state.request_id)
            failure = errors.ApiError(
                500, "internal_error", "internal error; quote the request id to the service's operator"
            )
        latency_ms = 1000 * (time.perf_counter() - started)
        if result is not None:
            metrics.model_seconds.observe(result.timings_ms["total"] / 1000)
        await _audit(state, _entry(request, key_id, route, data, result, failure, latency_ms))
        if failure is not None:
            raise failure
        payload = {"request_id": request.state.request_id, **result.to_dict()}
        payload["uncertain_refer"] = state.referral.assess(result)
        payload["research_use_only"] = True
        return payload, extra

    @app.post("/v1/predict", tags=["predict"])
    async def predict(request: Request, key_id: str | None = Depends(require_key)) -> JSONResponse:
        """One image (multipart field ``file``, or the raw body as image/jpeg, image/png or
        application/dicom; the format is read from the content) → the prediction."""

        def work(data: bytes):
            return state.predictor.predict(data, refuse=settings.refuse), None

        payload, _ = await answer(request, key_id, "/v1/predict", work)
        return JSONResponse(payload)

    explain_route.register(app, state, require_key=require_key, answer=answer)
    page.register(app)
    return app


def _start(state: ServiceState) -> None:
    """Load the model and the database, warm the model up (first-call costs not paid by a user)."""
    settings = state.settings
    if state.store is None:
        state.store = open_store(settings.db)
    if state.predictor is None:
        import torch

        torch.set_num_threads(settings.cpu_threads())
        state.predictor, state.explain_predictor = load_for_serving(settings, settings.models_dir())
    elif state.explain_predictor is None:
        state.explain_predictor = lambda: state.predictor
    state.audit = AuditLog(state.store)
    size = state.predictor.preprocess.image_size
    warm = np.zeros((2 * size, 2 * size), dtype=np.uint8)
    for _ in range(2):
        state.predictor.predict(warm, refuse=())
    state.info = model_info(state.predictor, settings)
    state.referral = Referral(state.predictor)
    state.ready = True
    logger.info(
        "serving %s (%s) on %s:%d",
        state.info["identity"]["name"],
        settings.model,
        settings.host,
        settings.port,
    )


def _ready(state: ServiceState) -> None:
    if not state.ready:
        raise errors.ApiError(
            503, "loading", "the model is still loading; retry shortly", {"Retry-After": "2"}
        )


def _entry(request, key_id, route, data, result, failure, latency_ms) -> AuditEntry:
    import hashlib

    status = failure.status if failure is not None else 200
    fields: dict[str, Any] = {
        "request_id": request.state.request_id,
        "route": route,
        "status": status,
        "latency_ms": latency_ms,
        "key_id": key_id,
        "error_code": failure.code if failure is not None else None,
        "input_sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
        "input_bytes": len(data) if data is not None else None,
    }
    if result is not None:
        fields.update(prediction_fields(result))
    return AuditEntry(**fields)


async def _audit(state: ServiceState, entry: AuditEntry) -> None:
    """Write the row before the answer leaves; no row, no answer."""
    try:
        await anyio.to_thread.run_sync(state.audit.record, entry)
    except AuditError as exc:
        raise errors.ApiError(503, "audit_unavailable", f"{exc}; the answer was withheld") from None
    logger.info(
        "%s %s %d %.1f ms input %s",
        entry.request_id,
        entry.route,
        entry.status,
        entry.latency_ms,
        (entry.input_sha256 or "")[:12],
    )
