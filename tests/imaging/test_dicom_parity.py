"""A DICOM built from a training JPEG's pixels scores like the JPEG: real Kermany films, a real Predictor.

Each JPEG's decoded 8-bit pixels are written as three DICOMs, as a PACS would hold the film:
8-bit with no window; 12-bit (pixels × 16) with the window an export uses to get back to 8 bits;
12-bit linear (pixels × 4095/255) with a full-range window. Each must decode to the JPEG's array
(the 12-bit linear one within 1/255) and get the JPEG's probability within 1e-3.

The model is untrained (no training in tests) but made to respond to its input like a trained
one: an untrained net's logits agree across films to ~1e-6, so any skew would pass unnoticed.
``test_the_checks_can_see_a_min_max_skew`` proves this one would catch the old min–max path.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import dicom_factory as df
import numpy as np
import pytest
import torch

from pneumocxr.imaging import image_info, read_image, resize_square
from pneumocxr.inference import Predictor, load_predictor
from pneumocxr.labels import task_class_names
from pneumocxr.models import create_model, save_checkpoint, to_model_input

pytestmark = pytest.mark.realdata

IMAGE_SIZE = 128  # the 224-px Kermany copies stay below 2× this, so their JPEG is not draft-decoded
PER_CLASS = 4
PROBABILITY_TOLERANCE = 1e-3


def _films(shared_data: Path, *, large: bool, per_class: int) -> list[Path]:
    """The first films of each class in train/ that are (not) at least twice the model input.

    The training cache and ``predict_file`` decode a JPEG that large at a reduced DCT scale and a
    DICOM by block means of the same factor (``imaging.resize.reduce_like_draft``); most Kermany
    films are that large (``test_large_originals_match_the_draft_decoded_jpeg``).
    """
    train = shared_data / "chest_xray" / "train"
    files = []
    for label in ("NORMAL", "PNEUMONIA"):
        candidates = sorted((train / label).glob("*.jpeg"))
        fits = (f for f in candidates if (_smaller_side(f) >= 2 * IMAGE_SIZE) == large)
        files += itertools.islice(fits, per_class)
    return files


def _smaller_side(path: Path) -> int:
    info = image_info(path)
    return min(info.width, info.height)


def _levels(path: Path) -> np.ndarray:
    """The JPEG's decoded pixels as the 8-bit values a PACS export of it holds."""
    return np.rint(read_image(path) * 255).astype(np.uint8)


def _dicoms(folder: Path, levels: np.ndarray) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    wide = levels.astype(np.uint16)
    return {
        "8-bit": df.write_dicom(folder / "b8.dcm", levels),
        "12-bit x16": df.write_dicom(folder / "b12.dcm", wide * 16, bits_stored=12, window=(2040.5, 4081)),
        "12-bit linear": df.write_dicom(
            folder / "lin.dcm",
            np.rint(wide * (4095 / 255)).astype(np.uint16),
            bits_stored=12,
            window=(2048, 4096),
        ),
    }


def _model_input(pixels: list[np.ndarray]) -> np.ndarray:
    """(N, S, S) uint8, as the training cache stores images."""
    squares = [resize_square(p, IMAGE_SIZE) for p in pixels]
    return np.stack([np.clip(np.rint(s * 255), 0, 255).astype(np.uint8) for s in squares])


