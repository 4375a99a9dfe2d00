"""ROAD — RemOve And Debias (Rong et al., ICML 2022), on top of pytorch-grad-cam's implementation.

Deletion/insertion (``sanity.deletion_insertion``) replace pixels by a blurred copy; the shape of
what was removed then leaks class information and the mixed image is out of distribution, so a
pixel-scattered random order and a blob-shaped map are not compared on equal terms. ROAD imputes
removed pixels by *noisy linear imputation* (each removed pixel the weighted mean of its
neighbours, solved as one sparse linear system, plus small noise) and scores

* MoRF: remove the most relevant p % and measure the drop of the explained class's probability
  (more negative = better), averaged over ``percentiles``;
* LeRF: remove the least relevant p % (closer to 0 = better);
* combined = (LeRF − MoRF) / 2 (higher = better), as the library's ``ROADCombined``.

The metric classes are the library's (``PerturbationConfidenceMetric``, ``RemoveMostRelevantFirst``,
``RemoveLeastRelevantFirst``; the percentile average of ``AveragerAcrossThresholds`` is redone so
the clean image is scored once, not once per percentile) and so is the imputation's equation
system and noise; only its assembly and solve are faster (``FastNoisyLinearImputer``). Two details the
library leaves to the caller:

* **ties**: the library keeps pixels with ``map < percentile(map, p)``; a Grad-CAM map with 40 %
  exact zeros would lose all of them at once. Maps are replaced by their ranks with random
  tie-breaking (``rank_maps``) so p % means p % of the pixels;
* **score**: the probability of the explained class (sigmoid of ±logit for a one-logit head, the
  softmax otherwise), not the raw logit the library's ``BinaryClassifierOutputTarget`` returns,
  so numbers compare with deletion/insertion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pneumocxr.labels import CLASS_NAMES

PERCENTILES: tuple[int, ...] = (10, 30, 50, 70, 90)  # the library's default is 10, 20, …, 90


def _library():
    from pytorch_grad_cam.metrics import perturbation_confidence, road

    return perturbation_confidence, road


def _fast_imputer_class():
    _, road = _library()
    from scipy import sparse
    from scipy.sparse.linalg import splu

    class FastNoisyLinearImputer(road.NoisyLinearImputer):
        """The library's noisy linear imputer with the same equations and noise, built as a COO
        matrix (the library's ``lil_matrix`` costs ~0.4 s per 224-px call) and solved with a
        symmetric-mode LU (the system is symmetric: neighbour weights are)."""

        @staticmethod
        def setup_sparse_system(mask, img, neighbors_weights):
            flat_mask = mask.flatten()
            flat_img = img.reshape((img.shape[0], -1))  # (C, H·W)
            missing = np.argwhere(flat_mask == 0).flatten()
            to_var = np.zeros(len(flat_mask), dtype=int)
            to_var[missing] = np.arange(len(missing))
            count = len(missing)
            rows, cols, vals = [], [], []
            b = np.zeros((count, img.shape[0]))
            total = np.ones(count)
            for offset, weight in neighbors_weights:
                valid, coords = road.NoisyLinearImputer.add_offset_to_indices(missing, offset, mask.shape)
                coords, ids = coords[valid], np.argwhere(valid == 1).flatten()
                known = flat_mask[coords] > 0.5
                b[ids[known], :] -= weight * flat_img[:, coords[known]].T
                unknown = flat_mask[coords] < 0.5
                rows.append(ids[unknown])
                cols.append(to_var[coords[unknown]])
                vals.append(np.full(int(unknown.sum()), weight))
                total[np.argwhere(valid == 0).flatten()] -= weight
            rows.append(np.arange(count))
            cols.append(np.arange(count))
            vals.append(-total)
            shape = (count, count)
            matrix = sparse.csc_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape
            )
            return matrix, b

        def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            flat = img.reshape(img.shape[0], -1).clone()  # (C, H·W)
            missing = np.argwhere(mask.reshape(-1).numpy() == 0).flatten()
            if len(missing) == 0:
                return img.clone()
            matrix, b = self.setup_sparse_system(mask.numpy(), img.numpy(), self.weighting)
            lu = splu(matrix, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
            solution = torch.tensor(lu.solve(b), dtype=img.dtype).t()  # (C, missing)
            flat[:, missing] = solution + self.noise * torch.randn_like(solution)
            return flat.reshape_as(img)

    return FastNoisyLinearImputer


def rank_maps(maps: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, S, S) maps → their pixel ranks scaled to [0, 1], ties broken at random (seeded):
    the same order, no two pixels equal."""
    rng = np.random.default_rng(seed)
    out = np.empty(maps.shape, dtype=np.float32)
    for i, cam in enumerate(np.asarray(maps, dtype=np.float64)):
        flat = cam.ravel()
        order = np.lexsort((rng.random(flat.size), flat))  # by value, ties by a random key
        ranks = np.empty(flat.size, dtype=np.float64)
        ranks[order] = np.arange(flat.size)
        out[i] = (ranks / max(flat.size - 1, 1)).reshape(cam.shape)
    return out


class ClassProbability:
    """A pytorch-grad-cam target: the probability of one class from a model output row."""

    def __init__(self, index: int):
        self.index = index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.shape[-1] == 1:
            p = torch.sigmoid(output[..., 0])
            return p if self.index == 1 else 1 - p
        return torch.softmax(output, -1)[..., self.index]


@dataclass(frozen=True)
class RoadScores:
    """Per image: mean probability change over the percentiles (after − before)."""

    morf: np.ndarray  # (N,) most relevant removed first: more negative = better
    lerf: np.ndarray  # (N,) least relevant removed first: closer to 0 = better
    combined: np.ndarray  # (N,) (lerf − morf) / 2: higher = better


def road_scores(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: np.ndarray,
    target_classes: Sequence[str],
    class_names: Sequence[str] = CLASS_NAMES,
    *,
    percentiles: Sequence[int] = PERCENTILES,
    noise: float = 0.01,
    seed: int = 0,
) -> RoadScores:
    """ROAD MoRF/LeRF/combined of ``maps`` (N, S, S) for ``inputs`` (N, C, S, S) as the model sees them.

    Maps are rank-transformed first (``rank_maps``); the imputation noise is drawn from a private,
    seeded torch generator state (the caller's global RNG is left as it was).
    """
    confidence, _ = _library()
    imputer = _fast_imputer_class()(noise=noise)
    names = [str(c) for c in class_names]
    targets = [ClassProbability(names.index(t)) for t in target_classes]
    ranked = rank_maps(maps, seed)
    device = next(model.parameters()).device
    x = inputs.detach().to(device)

    def averaged(removal, before: np.ndarray) -> np.ndarray:
        """The library's ``AveragerAcrossThresholds`` with ``return_diff``, the clean score computed
        once instead of once per percentile."""
        after = [
            confidence.PerturbationConfidenceMetric(removal(p, imputer))(
                x, ranked, targets, model, return_diff=False
            )
            for p in percentiles
        ]
        return np.mean(np.asarray(after, dtype=np.float64), axis=0) - before

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            before = np.asarray([float(t(out)) for t, out in zip(targets, model(x))], dtype=np.float64)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            morf = averaged(confidence.RemoveMostRelevantFirst, before)
            lerf = averaged(confidence.RemoveLeastRelevantFirst, before)
    finally:
        model.train(was_training)
    return RoadScores(morf, lerf, (lerf - morf) / 2)
