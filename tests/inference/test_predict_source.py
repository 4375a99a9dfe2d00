"""``Predictor.predict(source)``: one answer for a path, bytes, an array or a DICOM dataset, equal to
what ``evaluate`` computes for the same file, typed, with the model's identity and scope checks."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from dicom_factory import make_dataset
from PIL import Image
from tests.conftest import make_kermany_tree
from tests.inference.conftest import write_checkpoint

from pneumocxr.data.discovery import discover
from pneumocxr.errors import ConfigError, OutOfScopeError, UnsupportedImageError
from pneumocxr.inference import PredictionResult, load_predictor

NOISE_FILMS = ()  # make_kermany_tree's films are noise with a blob: no anatomy for the polarity check


def chest_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 noise over a crude chest in normal polarity: bright spine column, darker lung fields."""
    rng = np.random.default_rng(seed)
    xx = np.linspace(-1, 1, width)[None, :].repeat(height, 0)
    film = 70 + 110 * np.exp(-(xx**2) / 0.02) + rng.normal(0, 15, (height, width))
    return np.clip(film, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("source")
    tree = make_kermany_tree(base / "cx", splits=("test",), patients_per_class=2)
    checkpoint = write_checkpoint(base / "best.pt", threshold=0.45, temperature=1.7)
    return tree, checkpoint, load_predictor(checkpoint, device="cpu")


def test_path_bytes_and_records_give_the_evaluate_answer(setup):
    tree, _, predictor = setup
    records = discover(tree).in_split("test")
    batch = predictor.predict_records(records)  # what `evaluate` scores
    for i, record in enumerate(records):
        by_path = predictor.predict(record.path, refuse=NOISE_FILMS)
        by_bytes = predictor.predict(record.path.read_bytes(), refuse=NOISE_FILMS)
        assert by_path.probabilities == by_bytes.probabilities
        alone = predictor.predict_records([record])  # same pixels, same batch size: bit-identical
        assert by_path.probabilities["PNEUMONIA"] == alone.calibrated_probability[0]
        # in a batch of N the float32 convolutions round differently, far below any decision margin
        assert by_path.probabilities["PNEUMONIA"] == pytest.approx(batch.calibrated_probability[i], abs=1e-6)
        assert by_path.label == batch[i].label


def test_an_array_scores_like_the_png_of_the_same_pixels(setup, tmp_path):
    _, _, predictor = setup
    pixels = chest_like(60, 50, seed=3)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    from_png = predictor.predict(tmp_path / "a.png")
    assert predictor.predict(pixels).probabilities == from_png.probabilities
    assert predictor.predict(pixels.astype(np.float32) / 255).probabilities == pytest.approx(
        from_png.probabilities
    )
    with pytest.raises(UnsupportedImageError, match="ambiguous"):
        predictor.predict(pixels.astype(np.uint16))
    with pytest.raises(UnsupportedImageError, match=r"2-D"):
        predictor.predict(np.zeros((60, 50, 3), dtype=np.uint8))


def test_the_result_is_typed_json_ready_and_names_the_model(setup):
    tree, checkpoint, predictor = setup
    image = next((tree / "test" / "NORMAL").glob("*.jpeg"))
    result = predictor.predict(image, refuse=NOISE_FILMS)
    assert isinstance(result, PredictionResult)
    assert result.model.sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert result.model.name == "custom_cnn" and result.threshold == 0.45
    assert sum(result.probabilities.values()) == pytest.approx(1.0)
    assert result.label == ("PNEUMONIA" if result.probabilities["PNEUMONIA"] >= 0.45 else "NORMAL")
    assert result.input.sha256 == hashlib.sha256(image.read_bytes()).hexdigest()
    assert result.input.format == "JPEG" and (result.input.width, result.input.height) == (48, 40)
    assert set(result.timings_ms) == {"decode", "model", "total"}
    assert json.loads(json.dumps(result.to_dict()))["model"]["sha256"] == result.model.sha256
    assert str(image) not in json.dumps(result.to_dict())  # no file name: the audit log keeps only hashes


def test_an_image_smaller_than_the_model_input_is_refused_unless_allowed(setup):
    _, _, predictor = setup
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(buffer, format="PNG")
    with pytest.raises(OutOfScopeError, match="8×8") as caught:
        predictor.predict(buffer.getvalue())
    assert caught.value.code == "image_too_small"
    allowed = predictor.predict(buffer.getvalue(), refuse=())
    assert [w.code for w in allowed.warnings] == ["image_too_small"]
    with pytest.raises(ConfigError, match="unknown scope check"):
        predictor.predict(buffer.getvalue(), refuse=("too_blue",))


def test_bad_input_names_what_is_wrong(setup, tmp_path):
    _, _, predictor = setup
    with pytest.raises(UnsupportedImageError, match="not found"):
        predictor.predict(tmp_path / "missing.png")
    with pytest.raises(UnsupportedImageError, match="bytes in memory"):
        predictor.predict(b"this is not an image")
    with pytest.raises(TypeError, match="predict takes"):
        predictor.predict(42)


def test_importing_the_core_loads_no_training_or_evaluation_stack():
    code = (
        "import sys, pneumocxr.inference\n"
        "heavy = ('sklearn', 'scipy', 'lightning', 'optuna', 'matplotlib', 'pandas', 'pydicom')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _dicom_dataset(levels: np.ndarray, **attributes):
    """dicom_factory's 8-bit MONOCHROME2 data set of ``levels``, then ``attributes`` (keyword → value) set."""
    ds = make_dataset(levels)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_a_dicom_dataset_of_a_films_pixels_scores_exactly_like_the_film(setup, tmp_path):
    _, _, predictor = setup
    levels = chest_like(140, 120, seed=5)  # reduced by 2 first (>= 2 × the 32 px input)
    Image.fromarray(levels).save(tmp_path / "film.png")
    dataset = _dicom_dataset(
        levels, Modality="DX", ViewPosition="PA", BodyPartExamined="CHEST", PatientAge="003Y"
    )
    result = predictor.predict(dataset)
    assert result.probabilities == predictor.predict(tmp_path / "film.png").probabilities
    assert result.warnings == () and result.input.format == "DICOM"
    assert result.input.dicom["modality"] == "DX" and result.input.dicom["patient_age_years"] == 3.0
    assert "SOPInstanceUID" not in json.dumps(result.to_dict()) and dataset.SOPInstanceUID not in json.dumps(
        result.to_dict()
    )


@pytest.mark.parametrize(
    ("attributes", "code"),
    [
        ({"Modality": "CT"}, "modality"),
        ({"Modality": "CR", "ViewPosition": "LL"}, "lateral_view"),
        ({"Modality": "DX", "BodyPartExamined": "KNEE"}, "body_part"),
        ({"Modality": "DX", "PatientAge": "045Y"}, "age_out_of_range"),
        ({"Modality": "DX", "PatientAge": "006M"}, "age_out_of_range"),
    ],
)
def test_dicom_inputs_outside_the_intended_use_are_flagged_or_refused(setup, attributes, code):
    _, _, predictor = setup
    dataset = _dicom_dataset(chest_like(64, 64), **attributes)
    assert [w.code for w in predictor.predict(dataset).warnings] == [code]
    with pytest.raises(OutOfScopeError) as caught:
        predictor.predict(dataset, refuse=(code,))
    assert caught.value.code == code


def test_an_inverted_film_is_refused_and_its_positive_is_not(setup):
    _, _, predictor = setup
    film = chest_like(96, 96, seed=7)
    assert predictor.predict(film).warnings == ()
    with pytest.raises(OutOfScopeError, match="inverted") as caught:
        predictor.predict(255 - film)
    assert caught.value.code == "inverted_polarity"
    assert [w.code for w in predictor.predict(255 - film, refuse=()).warnings] == ["inverted_polarity"]


def test_real_films_pass_the_polarity_check_and_their_negatives_do_not(shared_data):
    from pneumocxr.imaging import read_image, square_uint8
    from pneumocxr.inference.scope import INVERTED_BELOW, polarity_score

    films = [
        p
        for label in ("NORMAL", "PNEUMONIA")
        for p in sorted((shared_data / "chest_xray" / "train" / label).glob("*.jpeg"))[:60]
    ]
    squares = [square_uint8(read_image(f, min_size=224), 224, "squash") for f in films]
    assert min(polarity_score(s) for s in squares) > -INVERTED_BELOW
    assert max(polarity_score(255 - s) for s in squares) < INVERTED_BELOW
