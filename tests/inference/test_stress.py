"""``run_stress``: the validation split under every shift, its files, and its clean row = ``evaluate``."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from tests.conftest import make_kermany_tree

from pneumocxr.config import DataConfig
from pneumocxr.data.cache import decode_record
from pneumocxr.data.discovery import discover
from pneumocxr.data.sources import load_pixels
from pneumocxr.errors import ConfigError
from pneumocxr.evaluation.stress_plots import plot_stress
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import create_model, load_checkpoint, save_checkpoint
from pneumocxr.training.augment import PRESETS
from pneumocxr.training.datamodule import split_info, split_records
from pneumocxr.training.stress_augmentation import recorded_augmentation
from pneumocxr.workflows import evaluate_checkpoint
from pneumocxr.workflows.ensemble_create import create_ensemble
from pneumocxr.workflows.stress import _model_pixels, _shifted, run_stress, stress_sample
from pneumocxr.workflows.validation import recorded_validation

SHIFTS = ["jpeg", "zoom_in", "invert"]


def stress_checkpoint(path, root, *, augment="anatomy", val_fraction=0.4, image_size=32, seed=0):
    """An untrained custom_cnn that records a validation split of ``root`` and its recipe."""
    data = DataConfig(root=str(root), val_fraction=val_fraction, split_seed=1)
    train, val = split_records(data)
    torch.manual_seed(seed)
    kwargs = {"image_size": image_size, "in_channels": 1}
    model = create_model("custom_cnn", **kwargs)
    return save_checkpoint(
        path, model, model_name="custom_cnn", model_kwargs=kwargs, preprocess=model.spec.preprocess,
        class_names=CLASS_NAMES, threshold=0.5, temperature=1.0,
        extra={"split": split_info(data, 0, train, val).as_dict()}, config={"train": {"augment": augment}},
    )  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("stress")
    root = make_kermany_tree(base / "cx", splits=("train",), patients_per_class=8, size=(48, 40))
    return root, stress_checkpoint(base / "run" / "best.pt", root)


def test_run_stress_writes_one_row_per_condition_with_cis_and_coverage_flags(setup, tmp_path):
    root, ckpt = setup
    _, meta = load_checkpoint(ckpt)
    augmentation = recorded_augmentation(meta.config)
    result = run_stress(
        ckpt, root, shifts=SHIFTS, n_images=0, out_dir=tmp_path, augmentation=augmentation, n_boot=30,
        device="cpu",
    )  # fmt: skip
    with (tmp_path / "stress.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    conditions = [(r["shift"], r["severity"]) for r in rows]
    expected = [("none", "0")] + [(s, str(k)) for s in SHIFTS for k in ((1,) if s == "invert" else (1, 2, 3))]
    assert conditions == expected
    assert all(r["model"] == "run" and r["n"] == str(result.n_images) for r in rows)
    for column in ("auc", "sensitivity", "specificity"):
        assert {column, f"{column}_lo", f"{column}_hi", f"{column}_change"} <= set(rows[0])
    flags = {r["shift"]: r["in_training_augmentation"] for r in rows[1:]}
    assert flags == {"jpeg": "False", "zoom_in": "True", "invert": "False"}
    assert rows[0]["auc_change"] == "0.0" and "median_p_normal" in rows[0]
    summary = json.loads((tmp_path / "stress.json").read_text())
    assert (
        summary["seed"] == 0 and summary["n_images"] == result.n_images and len(summary["rows"]) == len(rows)
    )
    assert [s["name"] for s in summary["shifts"]] == SHIFTS
    assert {"auc", "sensitivity", "specificity"} <= set(summary["worst"])
    assert all(w["shift"] != "invert" for w in summary["worst_excluding_invert"].values())
    assert summary["training_augmentation"] == asdict(PRESETS["anatomy"])
    assert (tmp_path / "stress.png").stat().st_size > 10_000
    md = (tmp_path / "stress.md").read_text()
    assert md.count("\n| ") == len(rows) + 1 and "Worst case" in md


def test_the_clean_row_is_what_evaluate_measures_on_the_same_images(setup, tmp_path):
    root, ckpt = setup
    stressed = run_stress(ckpt, root, shifts=["blur"], n_images=0, n_boot=30, device="cpu")
    val = recorded_validation(ckpt, root)
    clean = evaluate_checkpoint(ckpt, val, split=val.splits()[0], out_dir=tmp_path, n_boot=30, device="cpu")
    ci = clean.metrics["checkpoint"]
    for column, metric in (
        ("auc", "roc_auc"),
        ("sensitivity", "sensitivity"),
        ("specificity", "specificity"),
    ):
        assert stressed.clean[column] == ci.estimates[metric].value
        assert stressed.clean[f"{column}_lo"] == ci.estimates[metric].low


def test_severity_zero_pixels_are_the_decode_record_bytes(setup):
    root, ckpt = setup
    _, meta = load_checkpoint(ckpt)
    records = discover(root).in_split("train")[:5]
    pre = meta.preprocess
    images = [load_pixels(r, min_size=pre.image_size) for r in records]
    rendered = _model_pixels(
        _shifted(images, [0] * len(images), None, 0, 0, pre.image_size), pre.image_size, pre.resize_mode
    )
    expected = np.stack([decode_record(r, pre.image_size, pre.resize_mode) for r in records])
    assert np.array_equal(rendered, expected)


def test_same_seed_same_numbers_and_the_seed_matters(setup):
    root, ckpt = setup
    runs = [
        run_stress(ckpt, root, shifts=["noise"], n_images=0, n_boot=20, seed=s, device="cpu")
        for s in (4, 4, 5)
    ]
    assert runs[0].rows == runs[1].rows
    noisy = [[r["median_p_normal"] for r in run.rows[1:]] for run in runs]
    assert noisy[0] != noisy[2]


def test_the_subsample_takes_whole_patients_from_both_classes_by_seed(setup):
    root, _ = setup
    records = discover(root).in_split("train")
    sample = stress_sample(records, 12, seed=3)
    assert sample == stress_sample(records, 12, seed=3)
    assert 8 <= len(sample) <= 16 and {r.label for r in sample} == {0, 1}
    chosen = {r.patient_id for r in sample}
    assert all(r in sample for r in records if r.patient_id in chosen)  # no patient split in two
    assert stress_sample(records, 0, seed=3) == records == stress_sample(records, 10_000, seed=3)
    with pytest.raises(ConfigError, match="whole number"):
        stress_sample(records, -1, seed=0)


def test_an_unknown_shift_fails_before_anything_is_loaded(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown stress shift.*jpeg"):
        run_stress(tmp_path / "missing.pt", tmp_path, shifts="jpg")


def test_the_figure_draws_one_row_of_panels_per_model(setup, tmp_path):
    root, ckpt = setup
    rows = run_stress(ckpt, root, shifts=["jpeg"], n_images=0, n_boot=20, device="cpu").rows
    both = rows + [{**r, "model": "other"} for r in rows]
    fig = plot_stress(both, tmp_path / "fig.png", title="two models")
    assert len(fig.axes) == 6 and (tmp_path / "fig.png").is_file()
    with (tmp_path / "fig.csv").open(encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 2 * 3 * 4  # models × panels × (clean + 3 severities)


def test_an_ensemble_of_members_with_different_input_sizes_is_stressed_on_one_shifted_film(setup, tmp_path):
    """Each condition renders one shifted film per image, resized to each member's input; the clean
    row is what evaluate gives the ensemble (it failed before: one pixel array cannot feed 32 and 40 px)."""
    root, small = setup
    large = stress_checkpoint(tmp_path / "large" / "best.pt", root, image_size=40, seed=1)
    ensemble = create_ensemble(tmp_path / "ens.pt", [small, large], device="cpu").path
    result = run_stress(ensemble, root, shifts=["gamma", "noise"], n_images=0, n_boot=20, device="cpu")
    assert [(r["shift"], r["severity"]) for r in result.rows][:2] == [("none", 0), ("gamma", 1)]
    val = recorded_validation(ensemble, root)
    clean = evaluate_checkpoint(
        ensemble, val, split=val.splits()[0], out_dir=tmp_path, n_boot=20, device="cpu"
    )
    for column, metric in (("auc", "roc_auc"), ("specificity", "specificity")):
        assert result.clean[column] == pytest.approx(clean.metrics["checkpoint"].estimates[metric].value)
