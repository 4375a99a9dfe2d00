"""Ensemble files: plain data, exactly the mean of the members' calibrated probabilities, a threshold
and conformal calibration chosen on validation images, and usable wherever a checkpoint is."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import make_kermany_tree
from tests.inference.conftest import write_checkpoint

from pneumocxr.cli.main import main
from pneumocxr.config import DataConfig
from pneumocxr.data.discovery import discover
from pneumocxr.data.splits import patient_split
from pneumocxr.errors import CheckpointError, ConfigError, DatasetError
from pneumocxr.evaluation import all_rules, choose_threshold
from pneumocxr.explain import explain_images
from pneumocxr.inference import load_predictor
from pneumocxr.inference.ensemble import TTA_VIEWS, EnsembleBatch, EnsemblePredictor, TTAModel
from pneumocxr.models import create_model
from pneumocxr.training.datamodule import split_info
from pneumocxr.workflows import compare_models, evaluate_checkpoint
from pneumocxr.workflows.ensemble_create import create_ensemble
from pneumocxr.workflows.operating_rules import rule_threshold, stored_rules


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_kermany_tree(tmp_path_factory.mktemp("ens") / "cx", patients_per_class=12, size=(44, 36))


def validation_split(root: Path, seed: int = 3) -> tuple[dict, list]:
    """The split record training writes into a checkpoint, for a patient split of ``root``'s train."""
    train, val = patient_split(discover(root).in_split("train"), 0.4, seed)
    return split_info(DataConfig(root=str(root)), 0, train, val).as_dict(), val


@pytest.fixture(scope="module")
def members(data, tmp_path_factory) -> list[Path]:
    """Two untrained but different members that share a validation split (different temperatures)."""
    base = tmp_path_factory.mktemp("members")
    split, _ = validation_split(data)
    return [
        write_checkpoint(base / "a.pt", seed=1, temperature=1.5, threshold=0.45, extra={"split": split}),
        write_checkpoint(base / "b.pt", seed=2, temperature=0.7, threshold=0.55, extra={"split": split}),
    ]


@pytest.fixture(scope="module")
def ensemble(members, tmp_path_factory) -> Path:
    return create_ensemble(tmp_path_factory.mktemp("e") / "ens.pt", members, device="cpu").path


def mean_of_members(members: list[Path], records) -> np.ndarray:
    probs = [load_predictor(m, device="cpu").predict_records(records).calibrated_probability for m in members]
    return np.mean(np.stack(probs), axis=0)


def test_ensemble_is_exactly_the_mean_of_the_members_calibrated_probabilities(
    data, members, ensemble, tmp_path
):
    records = discover(data).in_split("test")
    predictor = load_predictor(ensemble, device="cpu")
    assert isinstance(predictor, EnsemblePredictor)
    batch = predictor.predict_records(records)
    assert isinstance(batch, EnsembleBatch) and batch.member_probabilities.shape == (2, len(records))
    np.testing.assert_array_equal(batch.calibrated_probability, mean_of_members(members, records))
    np.testing.assert_array_equal(batch.prediction, batch.calibrated_probability >= predictor.threshold)
    assert np.ptp(batch.spread) > 0  # the members disagree by different amounts on different images
    # through a cache: the same numbers
    from pneumocxr.data.cache import PreprocessedCache

    cached = predictor.predict_records(records, cache=PreprocessedCache(tmp_path, 32))
    np.testing.assert_array_equal(cached.calibrated_probability, batch.calibrated_probability)
    single = predictor.predict_file(records[0].path)
    # one image is one batch of 1: float32 convolutions may round differently than in a batch of 24
    assert single.calibrated_probability == pytest.approx(batch.calibrated_probability[0], abs=1e-6)


