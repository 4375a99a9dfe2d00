"""Class activation maps for every registered model, on top of pytorch-grad-cam (``grad-cam``).

The library does the maths; this module adapts it to our models and makes it safe to call from a
pipeline or a server:

* **one-logit binary head**: explaining PNEUMONIA back-propagates +logit, explaining NORMAL
  back-propagates −logit (the library's ``BinaryClassifierOutputTarget``), so the two maps differ
  — the library's default (``argmax`` over a single column) would always explain "class 0";
* **target layer** from the model's spec (``model_spec(model).cam_layer``), never hard-coded;
* **frozen backbones** (``vgg16_transfer``, ``freeze_base``): their activations do not require
  grad, so the library would find no gradient; the input is made to require grad instead, and
  parameters are switched off (no ``.grad`` left on the caller's model, and faster);
* **state restored**: train/eval mode, ``requires_grad`` and any ``.grad`` the caller had; every
  forward hook is removed even when the computation fails (the library's context manager would
  swallow an IndexError with a print);
* **Score-CAM** is re-implemented around the library's class (``get_cam_weights`` only): the
  library materialises all masked copies at once (1.2 GB per 224-px image for resnet50), keeps
  the hooked activations of every masked batch and draws a tqdm bar; ours streams batches;
* **Eigen-CAM** is sign-corrected like the library's ``get_2d_projection_with_sign_correction``
  (the plain projection has an arbitrary SVD sign, which can flip the map between machines), with
  a thin SVD (see ``first_component``). Eigen-CAM is class-agnostic (no target): its NORMAL and
  PNEUMONIA maps are the same, by design.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pneumocxr.errors import ConfigError
from pneumocxr.explain._input import decide, probabilities
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import model_spec

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "scorecam", "eigencam")
CLASS_AGNOSTIC: frozenset[str] = frozenset({"eigencam"})  # the map ignores the target class
GRADIENT_METHODS: frozenset[str] = frozenset({"gradcam", "gradcam++"})
TARGETS: tuple[str, ...] = ("pneumonia", "normal", "predicted")


@dataclass(frozen=True)
class CamResult:
    """Maps for a batch, and what they explain."""

    maps: np.ndarray  # (N, S, S) float32 in [0, 1] at model-input resolution; all 0 = no evidence
    logits: np.ndarray  # (N, k) raw model outputs (k = 1 for the binary head)
    target_classes: tuple[str, ...]  # the class each map explains
    method: str
    layer: str  # dotted module name the map was taken from


def _library():
    """Import pytorch-grad-cam lazily: it pulls in OpenCV, which a CLI that does not explain
    should not pay for."""
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils import model_targets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            f"explanations need the 'grad-cam' package ({exc}); install it with: pip install grad-cam"
        ) from None
    return pytorch_grad_cam, model_targets


@functools.cache
def _method_class(method: str):
    lib, _ = _library()

    class StreamingScoreCAM(lib.ScoreCAM):
        """Score-CAM (Wang et al. 2020) whose masked inputs are built and scored one batch at a time."""

        batch_size = 32

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
            with torch.no_grad():
                acts = torch.from_numpy(activations).to(self.device)  # (N, K, h, w)
                masks = nn.functional.interpolate(
                    acts, size=input_tensor.shape[-2:], mode="bilinear", align_corners=True
                )  # (N, K, S, S), as the library's UpsamplingBilinear2d
                flat = masks.flatten(2)  # (N, K, S·S)
                lo, hi = flat.min(-1).values[..., None, None], flat.max(-1).values[..., None, None]
                masks = (masks - lo) / (hi - lo + 1e-8)
                weights = []
                for image, image_masks, target in zip(input_tensor, masks, targets):
                    scores = []
                    for start in range(0, image_masks.shape[0], self.batch_size):
                        batch = (
                            image[None] * image_masks[start : start + self.batch_size, None]
                        )  # (b, C, S, S)
                        scores.extend(float(target(out)) for out in self.model(batch))
                        self.activations_and_grads.activations.clear()  # hooked copies of masked batches
                    weights.append(torch.softmax(torch.tensor(scores), 0))
                return torch.stack(weights).numpy()  # (N, K)

    class SignedEigenCAM(lib.EigenCAM):
        """Eigen-CAM (Muhammad & Yeasin 2020) with the SVD sign fixed (salient side positive)."""

        def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth):
            return first_component(activations)

    classes = {
        "gradcam": lib.GradCAM,
        "gradcam++": lib.GradCAMPlusPlus,
        "scorecam": StreamingScoreCAM,
        "eigencam": SignedEigenCAM,
    }
    return classes[method]


def first_component(activations: np.ndarray) -> np.ndarray:
    """(N, K, h, w) → (N, h, w): projection of each image's centred activations on their first
    principal component, sign-corrected so the larger-magnitude side is positive.

    The same numbers as the library's ``get_2d_projection_with_sign_correction`` (A·v₁ = u₁·σ₁),
    but a thin SVD: the library asks for the full K×K matrix V, which for resnet50's 2048 channels
    costs seconds per image, for one row of it.
    """
    maps = []
    for act in np.nan_to_num(np.asarray(activations, dtype=np.float32)):
        flat = act.reshape(act.shape[0], -1).T  # (h·w, K)
        flat = flat - flat.mean(axis=0)
        u, s, _ = np.linalg.svd(flat, full_matrices=False)
        projection = (u[:, 0] * s[0]).reshape(act.shape[1:])  # (h, w)
        if abs(projection.min()) > abs(projection.max()):
            projection = -projection
        maps.append(projection)
    return np.asarray(maps, dtype=np.float32)


def check_method(method: str) -> str:
    """``method`` if known, else a ConfigError listing the choices."""
    if method not in METHODS:
        raise ConfigError(f"explanation method {method!r} is not known; use one of {', '.join(METHODS)}")
    return method


def target_layer(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Module]:
    """(name, module) of the layer to explain: ``layer`` or the model spec's ``cam_layer``."""
    name = layer or model_spec(model).cam_layer
    try:
        return name, model.get_submodule(name)
    except AttributeError:
        raise ConfigError(f"model has no layer {name!r}; pass a dotted module name it has") from None


