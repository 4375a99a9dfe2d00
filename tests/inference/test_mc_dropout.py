"""MC-dropout: N stochastic passes with only the Dropout layers on, reported as the mean of the passes'
calibrated probabilities with a per-image spread; seeded, and the model left exactly as it was."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import pytest
import torch
from tests.conftest import make_kermany_tree
from tests.inference.conftest import IMAGE_SIZE, write_checkpoint

from pneumocxr.cli.main import main
from pneumocxr.data.discovery import discover
from pneumocxr.errors import ConfigError
from pneumocxr.inference import load_predictor
from pneumocxr.inference.ensemble import EnsembleBatch
from pneumocxr.inference.mc_dropout import MCDropoutPredictor, dropout_layers, with_mc_dropout
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import create_model, save_checkpoint

PASSES = 6


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("mc") / "mcrun" / "best.pt"  # model name "mcrun"
    return write_checkpoint(path, threshold=0.45, temperature=1.7)


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).integers(0, 256, (5, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)


def test_passes_differ_and_the_mean_of_their_calibrated_probabilities_is_reported(checkpoint, pixels):
    predictor = load_predictor(checkpoint, device="cpu", mc_dropout=PASSES)
    assert isinstance(predictor, MCDropoutPredictor)
    batch = predictor.predict_arrays(pixels)
    assert isinstance(batch, EnsembleBatch) and batch.member_probabilities.shape == (PASSES, len(pixels))
    passes = batch.member_probabilities
    assert len({p.tobytes() for p in passes}) == PASSES  # every pass dropped different units
    np.testing.assert_array_equal(batch.calibrated_probability, passes.mean(axis=0))
    np.testing.assert_array_equal(batch.spread, passes.std(axis=0))
    assert np.all(batch.spread > 0)
    np.testing.assert_array_equal(batch.prediction, batch.calibrated_probability >= 0.45)
    # each pass is the model's calibrated probability sigmoid(z / T) of some dropout mask: the plain
    # (no-dropout) model's answer is not what is reported
    plain = load_predictor(checkpoint, device="cpu").predict_arrays(pixels)
    assert not np.allclose(plain.calibrated_probability, batch.calibrated_probability)


def test_seeded_reproducible_and_the_callers_rng_is_untouched(checkpoint, pixels):
    predictor = load_predictor(checkpoint, device="cpu", mc_dropout=PASSES)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = predictor.predict_arrays(pixels)
    assert torch.equal(torch.get_rng_state(), before)  # seeded inside fork_rng: global state restored
    again = load_predictor(checkpoint, device="cpu", mc_dropout=PASSES).predict_arrays(pixels)
    np.testing.assert_array_equal(first.member_probabilities, again.member_probabilities)
    base = load_predictor(checkpoint, device="cpu")
    other = with_mc_dropout(base, PASSES, seed=1).predict_arrays(pixels)
    assert not np.array_equal(other.member_probabilities, first.member_probabilities)


def test_only_dropout_runs_in_train_mode_and_everything_is_restored(checkpoint, pixels):
    predictor = load_predictor(checkpoint, device="cpu", mc_dropout=PASSES)
    model = predictor.model
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and dropout_layers(model)
    stats = {k: v.clone() for k, v in model.state_dict().items()}  # weights + BN running stats/counters
    modes_during: list[tuple[bool, bool]] = []
    hook = model.register_forward_pre_hook(
        lambda *_: modes_during.append(
            (all(m.training for m in dropout_layers(model)), any(m.training for m in norms))
        )
    )
    try:
        predictor.predict_arrays(pixels)
    finally:
        hook.remove()
    assert modes_during and all(mode == (True, False) for mode in modes_during)  # dropout on, BN eval
    assert not any(m.training for m in model.modules())  # all back in eval mode
    after = model.state_dict()
    assert all(torch.equal(stats[k], after[k]) for k in stats)  # BatchNorm running stats unchanged


def test_a_model_without_dropout_is_refused_clearly(tmp_path):
    torch.manual_seed(0)
    kwargs = {"image_size": IMAGE_SIZE, "in_channels": 1, "dropout": 0.0, "block_dropout": 0.0}
    model = create_model("custom_cnn", **kwargs)
    path = save_checkpoint(
        tmp_path / "nodrop.pt", model, model_name="custom_cnn", model_kwargs=kwargs,
        preprocess=model.spec.preprocess, class_names=CLASS_NAMES,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="has no Dropout layer"):
        load_predictor(path, device="cpu", mc_dropout=5)
    with pytest.raises(ConfigError, match="2 or more"):
        load_predictor(path, device="cpu", mc_dropout=1)


@pytest.mark.slow
def test_cli_evaluate_and_predict_report_the_mean_and_the_spread(checkpoint, tmp_path):
    tree = make_kermany_tree(tmp_path / "cx", splits=("test",), patients_per_class=2, size=(40, 40))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["evaluate", "--checkpoint", str(checkpoint), "--data", str(tree), "--out", str(tmp_path / "ev"),
             "--n-boot", "10", "--device", "cpu", "--mc-dropout", "4", "--mc-seed", "3"]
        )  # fmt: skip
        assert code == 0
        code = main(
            ["predict", "--checkpoint", str(checkpoint), str(tree / "test"), "--out", str(tmp_path / "p.csv"),
             "--device", "cpu", "--mc-dropout", "4", "--mc-seed", "3"]
        )  # fmt: skip
        assert code == 0
    assert "MC-dropout 4 passes (seed 3)" in out.getvalue()
    summary = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert summary["model"] == "mcrun+mc4" and summary["inference"]["mc_dropout_passes"] == 4
    assert summary["inference"]["threshold_chosen_with_these_settings"] is False
    with (tmp_path / "ev" / "predictions.csv").open() as fh:
        evaluated = list(csv.DictReader(fh))
    with (tmp_path / "p.csv").open() as fh:
        predicted = {r["path"]: r for r in csv.DictReader(fh)}
    assert all(float(r["spread"]) > 0 for r in evaluated)
    records = discover(tree).in_split("test")
    batch = with_mc_dropout(load_predictor(checkpoint, device="cpu"), 4, seed=3).predict_records(records)
    np.testing.assert_array_equal(
        [float(r["calibrated_probability"]) for r in evaluated], batch.calibrated_probability
    )
    np.testing.assert_array_equal([float(r["spread"]) for r in evaluated], batch.spread)
    assert set(predicted) == {str(r.path) for r in records} and all("spread" in r for r in predicted.values())
    assert json.loads((tmp_path / "p.json").read_text())["inference"]["mc_dropout_seed"] == 3