def test_ensemble_file_is_plain_data_with_members_embedded(members, ensemble):
    raw = torch.load(ensemble, map_location="cpu", weights_only=True)  # no code in the file
    assert raw["format"] == "pneumocxr.ensemble" and raw["member_names"] == ["a", "b"]
    assert [m["temperature"] for m in raw["members"]] == [1.5, 0.7]
    recorded = raw["extra"]["members"]
    assert [Path(m["source"]) for m in recorded] == members and all(len(m["sha256"]) == 64 for m in recorded)
    for path in members:
        path.with_suffix(".moved").write_bytes(path.read_bytes())
    # embedded: still loads when the members' files are gone (they are restored for other tests)
    for path in members:
        path.unlink()
    try:
        assert len(load_predictor(ensemble, device="cpu").members) == 2
    finally:
        for path in members:
            path.with_suffix(".moved").rename(path)


def test_threshold_and_conformal_data_come_from_the_shared_validation_split(data, members, ensemble):
    _, val = validation_split(data)
    p = mean_of_members(members, val)
    y = np.array([r.label for r in val])
    predictor = load_predictor(ensemble, device="cpu")
    assert predictor.threshold == choose_threshold(y, p, method="youden").threshold
    conformal = predictor.meta.extra["conformal"]
    assert conformal["labels"] == y.tolist() and conformal["probabilities"] == p.tolist()
    assert predictor.meta.extra["threshold_choice"]["chosen_on"].startswith("validation")


def test_every_threshold_rule_is_stored_and_members_trained_at_one_rule_keep_it(data, tmp_path):
    """An ensemble stores every rule like training does; by default it decides at the rule its members
    were trained with (cpu_accurate: target_sensitivity), and --threshold-rule picks another."""
    _, val = validation_split(data)
    split = validation_split(data)[0]
    at_target = {"split": split, "operating_point": {"threshold_rule": "target_sensitivity"}}
    members = [
        write_checkpoint(tmp_path / "a.pt", seed=1, temperature=1.5, extra=at_target),
        write_checkpoint(tmp_path / "b.pt", seed=2, temperature=0.7, extra=at_target),
    ]
    y, p = np.array([r.label for r in val]), mean_of_members(members, val)
    expected = all_rules(y, p)
    made = create_ensemble(tmp_path / "kept.pt", members, device="cpu")
    predictor = load_predictor(made.path, device="cpu")
    assert predictor.threshold_rule == "target_sensitivity"
    assert predictor.threshold == expected["target_sensitivity"].threshold
    assert stored_rules(predictor.meta).keys() == expected.keys()
    assert rule_threshold(predictor.meta, "youden") == expected["youden"].threshold
    chosen = create_ensemble(tmp_path / "y.pt", members, device="cpu", threshold_rule="youden_edge")
    assert load_predictor(chosen.path, device="cpu").threshold == expected["youden_edge"].threshold
    with pytest.raises(ConfigError, match="not a threshold rule"):
        create_ensemble(tmp_path / "z.pt", members, device="cpu", threshold_rule="best")


def test_members_validated_on_different_patients_are_refused(data, members, tmp_path):
    other, _ = validation_split(data, seed=11)
    stranger = write_checkpoint(tmp_path / "c.pt", seed=3, extra={"split": other})
    with pytest.raises(CheckpointError, match="different patients"):
        create_ensemble(tmp_path / "x.pt", [members[0], stranger], device="cpu")
    bare = write_checkpoint(tmp_path / "bare.pt", seed=4)
    with pytest.raises(CheckpointError, match="no validation split"):
        create_ensemble(tmp_path / "y.pt", [bare], device="cpu")
    with pytest.raises(CheckpointError, match="itself an ensemble"):
        create_ensemble(tmp_path / "z.pt", [create_ensemble(tmp_path / "one.pt", [members[0]]).path])


def test_members_with_different_input_sizes_decode_per_member(data, members, tmp_path):
    split, _ = validation_split(data)
    torch.manual_seed(5)
    model = create_model("custom_cnn", image_size=40, in_channels=1)
    from pneumocxr.models import save_checkpoint

    big = save_checkpoint(
        tmp_path / "big.pt", model, model_name="custom_cnn",
        model_kwargs={"image_size": 40, "in_channels": 1}, preprocess=model.spec.preprocess,
        class_names=["NORMAL", "PNEUMONIA"], temperature=1.2, extra={"split": split},
    )  # fmt: skip
    mixed = create_ensemble(tmp_path / "mixed.pt", [members[0], big], device="cpu").path
    predictor = load_predictor(mixed, device="cpu")
    records = discover(data).in_split("test")
    np.testing.assert_array_equal(
        predictor.predict_records(records).calibrated_probability, mean_of_members([members[0], big], records)
    )
    with pytest.raises(DatasetError, match="different inputs"):
        predictor.predict_arrays(np.zeros((1, 32, 32), np.uint8))


