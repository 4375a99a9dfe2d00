"""Predictor: same preprocessing as training, calibrated probabilities, thresholds, any input route."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.special import expit
from tests.conftest import make_kermany_tree
from tests.inference.conftest import IMAGE_SIZE, write_checkpoint

from pneumocxr.config import DataConfig, TrainConfig
from pneumocxr.data.cache import PreprocessedCache
from pneumocxr.data.discovery import discover
from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.inference import PredictionBatch, Predictor, load_predictor, resolve_device
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import create_model, save_checkpoint, to_model_input


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_kermany_tree(tmp_path_factory.mktemp("cx"), splits=("test",), patients_per_class=3)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    path = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", threshold=0.4, temperature=2.5)
    return load_predictor(path, device="cpu", batch_size=4)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_predictor_feeds_its_model_exactly_what_training_feeds_it(in_channels, tmp_path):
    """The tensor the Predictor's model receives equals the training DataModule's validation input."""
    from pneumocxr.training import datamodule  # a broken project module must fail here, not skip

    path = write_checkpoint(tmp_path / "best.pt", in_channels=in_channels)
    predictor = load_predictor(path, device="cpu", batch_size=8)
    seen: list[torch.Tensor] = []
    hook = predictor.model.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
    pixels = np.random.default_rng(0).integers(0, 256, (5, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    try:
        predictor.predict_arrays(pixels)
    finally:
        hook.remove()
    dm = datamodule.ChestXrayDataModule(
        DataConfig(), TrainConfig(augment="seed"), predictor.preprocess, tmp_path / "cache"
    )
    dm.trainer = SimpleNamespace(training=False, global_rank=0, world_size=1)  # validation: no augmentation
    trained_on, _ = dm.on_after_batch_transfer((torch.from_numpy(pixels), torch.zeros(5)), 0)
    assert trained_on.shape == (5, in_channels, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.equal(torch.cat(seen), trained_on)


def test_predict_arrays_applies_temperature_then_threshold(predictor):
    pixels = np.random.default_rng(1).integers(0, 256, (6, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    batch = predictor.predict_arrays(pixels)
    with torch.inference_mode():
        expected = predictor.model(to_model_input(torch.from_numpy(pixels), predictor.preprocess)).reshape(-1)
    np.testing.assert_allclose(batch.logits, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch.probability, expit(batch.logits), rtol=1e-13, atol=0)
    np.testing.assert_allclose(batch.calibrated_probability, expit(batch.logits / 2.5), rtol=1e-13, atol=0)
    np.testing.assert_array_equal(batch.prediction, (batch.calibrated_probability >= 0.4).astype(int))
    assert (batch.threshold, batch.temperature, len(batch)) == (0.4, 2.5, 6)
    one = batch[0]
    assert one.label == CLASS_NAMES[one.prediction] and one.logit == batch.logits[0]


def test_threshold_is_on_the_calibrated_probability():
    # z = 1, T = 4: raw sigmoid(1) = 0.73 >= 0.6 but calibrated sigmoid(0.25) = 0.56 < 0.6.
    batch = PredictionBatch.from_logits([1.0], temperature=4.0, threshold=0.6)
    assert batch.probability[0] > 0.6 > batch.calibrated_probability[0]
    assert batch.prediction[0] == 0


def test_results_do_not_depend_on_batch_size(predictor):
    pixels = np.random.default_rng(2).integers(0, 256, (9, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    small = predictor.predict_arrays(pixels)  # batches of 4: 4 + 4 + 1
    whole = Predictor(predictor.model, predictor.meta, device="cpu", batch_size=64).predict_arrays(pixels)
    np.testing.assert_allclose(small.logits, whole.logits, rtol=1e-5, atol=1e-6)


def test_records_files_and_cache_give_the_same_probabilities(predictor, tree, tmp_path):
    records = discover(tree).in_split("test")
    direct = predictor.predict_records(records)
    cache = PreprocessedCache(tmp_path / "cache", IMAGE_SIZE, "squash")
    cached = predictor.predict_records(records, cache=cache)
    np.testing.assert_array_equal(direct.logits, cached.logits)  # the same uint8 bytes either way
    first = predictor.predict_file(records[0].path)
    assert first.calibrated_probability == pytest.approx(direct.calibrated_probability[0], abs=1e-6)


def test_cache_for_another_image_size_is_refused(predictor, tree, tmp_path):
    records = discover(tree).in_split("test")
    with pytest.raises(ConfigError, match="64px"):
        predictor.predict_records(records, cache=PreprocessedCache(tmp_path, 64, "squash"))


def test_dicom_and_png_of_the_same_pixels_agree(predictor, tmp_path):
    import dicom_factory

    # 40..200, not 0..255: a min-max stretch of the DICOM (the old train/serve skew) would show
    pixels = (40 + dicom_factory.ramp(48, 40, 160, dtype=np.uint16)).astype(np.uint8)
    dcm = dicom_factory.write_dicom(tmp_path / "image.dcm", pixels)
    png = tmp_path / "image.png"
    Image.fromarray(pixels, mode="L").save(png)
    from_dicom, from_png = predictor.predict_file(dcm), predictor.predict_file(png)
    assert from_dicom.calibrated_probability == from_png.calibrated_probability  # the same pixels, exactly
    assert from_dicom.prediction == from_png.prediction


def test_wrong_pixel_shape_or_dtype_is_a_clear_error(predictor):
    with pytest.raises(DatasetError, match=rf"\(N, {IMAGE_SIZE}, {IMAGE_SIZE}\)"):
        predictor.predict_arrays(np.zeros((2, 20, 20), dtype=np.uint8))
    with pytest.raises(DatasetError, match="uint8"):
        predictor.predict_arrays(np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32))


def test_multiclass_checkpoint_is_served_with_one_probability_per_class(tmp_path):
    """(tests/inference/test_three_class.py covers the three-class task in depth.)"""
    model = create_model("custom_cnn", image_size=IMAGE_SIZE, num_classes=3)
    path = save_checkpoint(
        tmp_path / "three.pt",
        model,
        model_name="custom_cnn",
        model_kwargs={"image_size": IMAGE_SIZE, "num_classes": 3},
        preprocess=model.spec.preprocess,
        class_names=("NORMAL", "BACTERIAL", "VIRAL"),
    )
    predictor = load_predictor(path, device="cpu")
    batch = predictor.predict_arrays(np.zeros((2, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8))
    assert batch.probabilities.shape == (2, 3) and batch[0].label in ("NORMAL", "BACTERIAL", "VIRAL")


def test_devices_are_resolved_or_refused():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ConfigError, match="tpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")


def test_throughput_is_measured_on_the_named_device(predictor):
    speed = predictor.measure_throughput(seconds=0.0, batch_size=2)
    assert speed["images_per_s"] > 0 and speed["images_timed"] == 2
    assert speed["device"].startswith("cpu")


def test_describe_names_what_the_threshold_applies_to(predictor):
    info = predictor.describe()
    assert info["threshold_applies_to"] == "calibrated_probability"
    assert info["temperature"] == 2.5 and info["parameters"] > 0
