"""A checkpoint whose threshold, temperature or class names cannot decide anything is refused on load,
naming the file and the value; save refuses what load would."""

from __future__ import annotations

import pytest
import torch

from pneumocxr.errors import CheckpointError
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import create_model, load_checkpoint, save_checkpoint
from pneumocxr.models.checkpoint import write_atomic


def _edited(tmp_path, **values):
    """A valid checkpoint, then edited on disk (as a damaged or hand-edited file would be)."""
    torch.manual_seed(0)
    model = create_model("custom_cnn", image_size=32, in_channels=1)
    kwargs = {"image_size": 32, "in_channels": 1}
    path = save_checkpoint(
        tmp_path / "edited.pt", model, model_name="custom_cnn", model_kwargs=kwargs,
        preprocess=model.spec.preprocess, class_names=CLASS_NAMES, threshold=0.4, temperature=1.5,
    )  # fmt: skip
    payload = torch.load(path, weights_only=True)
    payload.update(values)
    return write_atomic(path, payload)


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.2, 1.7, float("nan"), float("inf")])
def test_threshold_outside_zero_one_is_refused_naming_the_file(tmp_path, threshold):
    path = _edited(tmp_path, threshold=threshold)
    with pytest.raises(CheckpointError, match=r"edited\.pt: threshold=.*strictly between 0 and 1"):
        load_checkpoint(path)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_temperature_that_is_not_positive_and_finite_is_refused_naming_the_file(tmp_path, temperature):
    path = _edited(tmp_path, temperature=temperature)
    with pytest.raises(CheckpointError, match=r"edited\.pt: temperature=.*positive finite"):
        load_checkpoint(path)


def test_non_numeric_values_are_refused_too(tmp_path):
    with pytest.raises(CheckpointError, match="not numbers"):
        load_checkpoint(_edited(tmp_path, threshold="high"))


def test_a_checkpoint_without_threshold_or_temperature_gets_the_neutral_ones(tmp_path):
    path = _edited(tmp_path)
    payload = torch.load(path, weights_only=True)
    del payload["threshold"], payload["temperature"]
    _, meta = load_checkpoint(write_atomic(path, payload))
    assert (meta.threshold, meta.temperature) == (0.5, 1.0)


@pytest.mark.parametrize(
    ("class_names", "why"),
    [
        (["NORMAL", "NORMAL"], "'NORMAL' appears more than once"),
        (["NORMAL", ""], "'' is not a non-empty string"),
        (["NORMAL", "  "], "is not a non-empty string"),
        (["NORMAL", 3], "3 is not a non-empty string"),
        (["PNEUMONIA"], "need at least two classes"),
        ([], "need at least two classes"),
        ("NORMAL,PNEUMONIA", "is not a list of class names"),
    ],
)
def test_class_names_that_are_empty_repeated_or_too_few_are_refused_naming_the_file(
    tmp_path, class_names, why
):
    path = _edited(tmp_path, class_names=class_names)
    with pytest.raises(CheckpointError, match=r"edited\.pt: class_names=") as error:
        load_checkpoint(path)
    assert why in str(error.value)


def test_class_names_that_do_not_fit_the_model_outputs_are_refused(tmp_path):
    path = _edited(tmp_path, class_names=["NORMAL", "BACTERIAL", "VIRAL"])  # a one-logit binary model
    with pytest.raises(CheckpointError, match=r"edited\.pt: class_names=.*do not match model custom_cnn"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"threshold": 1.0}, "threshold=1.0 is not a probability"),
        ({"threshold": float("nan")}, "threshold=nan"),
        ({"temperature": 0.0}, "temperature=0.0 must be a positive"),
        ({"class_names": ["NORMAL", "NORMAL"]}, "appears more than once"),
    ],
)
def test_values_load_would_refuse_are_never_saved(tmp_path, values, match):
    model = create_model("custom_cnn", image_size=32, in_channels=1)
    settings = {"class_names": CLASS_NAMES, "threshold": 0.4, "temperature": 1.5, **values}
    kwargs = {"image_size": 32, "in_channels": 1}
    with pytest.raises(CheckpointError, match=rf"cannot save .*bad\.pt: .*{match}"):
        save_checkpoint(
            tmp_path / "bad.pt", model, model_name="custom_cnn", model_kwargs=kwargs,
            preprocess=model.spec.preprocess, **settings,
        )  # fmt: skip
    assert not (tmp_path / "bad.pt").exists()


def test_an_ensemble_threshold_load_would_refuse_is_never_saved(tmp_path):
    from pneumocxr.models.ensemble_file import checkpoint_payload, save_ensemble

    member = checkpoint_payload(_edited(tmp_path))
    with pytest.raises(CheckpointError, match=r"cannot save ensemble .*e\.pt: threshold=0\.0"):
        save_ensemble(tmp_path / "e.pt", [member], ["a"], threshold=0.0)