@pytest.mark.slow
def test_evaluate_and_compare_accept_an_ensemble_with_uncertainty_outputs(data, members, ensemble, tmp_path):
    result = evaluate_checkpoint(
        ensemble, data, split="test", out_dir=tmp_path / "ev", n_boot=20, device="cpu"
    )
    assert result.architecture == "ensemble"
    np.testing.assert_array_equal(
        result.predictions.calibrated_probability, mean_of_members(members, discover(data).in_split("test"))
    )
    summary = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    uncertainty = summary["uncertainty"]
    assert set(uncertainty["risk_coverage"]) == {"error_probability", "ensemble_spread"}
    assert (
        0 <= uncertainty["conformal"]["coverage"] <= 1
        and uncertainty["conformal"]["calibration"]["alpha"] == 0.05
    )
    assert (tmp_path / "ev" / "uncertainty" / "risk_coverage.png").is_file()
    assert (
        "conformal_set" in (tmp_path / "ev" / "uncertainty" / "uncertainty.csv").read_text().splitlines()[0]
    )
    compared = compare_models(
        [ensemble, members[0]], data, split="test", out_dir=tmp_path / "cmp", n_boot=20, device="cpu",
        speed_seconds=0.05,
    )  # fmt: skip
    assert [row["architecture"] for row in compared.table] == ["ensemble", "custom_cnn"]


def test_a_single_checkpoint_gets_risk_coverage_but_no_conformal_sets(data, members, tmp_path):
    evaluate_checkpoint(members[0], data, split="test", out_dir=tmp_path, n_boot=20, device="cpu")
    uncertainty = json.loads((tmp_path / "metrics.json").read_text())["uncertainty"]
    assert set(uncertainty["risk_coverage"]) == {"error_probability"}
    assert uncertainty["conformal"] is None and "one-member ensemble" in uncertainty["conformal_note"]


def test_explain_accepts_an_ensemble(data, ensemble, tmp_path):
    image = discover(data).in_split("test")[-1].path
    run = explain_images(ensemble, [image], tmp_path, device="cpu")
    assert not run.failures
    explanation = run.explanations[0]
    expected = load_predictor(ensemble, device="cpu").predict_file(image)
    assert explanation.calibrated_probability == pytest.approx(expected.calibrated_probability, abs=1e-6)
    assert explanation.prediction == expected.label
    report = json.loads(explanation.report.read_text())
    assert len(report["members"]) == 2 and report["raw_map_geometry"] == "model input"
    assert np.load(explanation.raw_map).shape == (32, 32) and explanation.overlay.stat().st_size > 0


def test_tta_averages_the_logits_of_small_views_without_flips():
    torch.manual_seed(0)
    model = create_model("custom_cnn", image_size=32, in_channels=1).eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        identity = TTAModel(model, views=[(1.0, 0.0, 0.0)])(x)
        torch.testing.assert_close(identity, model(x), atol=1e-5, rtol=1e-5)
        averaged = TTAModel(model)(x)
        shifted = TTAModel(model, views=[TTA_VIEWS[3]])(x)
    assert averaged.shape == (3, 1) and not torch.allclose(shifted, identity)
    assert all(scale > 0 for scale, _, _ in TTA_VIEWS)  # no mirrored view (anatomy has a left and right)


def test_tta_can_be_asked_for_at_load_or_stored_in_an_ensemble(data, members, tmp_path):
    records = discover(data).in_split("test")[:6]
    plain = load_predictor(members[0], device="cpu").predict_records(records)
    tta = load_predictor(members[0], device="cpu", tta=True)
    assert isinstance(tta.model, TTAModel)
    assert not np.array_equal(tta.predict_records(records).logits, plain.logits)
    stored = create_ensemble(tmp_path / "tta.pt", [members[0]], tta=True, device="cpu").path
    assert load_predictor(stored, device="cpu").tta
    assert not load_predictor(stored, device="cpu", tta=False).tta