def resolve_targets(
    logits: torch.Tensor,
    target: str | Sequence[str],
    class_names: Sequence[str] = CLASS_NAMES,
    threshold: float = 0.5,
    temperature: float = 1.0,
) -> tuple[str, ...]:
    """The class name each image's map explains.

    ``target``: a class name (case-insensitive; "pneumonia", "normal"), "predicted" (the class the
    decision rule picks: calibrated P(positive) >= threshold for a binary head, else argmax), or
    one class name per image.
    """
    names = [str(c) for c in class_names]
    count = logits.shape[0]
    if isinstance(target, str):
        if target.lower() == "predicted":
            _, calibrated = probabilities(logits, temperature)
            return tuple(names[int(i)] for i in decide(calibrated, threshold))
        target = [target] * count
    if len(target) != count:
        raise ConfigError(f"{len(target)} targets given for {count} images; give one per image")
    upper = {n.upper(): n for n in names}
    resolved = []
    for item in target:
        if str(item).upper() not in upper:
            choices = ", ".join([*(n.lower() for n in names), "predicted"])
            raise ConfigError(
                f"explanation target {item!r} is not a class of this model; use one of {choices}"
            )
        resolved.append(upper[str(item).upper()])
    return tuple(resolved)


def _library_target(class_name: str, class_names: Sequence[str], outputs: int):
    _, targets = _library()
    index = [str(c) for c in class_names].index(class_name)
    if outputs == 1:
        # +logit for class 1 (PNEUMONIA), −logit for class 0 (NORMAL)
        return targets.BinaryClassifierOutputTarget(index)
    return targets.ClassifierOutputTarget(index)


@contextlib.contextmanager
def _explaining(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters for the duration; the caller's state restored after."""
    was_training = model.training
    params = list(model.parameters())
    saved = [(p.requires_grad, p.grad) for p in params]
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, (requires_grad, grad) in zip(params, saved):
            p.requires_grad_(requires_grad)
            p.grad = grad
        model.train(was_training)


def compute_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    method: str = "gradcam",
    target: str | Sequence[str] = "predicted",
    class_names: Sequence[str] = CLASS_NAMES,
    threshold: float = 0.5,
    temperature: float = 1.0,
    layer: str | None = None,
) -> CamResult:
    """Maps of ``method`` for a batch of model inputs (N, C, S, S), normalised as the model expects.

    Deterministic for a given model and input on one device. Leaves no hook on the model.
    """
    check_method(method)
    if inputs.ndim != 4:
        raise ValueError(f"compute_cam needs an (N, C, H, W) batch, got shape {tuple(inputs.shape)}")
    layer_name, module = target_layer(model, layer)
    device = next(model.parameters()).device
    inputs = inputs.detach().to(device)
    with _explaining(model):
        with torch.no_grad():
            logits = model(inputs)  # (N, k)
        if logits.ndim != 2:
            raise ConfigError(f"model output has shape {tuple(logits.shape)}; expected (N, classes) logits")
        names = resolve_targets(logits, target, class_names, threshold, temperature)
        targets = [_library_target(n, class_names, logits.shape[1]) for n in names]
        cam = _method_class(method)(model, [module])
        try:
            x = inputs.clone().requires_grad_(method in GRADIENT_METHODS)
            maps = cam(x, targets)  # (N, S, S), each min-max scaled by the library
        finally:
            cam.activations_and_grads.release()
    maps = np.clip(np.nan_to_num(np.asarray(maps, dtype=np.float32)), 0.0, 1.0)
    empty = int((maps.reshape(len(maps), -1).max(1) <= 0).sum())
    if empty:
        logger.info(
            "%d of %d %s maps are empty: no positive evidence at %s", empty, len(maps), method, layer_name
        )
    return CamResult(maps, logits.detach().float().cpu().numpy(), names, method, layer_name)
