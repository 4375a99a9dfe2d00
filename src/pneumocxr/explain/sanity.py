"""Do the maps mean anything? Two checks from the literature.

* **Model-parameter randomisation** (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS
  2018): re-initialise the network's weights, top (classifier) down, cumulatively ("cascading"),
  and compare each map with the trained model's. A method whose maps survive randomisation
  explains the image (an edge detector would), not the model. Similarity is reported as the
  Spearman rank correlation and SSIM of the two maps (low = the check passes).
* **Faithfulness** by deletion and insertion AUC (Petsiuk et al., RISE, BMVC 2018): remove the most
  relevant pixels first and watch the explained class's probability fall (deletion: lower AUC is
  better), or add them first to a blurred image and watch it rise (insertion: higher is better).
  Both use a blurred copy of the image as the "removed" state: a constant fill is far from
  anything the model saw in training and drops the probability whatever the order.

SSIM is our own (Wang et al. 2004, Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, data range 1,
border of the window cropped): the conventions of ``skimage.metrics.structural_similarity`` with
``gaussian_weights=True, use_sample_covariance=False``, without adding scikit-image as a
dependency for one function.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage, stats
from torch import nn

from pneumocxr.explain._input import probabilities
from pneumocxr.explain.cam import compute_cam, resolve_targets
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import model_spec

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Mean structural similarity of two same-shape 2-D maps (see module docstring)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim needs two same-shape 2-D maps, got {a.shape} and {b.shape}")
    blur = lambda x: ndimage.gaussian_filter(x, sigma, truncate=3.5)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    pad = int(3.5 * sigma + 0.5)  # half the window: where the filter saw the reflected border
    inner = index[pad:-pad, pad:-pad] if min(a.shape) > 2 * pad else index
    return float(inner.mean())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps' pixels; NaN when either map is constant."""
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


@dataclass(frozen=True)
class RandomizationRow:
    """Trained vs randomised maps at one stage of the cascade, averaged over images."""

    stage: str  # what is randomised so far, e.g. "classifier", "top 50% of layers"
    modules_randomized: int
    spearman: float  # mean over images whose maps are not constant (NaN if none)
    ssim: float  # mean over all images
    constant_maps: int  # randomised maps that came out constant (e.g. all 0: no evidence left)
    spearman_per_image: tuple[float, ...] = ()  # NaN where a map is constant
    ssim_per_image: tuple[float, ...] = ()


def randomization_stages(model: nn.Module, fractions: Sequence[float] = (0.25, 0.5, 1.0)) -> list:
    """Cascading stages [(label, module names)]: the classifier, then the top ``fractions`` of the
    other parameterised layers as well (top = nearest the output), cumulatively."""
    head_prefix = model_spec(model).classifier
    layers = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    head = [n for n in layers if n == head_prefix or n.startswith(head_prefix + ".")]
    body = [n for n in layers if n not in head][::-1]  # registration order reversed: top first
    stages = [("classifier", head)]
    for fraction in fractions:
        count = max(1, round(fraction * len(body)))
        stages.append((f"classifier + top {fraction:.0%} of layers", head + body[:count]))
    return stages


def randomized_copy(model: nn.Module, module_names: Sequence[str], seed: int = 0) -> nn.Module:
    """A deep copy with ``module_names`` re-initialised: normalisation layers reset to identity,
    weights drawn as PyTorch's default (Kaiming-uniform, a=√5) from a private generator."""
    clone = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    for name in module_names:
        module = clone.get_submodule(name)
        if isinstance(module, _NORMS):
            module.reset_parameters()  # weight 1, bias 0, running stats reset: no randomness needed
            continue
        weight = getattr(module, "weight", None)
        fan_in = weight[0].numel() if isinstance(weight, torch.Tensor) and weight.ndim > 1 else 1
        with torch.no_grad():
            for param in module.parameters(recurse=False):
                fresh = torch.empty(param.shape, dtype=param.dtype)
                if param.ndim > 1:
                    nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=generator)
                else:
                    bound = 1 / math.sqrt(fan_in)
                    nn.init.uniform_(fresh, -bound, bound, generator=generator)
                param.copy_(fresh)
    return clone