def _responsive_checkpoint(path: Path, films: list[Path]) -> Path:
    """custom_cnn, random weights (seed 0; the global RNG is restored), BatchNorm statistics taken
    from these films and the last layer scaled so their logits spread with sd 1."""
    kwargs = {"image_size": IMAGE_SIZE, "in_channels": 1}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("custom_cnn", **kwargs)
    x = to_model_input(torch.from_numpy(_model_input([read_image(f) for f in films])), model.spec.preprocess)
    model.eval()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the one batch
            module.train()
    with torch.no_grad():
        model(x)
        model.eval()
        logits = model(x).reshape(-1)
        last = [
            m for m in model.get_submodule(model.spec.classifier).modules() if isinstance(m, torch.nn.Linear)
        ][-1]
        scale = 1.0 / float(logits.std())
        last.weight.mul_(scale)
        last.bias.sub_(float(logits.mean())).mul_(scale)
    return save_checkpoint(
        path,
        model,
        model_name="custom_cnn",
        model_kwargs=kwargs,
        preprocess=model.spec.preprocess,
        class_names=task_class_names("binary"),
        task="binary",
        threshold=0.5,
        temperature=1.0,
    )


@pytest.fixture(scope="module")
def films(shared_data) -> list[Path]:
    found = _films(shared_data, large=False, per_class=PER_CLASS)
    if len(found) < 2 * PER_CLASS:
        pytest.skip(f"fewer than {PER_CLASS} films per class under {IMAGE_SIZE * 2} px in {shared_data}")
    return found


@pytest.fixture(scope="module")
def large_films(shared_data) -> list[Path]:
    return _films(shared_data, large=True, per_class=PER_CLASS)


@pytest.fixture(scope="module")
def predictor(films, tmp_path_factory) -> Predictor:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is faster and shares the CPU
    try:
        path = _responsive_checkpoint(tmp_path_factory.mktemp("parity") / "model.pt", films)
        yield load_predictor(path, device="cpu", batch_size=8)
    finally:
        torch.set_num_threads(before)


def test_dicoms_of_training_jpegs_decode_to_the_jpegs_pixels(films, large_films, tmp_path):
    for index, film in enumerate(films + large_films):
        jpeg = read_image(film)
        dicoms = _dicoms(tmp_path / str(index), _levels(film))
        np.testing.assert_array_equal(read_image(dicoms["8-bit"]), jpeg, err_msg=film.name)
        np.testing.assert_array_equal(read_image(dicoms["12-bit x16"]), jpeg, err_msg=film.name)
        difference = np.abs(read_image(dicoms["12-bit linear"]) - jpeg).max()
        assert difference <= 1 / 255 + 1e-7, (film.name, difference)


def test_dicoms_of_training_jpegs_get_the_jpegs_probability(films, predictor, tmp_path):
    for index, film in enumerate(films):
        expected = predictor.predict_file(film).calibrated_probability
        for variant, dicom in _dicoms(tmp_path / str(index), _levels(film)).items():
            got = predictor.predict_file(dicom).calibrated_probability
            assert got == pytest.approx(expected, abs=PROBABILITY_TOLERANCE), (film.name, variant)


def test_the_checks_can_see_a_min_max_skew(films, predictor):
    """The old path (min–max to [0, 1]) on these films: pixels and probabilities both move."""
    jpegs = [read_image(f) for f in films]
    stretched = [(p - p.min()) / (p.max() - p.min()) for p in jpegs]
    assert any(not np.array_equal(s, p) for s, p in zip(stretched, jpegs)), "no film narrower than 0..255"
    honest = predictor.predict_arrays(_model_input(jpegs)).calibrated_probability
    skewed = predictor.predict_arrays(_model_input(stretched)).calibrated_probability
    assert np.abs(skewed - honest).max() > 10 * PROBABILITY_TOLERANCE
    assert np.ptp(honest) > 0.2, "the model must respond to the film, or parity proves nothing"


def test_large_originals_match_the_draft_decoded_jpeg(large_films, predictor, tmp_path):
    if not large_films:
        pytest.skip("no film of at least twice the model input in the sample")
    for index, film in enumerate(large_films):  # their pixels match: see the decode test above
        dicom = _dicoms(tmp_path / str(index), _levels(film))["8-bit"]
        got = predictor.predict_file(dicom).calibrated_probability
        expected = predictor.predict_file(film).calibrated_probability
        assert got == pytest.approx(expected, abs=PROBABILITY_TOLERANCE), film.name
