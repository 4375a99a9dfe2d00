"""ROAD on pytorch-grad-cam: the faster imputer solves the library's system, ties are broken, a
faithful map beats its inverse, and the caller's random state is left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.road import NoisyLinearImputer

from pneumocxr.explain import compute_cam
from pneumocxr.explain.road import ClassProbability, _fast_imputer_class, rank_maps, road_scores
from pneumocxr.explain.sanity import deletion_insertion


@pytest.mark.parametrize("removed", [0.1, 0.6, 0.95])
def test_fast_imputer_gives_the_library_solution(removed):
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 24, 20, generator=generator)
    keep = (torch.rand(24, 20, generator=generator) > removed).float()
    expected = NoisyLinearImputer(noise=0.0)(image, keep)
    got = _fast_imputer_class()(noise=0.0)(image, keep)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert torch.equal(got[:, keep.bool()], image[:, keep.bool()])  # kept pixels untouched


def test_ranks_keep_the_order_and_break_ties():
    cam = np.zeros((1, 6, 6), np.float32)
    cam[0, 1:3, 1:3] = [[0.9, 0.5], [0.5, 0.2]]
    ranked = rank_maps(cam, seed=1)
    assert len(np.unique(ranked)) == 36 and ranked.min() == 0.0 and ranked.max() == 1.0
    assert ranked[0, 1, 1] == 1.0 and ranked[0, 2, 2] < min(ranked[0, 1, 2], ranked[0, 2, 1])
    assert (ranked[0][cam[0] == 0] < ranked[0, 2, 2]).all()
    assert not np.array_equal(rank_maps(cam, seed=2), ranked)  # ties: random, seeded
    np.testing.assert_array_equal(rank_maps(cam, seed=1), ranked)


def test_class_probability_of_a_one_logit_head():
    out = torch.tensor([[2.0]])
    assert ClassProbability(1)(out).item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert ClassProbability(0)(out).item() == pytest.approx(1 - torch.sigmoid(torch.tensor(2.0)).item())


def test_a_faithful_map_beats_its_inverse_and_global_rng_is_untouched(trained_tiny):
    model, x, y = trained_tiny
    positives = x[y == 1][:3]
    result = compute_cam(model, positives, method="gradcam", target="pneumonia")
    state = torch.get_rng_state()
    good = road_scores(model, positives, result.maps, result.target_classes, percentiles=[30, 70])
    bad = road_scores(model, positives, 1.0 - result.maps, result.target_classes, percentiles=[30, 70])
    assert torch.equal(torch.get_rng_state(), state)
    assert good.combined.shape == (3,) and np.allclose(good.combined, (good.lerf - good.morf) / 2)
    assert good.morf.mean() < bad.morf.mean() and good.combined.mean() > bad.combined.mean()
    again = road_scores(model, positives, result.maps, result.target_classes, percentiles=[30, 70])
    np.testing.assert_array_equal(again.combined, good.combined)  # seeded noise: reproducible


def test_deletion_takes_a_given_baseline(trained_tiny):
    model, x, _ = trained_tiny
    maps = compute_cam(model, x, method="gradcam", target="pneumonia").maps
    grey = torch.zeros_like(x)
    faith = deletion_insertion(model, x, maps, ["PNEUMONIA"] * len(x), steps=4, baseline=grey)
    with torch.no_grad():
        p_grey = torch.sigmoid(model(grey)[:, 0]).numpy()
    np.testing.assert_allclose(faith.curves_deletion[:, -1], p_grey, atol=1e-5)
    with pytest.raises(ValueError, match="baseline"):
        deletion_insertion(model, x, maps, ["PNEUMONIA"] * len(x), steps=4, baseline=grey[:2])


def test_deletion_breaks_ties_at_random_or_in_raster_order(trained_tiny):
    model, x, _ = trained_tiny
    flat = np.zeros((len(x), *x.shape[-2:]), np.float32)  # all ties: the order is all tie-breaking
    raster = deletion_insertion(model, x, flat, ["PNEUMONIA"] * len(x), steps=4, ties="raster")
    shuffled = deletion_insertion(model, x, flat, ["PNEUMONIA"] * len(x), steps=4)
    ranked = deletion_insertion(model, x, rank_maps(flat), ["PNEUMONIA"] * len(x), steps=4, ties="raster")
    assert not np.allclose(raster.curves_deletion, shuffled.curves_deletion)
    assert not np.allclose(raster.curves_deletion, ranked.curves_deletion)
    again = deletion_insertion(model, x, flat, ["PNEUMONIA"] * len(x), steps=4)
    np.testing.assert_array_equal(again.curves_deletion, shuffled.curves_deletion)  # seeded
    with pytest.raises(ValueError, match="ties"):
        deletion_insertion(model, x, flat, ["PNEUMONIA"] * len(x), ties="sorted")
