"""Grad-CAM of a loaded predictor's own answer: the map of the class it DECIDED, on the film.

What the HTTP API's ``/v1/explain`` stands on. ``PredictionExplainer(predictor).run(source)``
decodes the input once, predicts on it exactly as ``Predictor.predict`` does (scope checks and all),
then explains the decided class:

* a single checkpoint: its map, at model-input resolution, then put back in the original geometry
  (``geometry.to_original_geometry``: undoes the squash / letterbox);
* an ensemble: every member's map for the ENSEMBLE's decision, each brought to the original geometry
  with the member's own resize mode, then the equal-weight mean — as ``explain.ensemble`` does for
  files; the raw map is the mean at model-input resolution when every member shares one input;
* MC-dropout: the passes share one model, explained once with dropout off (a deterministic map);
  test-time augmentation: the wrapped model is explained on the plain view.

Grad-CAM needs gradients, forward hooks on a layer and eval mode, so it runs on private copies of the
models (made on the first call, then kept) and one at a time (a lock): a prediction running on the
same predictor in another thread never sees a hook, a dropout switch or a mode change. The copy
costs one more set of weights in memory (Lite0 14 MB; VGG16 0.5 GB) and only once something asks
for an explanation.

A predictor without torch modules (an ONNX Runtime session) cannot be explained:
``ExplainUnavailable``, raised at construction so a server can say so before reading an upload.
"""

from __future__ import annotations

import copy
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps
from PIL import Image
from torch import nn

from pneumocxr.errors import ConfigError, PneumoCXRError
from pneumocxr.explain._input import to_model_input
from pneumocxr.explain.cam import compute_cam, target_layer
from pneumocxr.explain.geometry import to_original_geometry
from pneumocxr.explain.overlay import ALPHA, CMAP, blend, for_display
from pneumocxr.inference import PredictionResult, Predictor, PredictorBase
from pneumocxr.inference.ensemble import EnsemblePredictor, TTAModel
from pneumocxr.inference.inputs import LoadedInput, load_input
from pneumocxr.models import CheckpointMeta

__all__ = ["ExplainUnavailable", "PredictionExplainer", "PredictionMap", "png_bytes"]


class ExplainUnavailable(PneumoCXRError):
    """This predictor cannot produce class activation maps (no torch model to take gradients of)."""


@dataclass(frozen=True)
class PredictionMap:
    """The map of one prediction's decided class."""

    image: np.ndarray  # (H, W) float32 in [0, 1]: the film at full resolution, as the model's decoder read it
    aligned: np.ndarray  # (H, W) float32 in [0, 1]: the map on the film (1 = strongest in this image)
    raw: np.ndarray  # (S, S) float32 at model-input resolution; (H, W) when ensemble inputs differ
    raw_geometry: str  # "model input" or "original image"
    target_class: str
    method: str
    layers: tuple[str, ...]  # the layer of each model explained

    @property
    def empty(self) -> bool:
        """No positive evidence anywhere (all-zero map)."""
        return bool(self.aligned.max() <= 0)

    def layers_png(self, *, alpha: float = ALPHA, max_side: int | None = None) -> dict[str, bytes]:
        """PNG bytes of the overlay (film + coloured map blended at ``alpha``), the film alone
        (8-bit gray) and the coloured map alone (RGB), all in the original geometry — at full size,
        or scaled so the long side is at most ``max_side`` (aspect kept)."""
        image, cam = self.image, self.aligned
        if max_side is not None and max(image.shape) > max_side:
            image, cam = for_display(image, cam, max_side)
        film = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)  # (H, W)
        heat = np.rint(colormaps[CMAP](np.clip(cam, 0.0, 1.0))[..., :3] * 255.0).astype(np.uint8)
        return {
            "overlay": png_bytes(blend(image, cam, alpha=alpha)),
            "film": png_bytes(film),
            "heatmap": png_bytes(heat),
        }


def png_bytes(pixels: np.ndarray) -> bytes:
    """(H, W) or (H, W, 3) uint8 → PNG bytes (fast compression: these are built per request)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class PredictionExplainer:
    """Predict and explain with one loaded predictor (see the module docstring)."""

    def __init__(self, predictor: PredictorBase, *, method: str = "gradcam"):
        self.predictor = predictor
        self.method = method
        self.parts = explainable_parts(predictor)
        self._lock = threading.Lock()
        self._models: list[nn.Module] | None = None

    def run(
        self, source: Any, *, refuse: Sequence[str] | None = None
    ) -> tuple[PredictionResult, PredictionMap]:
        """``predictor.predict(source, refuse=refuse)`` and the map of the class it decided."""
        loaded = load_input(source)
        result = self.predictor.predict(loaded, refuse=refuse)
        return result, self.explain(loaded, result.label)

    def explain(self, loaded: LoadedInput, target_class: str) -> PredictionMap:
        """The map of ``target_class`` for ``loaded``: one model's, or the members' mean."""
        image = loaded.pixels()
        height, width = image.shape
        maps, aligned, layers = [], [], []
        with self._lock:
            if self._models is None:
                self._models = [copy.deepcopy(model) for model, _ in self.parts]
            for model, (_, meta) in zip(self._models, self.parts):
                pre = meta.preprocess
                x = to_model_input(loaded.square(pre.image_size, pre.resize_mode)[None], pre)  # (1, C, S, S)
                cam = compute_cam(
                    model, x, method=self.method, target=[target_class], class_names=meta.class_names
                )
                maps.append(cam.maps[0])
                layers.append(cam.layer)
                aligned.append(to_original_geometry(cam.maps[0], height, width, pre.resize_mode))
        mean_aligned = np.mean(aligned, axis=0).astype(np.float32)  # (H, W)
        same_input = len({(m.preprocess.image_size, m.preprocess.resize_mode) for _, m in self.parts}) == 1
        return PredictionMap(
            image=image,
            aligned=mean_aligned,
            raw=np.mean(maps, axis=0).astype(np.float32) if same_input else mean_aligned,
            raw_geometry="model input" if same_input else "original image",
            target_class=target_class,
            method=self.method,
            layers=tuple(layers),
        )


def explainable_parts(predictor: PredictorBase) -> list[tuple[nn.Module, CheckpointMeta]]:
    """(model, its checkpoint meta) for each distinct torch model behind ``predictor``: one for a
    checkpoint (or MC-dropout: its passes share a model), one per ensemble member. TTA wrappers are
    unwrapped. ``ExplainUnavailable`` when there is none, or a model has no layer to explain."""
    if isinstance(predictor, EnsemblePredictor):
        members: Sequence[Any] = predictor.members
    elif isinstance(predictor, Predictor):
        members = [predictor]
    else:
        raise ExplainUnavailable(
            f"{type(predictor).__name__} runs no torch model, so it cannot produce Grad-CAM maps; "
            "serve the .pt checkpoint (or ensemble file) to get explanations"
        )
    parts, seen = [], set()
    for member in members:
        model = getattr(member, "model", None)
        if isinstance(model, TTAModel):
            model = model.model
        if not isinstance(model, nn.Module):
            raise ExplainUnavailable(
                f"{type(member).__name__} holds no torch model, so it cannot produce Grad-CAM maps"
            )
        if id(model) in seen:
            continue
        seen.add(id(model))
        try:
            target_layer(model)
        except (ConfigError, AttributeError, TypeError) as exc:
            raise ExplainUnavailable(f"{member.meta.model_name}: no layer to explain ({exc})") from None
        parts.append((model, member.meta))
    return parts