def test_cli_creates_shows_and_evaluates_an_ensemble(data, members, tmp_path):
    out = io.StringIO()
    ens = tmp_path / "cli.pt"
    with contextlib.redirect_stdout(out):
        assert (
            main(["ensemble", "create", str(ens), str(members[0]), str(members[1]), "--device", "cpu"]) == 0
        )
        assert main(["ensemble", "show", str(ens)]) == 0
        code = main(["evaluate", "--checkpoint", str(ens), "--data", str(data), "--out", str(tmp_path / "ev"),
                     "--n-boot", "20", "--device", "cpu"])  # fmt: skip
    assert code == 0
    text = out.getvalue()
    assert "ensemble of 2: a, b" in text and "uncertain: refer" in text and "conformal: lac" in text


def test_bad_member_arguments_are_user_errors(members, tmp_path, capsys):
    assert main(["ensemble", "create", str(tmp_path / "o.pt"), str(tmp_path / "missing.pt")]) == 2
    assert "neither a checkpoint file nor a run folder" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="alpha"):
        create_ensemble(tmp_path / "o.pt", members, alpha=1.5)


def fake_cv_folder(root: Path, k: int = 3, n: int = 40) -> Path:
    """A finished cross-validation folder as `pneumocxr cv` leaves it (fold checkpoints + OOF CSV),
    without training: the ensemble only reads these files."""
    import csv

    from pneumocxr.training.cv import OOF_COLUMNS

    (root).mkdir(parents=True)
    (root / "cv.json").write_text(json.dumps({"folds": k, "config": {}}))
    rng = np.random.default_rng(0)
    rows = []
    for fold in range(k):
        write_checkpoint(root / f"fold{fold}" / "best.pt", seed=fold, temperature=1.0 + fold / 4)
        for i in range(n // k):
            y = int(rng.integers(0, 2))
            p = float(np.clip(0.3 * y + 0.35 + rng.normal(0, 0.15), 0.01, 0.99))
            row = {"path": f"img{fold}_{i}.png", "patient_id": f"p{fold}_{i}", "label": y, "sublabel": "x"}
            row.update(
                fold=fold, logit=0.0, probability=p, calibrated_probability=p, prediction=int(p >= 0.5)
            )
            rows.append({**row, "threshold": 0.5, "temperature": 1.0 + fold / 4})
    with (root / "oof_predictions.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=OOF_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_a_cv_folder_becomes_an_ensemble_calibrated_on_its_out_of_fold_predictions(tmp_path):
    cv = fake_cv_folder(tmp_path / "cv5")
    made = create_ensemble(tmp_path / "cv.pt", [cv], device="cpu")
    assert (
        made.members == ("cv5/fold0", "cv5/fold1", "cv5/fold2") and made.calibration_source == "out-of-fold"
    )
    import csv

    with (cv / "oof_predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["calibrated_probability"]) for r in rows])
    assert made.threshold["threshold"] == choose_threshold(y, p, method="youden").threshold
    predictor = load_predictor(made.path, device="cpu")
    assert predictor.meta.extra["conformal"]["probabilities"] == p.tolist()
    with pytest.raises(ConfigError, match="only member argument"):
        create_ensemble(tmp_path / "mix.pt", [cv, cv / "fold0"])


def test_an_unfinished_or_retrained_cv_folder_is_refused(tmp_path):
    cv = fake_cv_folder(tmp_path / "cv")
    write_checkpoint(cv / "fold1" / "best.pt", seed=9, temperature=3.0)  # retrained after the OOF file
    with pytest.raises(CheckpointError, match="retrained"):
        create_ensemble(tmp_path / "a.pt", [cv])
    (cv / "fold2" / "best.pt").unlink()
    with pytest.raises(CheckpointError, match="not finished"):
        create_ensemble(tmp_path / "b.pt", [cv])
