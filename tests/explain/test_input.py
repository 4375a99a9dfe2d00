"""Explanations see exactly the input training saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumocxr.config import Preprocess
from pneumocxr.explain._input import to_model_input
from pneumocxr.training.datamodule import to_model_input as training_input


@pytest.mark.parametrize(
    "preprocess",
    [
        Preprocess(image_size=16, channels=3),
        Preprocess(image_size=16, channels=1, mean=(0.449,), std=(0.226,)),
        Preprocess(image_size=16, channels=3, mean=(0.5,), std=(0.5,)),
        Preprocess(image_size=16, channels=1, mean=(0.0,), std=(1.0,)),
    ],
)
def test_normalisation_is_bit_identical_to_training(preprocess):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    ours = to_model_input(pixels, preprocess)
    theirs = training_input(torch.from_numpy(pixels), preprocess)
    assert ours.shape == (3, preprocess.channels, 16, 16)
    assert torch.equal(ours, theirs)
