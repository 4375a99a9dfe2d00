"""``--split validation``: the split a checkpoint records, rebuilt exactly and named for what it is.

A trained checkpoint's split chose it (optimistic); an ensemble of a cross-validation's folds is
judged on the patients the cv held out of every fold (not optimistic); compare refuses models that
record different patients.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml
from tests.conftest import make_kermany_tree
from tests.inference.test_ensemble import fake_cv_folder
from tests.training.test_cv import SETTINGS

from pneumocxr.cli.main import main
from pneumocxr.config import DataConfig
from pneumocxr.errors import CheckpointError, DatasetError
from pneumocxr.models import load_checkpoint
from pneumocxr.training.datamodule import split_records
from pneumocxr.workflows import compare_models
from pneumocxr.workflows.ensemble_create import create_ensemble
from pneumocxr.workflows.validation import (
    CARVED_VALIDATION_SPLIT,
    HELDOUT_VALIDATION_SPLIT,
    recorded_split,
    recorded_validation,
)

K = 3


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny 3-fold cv, a plain `train` with the same recipe, and the ensemble of the folds.

    (root, run folder, cv folder, ensemble file, what `ensemble create` printed)
    """
    base = tmp_path_factory.mktemp("heldout")
    root = make_kermany_tree(
        base / "cx", splits=("train",), patients_per_class=8, images_per_patient=2, size=(36, 36)
    )
    config = base / "recipe.yaml"
    config.write_text(yaml.safe_dump({**SETTINGS, "data": {"root": str(root)}}))
    cv, run, ens = base / "cv", base / "run", base / "ens.pt"
    code, _ = run_cli("cv", "--config", str(config), "--folds", str(K), "--out", str(cv), "--no-progress")
    assert code == 0
    assert run_cli("train", "--config", str(config), "--out", str(run), "--no-progress")[0] == 0
    code, printed = run_cli("ensemble", "create", str(ens), str(cv), "--device", "cpu")
    assert code == 0
    return root, run, cv, ens, printed


def evaluate(checkpoint: Path, root: Path, out: Path, *extra: str) -> tuple[int, str]:
    return run_cli(
        "evaluate", "--checkpoint", str(checkpoint), "--data", str(root), "--split", "validation",
        "--out", str(out), "--n-boot", "20", "--device", "cpu", *extra,
    )  # fmt: skip


@pytest.mark.slow
def test_split_validation_of_a_trained_checkpoint_is_exactly_its_recorded_val_images(trained, tmp_path):
    root, run, _, _, _ = trained
    _, meta = load_checkpoint(run / "best.pt")
    _, val = split_records(DataConfig(root=str(root)))  # what training validated on
    assert meta.extra["split"]["val_patients"] == sorted({f"train/{r.patient_id}" for r in val})
    code, printed = evaluate(run, root, tmp_path / "ev")
    assert code == 0
    assert [r["path"] for r in rows(tmp_path / "ev" / "predictions.csv")] == [r.display_name for r in val]
    summary = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert summary["split"] == CARVED_VALIDATION_SPLIT and "optimistic" in printed
    assert summary["selection"]["could_have_been_used_for_selection"] is True
    table = rows(tmp_path / "ev" / "results" / "performance_metrics.csv")
    assert {r["split"] for r in table} == {CARVED_VALIDATION_SPLIT}


@pytest.mark.slow
def test_cv_ensemble_records_the_held_out_split_and_is_judged_on_it_honestly(trained, tmp_path):
    root, run, cv, ens, printed = trained
    split = recorded_split(ens)
    ordinary = recorded_split(run / "best.pt")
    # the same structure and patients an ordinary run records for its validation split
    assert split["kind"] == "cv-holdout"
    for key in ("val_patients", "val_patients_sha256", "val_counts", "split_seed", "val_fraction"):
        assert split[key] == ordinary[key], key
    oof = {r["path"] for r in rows(cv / "oof_predictions.csv")}
    held = recorded_validation(ens, root).in_split(HELDOUT_VALIDATION_SPLIT)
    assert held and not oof & {r.display_name for r in held}  # no fold saw them
    assert "--split validation" in printed and f"{len(held)} images" in printed
    code, out = evaluate(ens, root, tmp_path / "ev")
    assert code == 0 and HELDOUT_VALIDATION_SPLIT in out
    summary = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert summary["split"] == HELDOUT_VALIDATION_SPLIT and summary["architecture"] == "ensemble"
    assert summary["selection"]["could_have_been_used_for_selection"] is False
    assert any("not optimistic" in note for note in summary["selection"]["notes"])
    assert summary["checkpoint_meta"]["threshold_choice"]["chosen_on"].startswith("out-of-fold")
    assert [r["path"] for r in rows(tmp_path / "ev" / "predictions.csv")] == [r.display_name for r in held]


@pytest.mark.slow
def test_compare_on_validation_needs_the_same_recorded_patients(trained, tmp_path, capsys):
    root, run, cv, ens, _ = trained
    # a fold model recorded its own fold as validation: other patients than the ordinary run's
    with pytest.raises(DatasetError, match="different validation patients"):
        compare_models([run, cv / "fold0"], root, split="validation", out_dir=tmp_path / "x", n_boot=10)
    argv = ["compare", str(run), str(cv / "fold0"), "--data", str(root), "--split", "validation"]
    assert main([*argv, "--out", str(tmp_path / "x"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--split val" in err
    # the ordinary run and the fold ensemble: the same patients, optimistic for one, held out for the other
    result = compare_models(
        [run, ens], root, split="validation", out_dir=tmp_path / "cmp", n_boot=10, device="cpu",
        speed_seconds=0.01,
    )  # fmt: skip
    assert [ev.split for ev in result.evaluations.values()] == [
        CARVED_VALIDATION_SPLIT,
        HELDOUT_VALIDATION_SPLIT,
    ]
    saved = json.loads((tmp_path / "cmp" / "results" / "comparison.json").read_text())
    assert saved["splits"] == {"run": CARVED_VALIDATION_SPLIT, "ens": HELDOUT_VALIDATION_SPLIT}
    assert HELDOUT_VALIDATION_SPLIT in (tmp_path / "cmp" / "results" / "comparison.md").read_text()


@pytest.mark.slow
def test_held_out_patients_are_not_guessed_when_the_data_changed(trained, tmp_path):
    root, _, cv, _, _ = trained
    copy = tmp_path / "cx"
    shutil.copytree(root, copy)
    oof = rows(cv / "oof_predictions.csv")
    (copy / Path(oof[0]["path"]).relative_to(root)).unlink()  # an image of a fold patient is gone
    with pytest.raises(DatasetError, match="pass --data with the folder"):
        create_ensemble(tmp_path / "e.pt", [cv], data_root=copy, device="cpu")


def test_ensemble_without_held_out_patients_says_why_and_how(tmp_path, capsys):
    cv = fake_cv_folder(tmp_path / "cv")  # folds that record no split: nothing held out
    made = create_ensemble(tmp_path / "e.pt", [cv], device="cpu")
    assert made.split["kind"] == "out-of-fold" and made.split["no_holdout"]
    with pytest.raises(CheckpointError, match="held no patients out"):
        recorded_validation(made.path, tmp_path)
    argv = ["evaluate", "--checkpoint", str(made.path), "--data", str(tmp_path), "--split", "validation"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "data.val_fraction > 0" in err and "use --split val" in err
