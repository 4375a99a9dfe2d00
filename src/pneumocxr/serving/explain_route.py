"""``POST /v1/explain``: the prediction plus a Grad-CAM map of the decided class, on the film.

Same input, key, admission, time-out and audit as ``/v1/predict`` (through the app's shared
``answer`` path; the audit row's route is ``/v1/explain``). The map is computed by
``explain.PredictionExplainer`` (single checkpoints, ensembles — members' maps averaged —,
MC-dropout and TTA models); a predictor with no torch model (ONNX Runtime) answers 501.

Answer (JSON): the ``/v1/predict`` fields, plus
``overlay_png`` — base64 PNG of the film with the coloured map blended on top, in the image's
ORIGINAL geometry (its full width × height unless ``max_side`` asks for a smaller copy, aspect kept);
``explanation`` — method, the class explained, layers, whether the map is empty, the PNG sizes;
with ``layers=true``: ``film_png`` (8-bit gray film as decoded — how the page shows a DICOM) and
``heatmap_png`` (the coloured map alone) in the same geometry, for a viewer with its own opacity;
with ``raw=true``: ``raw_map`` — the float32 map at model-input resolution (base64 little-endian
bytes + shape, row-major; values in [0, 1], 1 = strongest evidence in this image).
``format=png`` answers the overlay PNG itself (``image/png``), decision in ``X-Decision``.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from pneumocxr.explain.geometry import display_size
from pneumocxr.explain.overlay import ALPHA, CMAP
from pneumocxr.explain.prediction_map import ExplainUnavailable, PredictionExplainer
from pneumocxr.serving.errors import ApiError


def register(app: FastAPI, state: Any, *, require_key: Callable, answer: Callable) -> None:
    """Add ``POST /v1/explain`` to ``app``; ``answer`` is the app's shared model path."""
    held: dict[str, PredictionExplainer | ExplainUnavailable] = {}

    def explainer() -> PredictionExplainer:
        """The predictor's explainer, built on first use (501 if it cannot explain)."""
        if "explainer" not in held:
            try:
                held["explainer"] = PredictionExplainer(state.explain_predictor())
            except ExplainUnavailable as exc:
                held["explainer"] = exc
        found = held["explainer"]
        if isinstance(found, ExplainUnavailable):
            raise ApiError(501, "explain_unavailable", str(found))
        return found

    @app.post("/v1/explain", tags=["predict"])
    async def explain(
        request: Request,
        raw: bool = Query(False, description="add the raw map (float32, model-input geometry)"),
        layers: bool = Query(False, description="add the film and the coloured map as separate PNGs"),
        format: Literal["json", "png"] = Query("json", description="png: answer the overlay PNG itself"),
        max_side: int | None = Query(
            None, ge=64, le=16384, description="scale the PNGs so the long side is at most this"
        ),
        key_id: str | None = Depends(require_key),
    ) -> Response:
        """One image (as for /v1/predict) → the prediction and a Grad-CAM map of the decided class
        in the image's original geometry (see the module docstring for the fields)."""
        if state.ready:  # while loading, ``answer`` says 503
            explainer()
        refuse = state.settings.refuse

        def work(data: bytes) -> tuple[Any, dict[str, Any]]:
            result, cam = explainer().run(data, refuse=refuse)
            pngs = cam.layers_png(max_side=max_side)
            return result, {"cam": cam, "pngs": pngs}

        payload, extra = await answer(request, key_id, "/v1/explain", work)
        cam, pngs = extra["cam"], extra["pngs"]
        if format == "png":
            return Response(pngs["overlay"], media_type="image/png", headers={"X-Decision": payload["label"]})
        height, width = cam.image.shape
        shown = _png_size(cam.image.shape, max_side)
        payload["explanation"] = {
            "method": cam.method,
            "target_class": cam.target_class,
            "map_of": "the decided class",
            "layers": list(cam.layers),
            "map_empty": cam.empty,
            "image_size": {"width": width, "height": height},
            "png_size": {"width": shown[1], "height": shown[0]},
            "overlay_alpha": ALPHA,
            "colormap": CMAP,
        }
        payload["overlay_png"] = _b64(pngs["overlay"])
        if layers:
            payload["film_png"] = _b64(pngs["film"])
            payload["heatmap_png"] = _b64(pngs["heatmap"])
        if raw:
            values = np.ascontiguousarray(cam.raw, dtype="<f4")
            payload["raw_map"] = {
                "shape": list(values.shape),
                "dtype": "float32",
                "byte_order": "little",
                "geometry": cam.raw_geometry,
                "data_base64": _b64(values.tobytes()),
            }
        return JSONResponse(payload)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _png_size(shape: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """(height, width) of the PNGs: the image's, or scaled to ``max_side`` as ``layers_png`` does."""
    height, width = shape
    if max_side is None or max(height, width) <= max_side:
        return height, width
    return display_size(height, width, max_side)
