"""Batch augmentation: presets, shapes, seeding, and the anatomy preset's no-flip promise."""

from __future__ import annotations

import pytest
import torch

from pneumocxr.errors import ConfigError
from pneumocxr.training.augment import PRESETS, AugmentParams, BatchAugmenter, augment_params


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(n: int = 16, c: int = 1, h: int = 32, w: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=_gen(seed))


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("shape", [(5, 1, 32, 32), (3, 3, 24, 40)])
def test_every_preset_keeps_shape_dtype_and_range(name, shape):
    images = torch.rand(*shape, generator=_gen())
    out = BatchAugmenter(augment_params(name), _gen())(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_none_is_the_identity():
    images = _batch()
    out = BatchAugmenter(augment_params("none"), _gen())(images)
    assert torch.equal(out, images)


@pytest.mark.parametrize("name", ["seed", "anatomy"])
def test_same_seed_same_augmentation_and_other_seed_differs(name):
    images = _batch()
    a = BatchAugmenter(augment_params(name), _gen(7))(images)
    b = BatchAugmenter(augment_params(name), _gen(7))(images)
    c = BatchAugmenter(augment_params(name), _gen(8))(images)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, images)  # it did something


def test_each_image_gets_its_own_transform():
    one = _batch(n=1)
    out = BatchAugmenter(augment_params("seed"), _gen())(one.repeat(8, 1, 1, 1))
    diffs = [float((out[0] - out[i]).abs().mean()) for i in range(1, 8)]
    assert min(diffs) > 1e-3


def _left_bright(n: int, size: int = 32) -> torch.Tensor:
    """Left third bright, rest dark: which side is brighter tells whether a flip happened."""
    images = torch.full((n, 1, size, size), 0.1)
    images[..., : size // 3] = 0.9
    return images


def _flipped(images: torch.Tensor) -> torch.Tensor:
    half = images.shape[-1] // 2
    left = images[..., :half].mean(dim=(1, 2, 3))
    right = images[..., half:].mean(dim=(1, 2, 3))
    return right > left


def test_anatomy_never_flips_left_and_right():
    augmenter = BatchAugmenter(augment_params("anatomy"), _gen(3))
    for _ in range(10):
        assert not _flipped(augmenter(_left_bright(64))).any()
    assert augment_params("anatomy").hflip is False


def test_seed_preset_flips_about_half():
    out = BatchAugmenter(augment_params("seed"), _gen(3))(_left_bright(400))
    share = float(_flipped(out).float().mean())
    assert 0.35 < share < 0.65


def test_pure_flip_mirrors_exactly():
    images = _batch(n=64)
    out = BatchAugmenter(AugmentParams(hflip=True), _gen(5))(images)
    mirrored = torch.flip(images, dims=[-1])
    for i in range(len(images)):
        assert torch.allclose(out[i], images[i], atol=1e-5) or torch.allclose(out[i], mirrored[i], atol=1e-5)


def test_shift_moves_content_by_the_drawn_fraction():
    # A single bright column at the centre moves by at most shift * width pixels.
    images = torch.zeros(32, 1, 40, 40)
    images[..., 20] = 1.0
    out = BatchAugmenter(AugmentParams(shift=0.1), _gen(2))(images)
    columns = out.sum(dim=(1, 2)).argmax(dim=-1).float()  # (N,) position of the line
    assert float((columns - 20).abs().max()) <= 0.1 * 40 + 1
    assert float((columns - 20).abs().max()) >= 1  # some image did move


def test_intensity_jitter_changes_brightness_not_geometry():
    images = _left_bright(16)
    out = BatchAugmenter(AugmentParams(brightness=0.1, contrast=0.2), _gen(4))(images)
    means = out.mean(dim=(1, 2, 3))
    assert float(means.std()) > 0.005  # brightness varies between images
    assert torch.equal(out.argmax(dim=-1), images.argmax(dim=-1))  # nothing moved


def test_unknown_preset_is_a_config_error_naming_the_presets():
    with pytest.raises(ConfigError, match="anatomy"):
        augment_params("flipsy")


def test_rejects_a_batch_without_channels():
    with pytest.raises(ValueError, match="N, C, H, W"):
        BatchAugmenter(augment_params("seed"), _gen())(torch.rand(4, 32, 32))


def test_overrides_change_only_the_named_ranges():
    params = augment_params("anatomy", {"zoom": 0.35, "hflip": False})
    assert params.zoom == 0.35
    assert params.rotation_deg == PRESETS["anatomy"].rotation_deg
    assert augment_params("anatomy", {}) == PRESETS["anatomy"]


def test_fov_preset_is_anatomy_with_a_wide_zoom():
    assert augment_params("fov") == augment_params("anatomy", {"zoom": 0.35})


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"zooom": 0.3}, "rotation_deg"),  # names the valid fields
        ({"zoom": -0.1}, "number >= 0"),
        ({"zoom": 1.2}, "below 1"),
        ({"rotation_deg": "lots"}, "number >= 0"),
        ({"hflip": 1}, "true or false"),
    ],
)
def test_bad_overrides_are_config_errors_naming_the_fix(overrides, match):
    with pytest.raises(ConfigError, match=match):
        augment_params("anatomy", overrides)


def test_wide_zoom_reaches_both_zoom_in_and_zoom_out():
    """A centred bright square shrinks under zoom-out and grows under zoom-in: fov draws both."""
    images = torch.zeros(64, 1, 64, 64)
    images[:, :, 24:40, 24:40] = 1.0
    out = BatchAugmenter(AugmentParams(zoom=0.35), _gen(5))(images)
    area = (out > 0.5).float().mean(dim=(1, 2, 3)) / (images > 0.5).float().mean()
    assert float(area.min()) < 0.75 and float(area.max()) > 1.3


def test_texture_jitter_is_seeded_keeps_range_and_moves_no_content():
    images = torch.zeros(8, 1, 32, 32)
    images[:, :, 12:20, 12:20] = 1.0
    params = AugmentParams(noise=0.05, blur=1.5)
    out = BatchAugmenter(params, _gen(3))(images)
    assert torch.equal(out, BatchAugmenter(params, _gen(3))(images))
    assert out.shape == images.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    centre = out[:, 0, 14:18, 14:18].mean()
    assert float(centre) > 0.7 and float(out[:, 0, :4, :4].mean()) < 0.3  # the square stays where it was


def test_blur_smooths_an_edge_and_zero_sigma_is_the_identity():
    from pneumocxr.training.augment import _blur

    images = torch.zeros(2, 1, 16, 16)
    images[:, :, :, 8:] = 1.0
    out = _blur(images, torch.tensor([0.0, 2.0]))
    assert torch.equal(out[0], images[0])
    assert 0.05 < float(out[1, 0, 8, 7]) < 0.5 and 0.5 < float(out[1, 0, 8, 8]) < 0.95
    assert torch.allclose(out[1].mean(), images[1].mean(), atol=1e-5)  # a blur keeps the mean


def test_noise_jitter_adds_noise_of_at_most_the_given_std():
    images = torch.full((64, 1, 32, 32), 0.5)
    out = BatchAugmenter(AugmentParams(noise=0.04), _gen(6))(images)
    stds = (out - images).std(dim=(1, 2, 3))
    assert float(stds.max()) <= 0.045 and float(stds.max()) > 0.02
