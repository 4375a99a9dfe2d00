"""``explain_images``: Grad-CAM family maps of a model's predictions, as arrays (the maps of
``pneumocxr explain`` and of the HTTP API's ``/v1/explain``, from ``PredictionExplainer``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ExplainedImage", "explain_images"]

Source = str | os.PathLike | bytes | np.ndarray


@dataclass(frozen=True, eq=False)
class ExplainedImage:
    """One explained image: the ``prediction`` and the map of ``target_class`` as arrays —
    ``raw_map`` at model-input resolution, ``heatmap`` and the RGB ``overlay`` on the film in its own
    geometry — and ``figure()`` to look at it.

    Example:
        >>> item.raw_map.shape, item.overlay.shape  # doctest: +SKIP
        ((224, 224), (1024, 1400, 3))
    """

    source: str  # the file, or "bytes" / "array"
    prediction: Any  # the PredictionResult: label, probabilities, threshold, scope warnings …
    target_class: str  # the class the map explains
    method: str
    layers: tuple[str, ...]  # the layer explained, per model (one per ensemble member)
    image: np.ndarray  # (H, W) float32 in [0, 1]: the film at full resolution, as the model decoded it
    heatmap: np.ndarray  # (H, W) float32 in [0, 1]: the map on the film (1 = strongest in this image)
    raw_map: np.ndarray  # (S, S) float32 at model-input resolution (what explain's NAME.cam.npy holds)
    overlay: np.ndarray  # (H, W, 3) uint8: the film with the coloured map blended on top

    def figure(self, *, max_side: int = 512) -> Any:
        """The overlay as a matplotlib Figure with a colour bar and the prediction in its title (the
        long side drawn at most ``max_side`` pixels)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from pneumocxr.explain.overlay import COLORBAR_LABEL, draw_overlay, for_display

        image, cam = for_display(self.image, self.heatmap, max_side)
        fig = Figure(figsize=(image.shape[1] / 100 + 1.2, image.shape[0] / 100 + 0.7), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        artist = draw_overlay(ax, image, cam)
        p = self.prediction.probabilities.get(self.prediction.class_names[-1], float("nan"))
        name = Path(self.source).name if self.source not in ("bytes", "array") else self.source
        ax.set_title(
            f"{name}: {self.prediction.label} (P({self.prediction.class_names[-1]}) = {p:.3f})\n"
            f"{self.method} for {self.target_class}",
            fontsize=9,
        )
        fig.colorbar(artist, ax=ax, fraction=0.05, pad=0.02, label=COLORBAR_LABEL)
        return fig

    def __repr__(self) -> str:
        h, w = self.image.shape
        return (
            f"ExplainedImage({self.source}: {self.prediction.label}, {self.method} map of "
            f"{self.target_class}, {w}×{h})"
        )


def _sources(images: Source | Sequence[Source]) -> list[tuple[str, Any]]:
    """(display name, what ``load_input`` reads) per image; folders expand to their image files."""
    from pneumocxr.data.image_files import collect_inputs

    if isinstance(images, (bytes, bytearray)):
        return [("bytes", bytes(images))]
    if isinstance(images, np.ndarray):
        return [("array", images)]
    items = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    out: list[tuple[str, Any]] = []
    for item in items:
        if isinstance(item, (bytes, bytearray)):
            out.append(("bytes", bytes(item)))
        elif isinstance(item, np.ndarray):
            out.append(("array", item))
        else:
            out += [(str(p), p) for p in collect_inputs([item])]
    return out


def _target(name: str, predicted: str, class_names: Sequence[str]) -> str:
    from pneumocxr.errors import ConfigError

    if name.lower() == "predicted":
        return predicted
    for c in class_names:
        if c.lower() == name.lower():
            return c
    raise ConfigError(f"target={name!r}; use 'predicted' or a class of this model: {', '.join(class_names)}")


def explain_images(
    model: str | os.PathLike | Any,
    images: Source | Sequence[Source],
    *,
    method: str = "gradcam",
    target: str = "predicted",
    device: str = "cpu",
    refuse: Sequence[str] | None = None,
) -> list[ExplainedImage]:
    """Predict each image and explain it with a Grad-CAM family map (the maps ``pneumocxr explain``
    and the HTTP API's ``/v1/explain`` draw), returned as arrays.

    Each input is decoded once and predicted exactly as ``Predictor.predict`` does (scope checks
    included); the map is computed on a private copy of the model, then put back into the film's
    own geometry. An ensemble's map is the mean of its members' maps for the ensemble's decision.
    To write the CLI's files (overlay PNG, ``.cam.npy``, JSON per image) use
    ``pneumocxr.explain.explain_images``.

    Args:
        model: a checkpoint, run folder or ensemble file, or a loaded torch ``Predictor``
            (``load_predictor(..., runtime="torch")``); an ONNX model has no gradients to explain.
        images: a file, a folder (its images, recursively), bytes, a 2-D array, or a list of them.
        method: gradcam (default), gradcam++, scorecam (slow on CPU) or eigencam (class-agnostic).
        target: "predicted" (default: the class the model decided) or a class name, e.g. "pneumonia".
        device: where a model given as a path is loaded (cpu, cuda, auto).
        refuse: scope warning codes that raise instead of being reported (None: the default policy).

    Returns:
        One ``ExplainedImage`` per image, in input order: ``prediction``, ``image``, ``heatmap`` (the
        map on the film), ``raw_map`` (model-input resolution), ``overlay`` (RGB uint8), ``figure()``.

    Raises:
        ExplainUnavailable: the model runs no torch module (an ONNX model). ConfigError: an unknown
        method or target. UnsupportedImageError: an image cannot be decoded. OutOfScopeError: an
        input the scope policy refuses. CheckpointError: a missing or unreadable checkpoint.

    Example:
        >>> [item] = pneumocxr.explain_images("runs/cpu_fast", "film.jpeg")  # doctest: +SKIP
        >>> item.prediction.label, item.raw_map.shape, item.overlay.shape  # doctest: +SKIP
        ('PNEUMONIA', (224, 224), (1024, 1400, 3))
    """
    from pneumocxr.explain.cam import check_method
    from pneumocxr.explain.overlay import blend
    from pneumocxr.explain.prediction_map import PredictionExplainer
    from pneumocxr.inference import PredictorBase, load_predictor
    from pneumocxr.inference.inputs import load_input

    check_method(method)
    sources = _sources(images)
    if isinstance(model, PredictorBase):
        predictor = model
    else:
        from pneumocxr.workflows import resolve_checkpoint

        predictor = load_predictor(resolve_checkpoint(model), device=device, runtime="torch")
    explainer = PredictionExplainer(predictor, method=method)
    explained = []
    for name, source in sources:
        loaded = load_input(source)
        result = predictor.predict(loaded, refuse=refuse)
        chosen = _target(target, result.label, result.class_names)
        m = explainer.explain(loaded, chosen)
        explained.append(
            ExplainedImage(
                source=name,
                prediction=result,
                target_class=chosen,
                method=method,
                layers=m.layers,
                image=m.image,
                heatmap=m.aligned,
                raw_map=m.raw,
                overlay=blend(m.image, m.aligned),
            )
        )
    return explained