def randomization_test(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    method: str = "gradcam",
    target: str | Sequence[str] = "predicted",
    class_names: Sequence[str] = CLASS_NAMES,
    threshold: float = 0.5,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[RandomizationRow]:
    """Compare the trained model's maps with each cascading-randomisation stage's maps.

    The explained classes are fixed from the trained model, so a randomised model explains the
    same class and only the weights differ.
    """
    trained = compute_cam(
        model, inputs, method=method, target=target, class_names=class_names, threshold=threshold,
        temperature=temperature,
    )  # fmt: skip
    targets = list(trained.target_classes)
    rows = []
    for label, names in randomization_stages(model):
        random_model = randomized_copy(model, names, seed)
        maps = compute_cam(random_model, inputs, method=method, target=targets, class_names=class_names).maps
        rhos = [spearman(a, b) for a, b in zip(trained.maps, maps)]
        ssims = [ssim(a, b) for a, b in zip(trained.maps, maps)]
        rows.append(summarize_stage(label, len(names), rhos, ssims))
    return rows


def summarize_stage(
    label: str, modules: int, rhos: Sequence[float], ssims: Sequence[float]
) -> RandomizationRow:
    """One row from per-image similarities (also used to merge batches)."""
    valid = [r for r in rhos if not math.isnan(r)]
    return RandomizationRow(
        stage=label,
        modules_randomized=modules,
        spearman=float(np.mean(valid)) if valid else math.nan,
        ssim=float(np.mean(ssims)) if len(ssims) else math.nan,
        constant_maps=len(rhos) - len(valid),
        spearman_per_image=tuple(float(r) for r in rhos),
        ssim_per_image=tuple(float(v) for v in ssims),
    )


@dataclass(frozen=True)
class Faithfulness:
    """Deletion and insertion AUC per image (probability of the explained class vs fraction)."""

    deletion_auc: np.ndarray  # (N,) lower = the map found what the decision rests on
    insertion_auc: np.ndarray  # (N,) higher = the same, from the other side
    curves_deletion: np.ndarray  # (N, steps + 1) the probabilities along the way
    curves_insertion: np.ndarray


def blurred(inputs: torch.Tensor) -> torch.Tensor:
    """The "information removed" image: Gaussian blur with σ = side / 16, per channel."""
    sigma = inputs.shape[-1] / 16
    array = inputs.detach().cpu().numpy()
    out = ndimage.gaussian_filter(array, sigma=(0, 0, sigma, sigma), mode="reflect")
    return torch.from_numpy(out).to(inputs.device, inputs.dtype)


def deletion_insertion(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: np.ndarray,
    target_classes: Sequence[str],
    class_names: Sequence[str] = CLASS_NAMES,
    *,
    steps: int = 16,
    baseline: torch.Tensor | None = None,
    ties: str = "random",
    seed: int = 0,
) -> Faithfulness:
    """Deletion/insertion curves over ``steps`` equal fractions of pixels, most relevant first.

    ``baseline``: the "removed" image (N, C, S, S) as the model sees it; default ``blurred(inputs)``.
    ``ties``: equal map values are taken in a random (``seed``ed) order, or in pixel order
    ("raster", the first version): Grad-CAM maps are 40–90 % exact zeros, and a raster order
    deletes them as one top-to-bottom sweep — a blob, which this model tolerates far better than
    scattered pixels (bench/explain.py, docs/RESULTS.md).
    """
    if ties not in ("random", "raster"):
        raise ValueError(f"ties={ties!r}; use 'random' or 'raster'")
    rng = np.random.default_rng(seed)
    if maps.shape[0] != inputs.shape[0] or maps.shape[1:] != inputs.shape[-2:]:
        raise ValueError(f"maps {maps.shape} do not match inputs {tuple(inputs.shape)}")
    names = resolve_targets(torch.zeros(len(target_classes), 1), target_classes, class_names)
    device = next(model.parameters()).device
    inputs = inputs.detach().to(device)
    base = blurred(inputs) if baseline is None else baseline.detach().to(device, inputs.dtype)
    if base.shape != inputs.shape:
        raise ValueError(f"baseline {tuple(base.shape)} does not match inputs {tuple(inputs.shape)}")
    pixels = inputs.shape[-1] * inputs.shape[-2]
    counts = [round(pixels * k / steps) for k in range(steps + 1)]
    was_training = model.training
    model.eval()
    deletion, insertion = [], []
    try:
        for x, b, cam, name in zip(inputs, base, maps, names):
            flat = -cam.ravel()
            keys = (rng.random(flat.size), flat) if ties == "random" else (np.arange(flat.size), flat)
            order = torch.from_numpy(np.lexsort(keys).copy()).to(device)  # most relevant first
            ranks = torch.empty_like(order)
            ranks[order] = torch.arange(order.numel(), device=device)  # pixel → position in the order
            first = torch.stack([ranks < c for c in counts]).view(-1, 1, *cam.shape)  # (steps+1, 1, S, S)
            deleted = torch.where(first, b, x)  # (steps+1, C, S, S)
            inserted = torch.where(first, x, b)
            with torch.no_grad():
                logits = model(torch.cat([deleted, inserted]))
            _, probs = probabilities(logits, 1.0)
            score = probs[:, list(class_names).index(name)]
            deletion.append(score[: steps + 1])
            insertion.append(score[steps + 1 :])
    finally:
        model.train(was_training)
    grid = np.linspace(0.0, 1.0, steps + 1)
    dele, ins = np.array(deletion), np.array(insertion)
    return Faithfulness(np.trapezoid(dele, grid, axis=1), np.trapezoid(ins, grid, axis=1), dele, ins)
