"""``pneumocxr run`` end to end on synthetic data: the output tree, reuse on a re-run, recovery after a
kill, honest split labels without a test split, models skipped for want of pretrained weights
(offline), exit codes and what is printed. How each model's recipe is chosen and the weights
pre-flight are in tests/workflows/run/."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from tests.conftest import make_kermany_tree

from pneumocxr.cli import run_cmd
from pneumocxr.cli.main import main
from pneumocxr.workflows.run import pipeline as workflow
from pneumocxr.workflows.run import recipes as run_recipes
from pneumocxr.workflows.run import weights as run_weights
from pneumocxr.workflows.validation import CARVED_VALIDATION_SPLIT

MODELS = ("custom_cnn", "vgg16_transfer")
CPU_MODELS = ("efficientnet_lite0", "custom_cnn", "vgg16_transfer")
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FIX = "--set vgg16_transfer:model.weights=/path/to/vgg16-397923af.pth"
# Tiny runs: 32 px, one epoch, no ImageNet download (tests have no network), few bootstrap resamples.
TINY = ["model.image_size=32", "train.max_epochs=1", "train.batch_size=8", "model.pretrained=false"]
OPTIONS = ["--preset", "reference", "--no-progress", "--workers", "1", "--speed-seconds", "0.05"]
OPTIONS += ["--n-boot", "200"]


def _run(data: Path, out: Path, *more: str) -> tuple[int, str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["run", "--data", str(data), "--out", str(out), *OPTIONS, "--set", *TINY, *more])
    return code, stdout.getvalue()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _summary(out: Path) -> dict:
    return json.loads((out / "results" / "run_summary.json").read_text())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One run on a dataset with a test split: (data, out, printed)."""
    base = tmp_path_factory.mktemp("pipeline")
    data = make_kermany_tree(base / "chest_xray", size=(32, 32))
    out = base / "output"
    code, printed = _run(data, out)
    assert code == 0, printed
    return data, out, printed


def test_run_writes_the_reference_output_tree(pipeline):
    _, out, printed = pipeline
    for name in MODELS:
        assert (out / "models" / f"{name}.pt").is_file()
        assert os.path.samefile(out / "models" / f"{name}.pt", out / "runs" / name / "best.pt")
        assert (out / "evaluation" / name / "predictions.csv").is_file()
        assert (out / "stress" / name / "stress.csv").is_file()  # the shift-stress suite on validation
        card = (out / "model_cards" / f"{name}.md").read_text()
        assert "NOT a medical device" in card and "Stress" in card
    for plot in (
        "dataset_distribution",
        "roc_comparison",
        "confusion_matrix_comparison",
        "gradcam_visualizations",
    ):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000
    results = (
        "performance_metrics.csv",
        "data_check.json",
        "comparison.csv",
        "comparison.md",
        "stress_summary.csv",
    )
    for result in results:
        assert (out / "results" / result).is_file()
    assert (out / "report.html").is_file()
    assert f"[{len(workflow.STEPS)}/{len(workflow.STEPS)}] report" in printed and "validation AUC" in printed


def test_metrics_and_comparison_are_on_the_test_split_for_both_models(pipeline):
    _, out, _ = pipeline
    rows = _rows(out / "results" / "performance_metrics.csv")
    assert {(r["model"], r["split"]) for r in rows} == {(m, "test") for m in MODELS}
    assert {r["threshold_kind"] for r in rows} == {"checkpoint", "fixed_0.5"}
    assert all(r["n"] == "24" and 0.0 <= float(r["roc_auc"]) <= 1.0 for r in rows)
    table = _rows(out / "results" / "comparison.csv")
    assert [(r["split"], r["model"]) for r in table] == [("test", m) for m in MODELS]
    assert (out / "results" / "comparison.md").read_text().startswith("# Model comparison on: test")


def test_run_summary_says_what_ran_on_which_split(pipeline):
    data, out, _ = pipeline
    summary = _summary(out)
    assert summary["status"] == "completed" and summary["preset"]["resolved"] == "reference"
    steps = summary["steps"]
    assert [s["name"] for s in steps] == [name for name, _ in workflow.STEPS]
    assert all(s["wall_s"] >= 0 and not s["status"].startswith(("failed", "interrupted")) for s in steps)
    for name in MODELS:
        model = summary["models"][name]
        assert model["training"] == "trained" and model["recipe"].endswith(".yaml")
        assert model["config"]["model"]["image_size"] == 32 and model["config"]["data"]["root"] == str(data)
        assert 0.0 < model["operating_point"]["threshold"] < 1.0
    [evaluation] = summary["evaluations"]
    assert evaluation["split"] == "test" and evaluation["used_for_model_selection"] is False
    assert set(evaluation["models"]) == set(MODELS)
    assert {"torch", "lightning", "pneumocxr"} <= set(summary["versions"])


@pytest.mark.slow
def test_second_run_reuses_trainings_and_predictions(pipeline):
    data, out, _ = pipeline
    stamps = {m: (out / "runs" / m / "best.pt").stat().st_mtime_ns for m in MODELS}
    code, printed = _run(data, out)
    assert code == 0
    summary = _summary(out)
    for name in MODELS:
        assert summary["models"][name]["training"] == "reused"
        assert (out / "runs" / name / "best.pt").stat().st_mtime_ns == stamps[name]  # not retrained
        metrics = json.loads((out / "evaluation" / name / "metrics.json").read_text())
        assert metrics["reused_predictions"] is True
    assert printed.count(": reused (") == 2
    assert not list((out / "runs").glob("*.previous-*"))


@pytest.mark.slow
def test_without_a_test_split_numbers_are_labelled_as_validation(tmp_path):
    data = make_kermany_tree(tmp_path / "chest_xray", splits=("train", "val"), size=(32, 32))
    out = tmp_path / "output"
    code, printed = _run(data, out)
    assert code == 0, printed
    official = "official val (24 images)"
    rows = _rows(out / "results" / "performance_metrics.csv")
    assert {r["split"] for r in rows} == {CARVED_VALIDATION_SPLIT, official}  # never "test"
    assert {r["model"] for r in rows} == set(MODELS)
    assert {r["split"] for r in _rows(out / "results" / "comparison.csv")} == {CARVED_VALIDATION_SPLIT}
    assert CARVED_VALIDATION_SPLIT in (out / "results" / "comparison.md").read_text().splitlines()[0]
    assert {r["split"] for r in _rows(out / "official_val" / "results" / "comparison.csv")} == {official}
    metrics = json.loads((out / "evaluation" / "custom_cnn" / "metrics.json").read_text())
    assert metrics["split"] == CARVED_VALIDATION_SPLIT
    assert metrics["selection"]["could_have_been_used_for_selection"] is True
    val_counts = _summary(out)["models"]["custom_cnn"]["validation_split"]["val_counts"]
    assert metrics["n_images"] == sum(val_counts)
    evaluations = _summary(out)["evaluations"]
    assert [(e["kind"], e["used_for_model_selection"]) for e in evaluations] == [
        ("carved_validation", True),
        ("official_val", False),
    ]
    assert f"   {CARVED_VALIDATION_SPLIT}: at each model's" in printed
    assert "   test: at each model's" not in printed and "   on test:" not in printed


@pytest.mark.slow
def test_a_run_killed_mid_training_completes_when_run_again(tmp_path):
    data = make_kermany_tree(tmp_path / "chest_xray", size=(32, 32))
    out = tmp_path / "output"
    # vgg16 trains longer and saves every step, so the kill lands inside its training
    slow_vgg = ["vgg16_transfer:train.max_epochs=4", "vgg16_transfer:train.checkpoint_every_n_steps=1"]
    argv = ["run", "--data", str(data), "--out", str(out), *OPTIONS, "--set", *TINY, *slow_vgg]
    env = {**os.environ, "PYTHONPATH": str(Path(run_cmd.__file__).parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pneumocxr", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    started = out / "runs" / "vgg16_transfer" / "inputs.json"
    deadline = time.monotonic() + 600
    while not started.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.is_file(), proc.stderr.read().decode() if proc.poll() is not None else "timed out"
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    finished = out / "runs" / "custom_cnn" / "best.pt"
    stamp = finished.stat().st_mtime_ns
    assert not (out / "runs" / "vgg16_transfer" / "best.pt").exists()

    code, printed = _run(data, out, *slow_vgg)
    assert code == 0, printed
    summary = _summary(out)
    assert summary["status"] == "completed"
    assert summary["models"]["custom_cnn"]["training"] == "reused" and finished.stat().st_mtime_ns == stamp
    assert summary["models"]["vgg16_transfer"]["training"] in ("resumed", "trained")
    assert summary["models"]["vgg16_transfer"]["epochs_run"] >= 1
    assert {r["model"] for r in _rows(out / "results" / "performance_metrics.csv")} == set(MODELS)


def test_an_interrupted_run_records_how_far_it_got(tmp_path, monkeypatch):
    data = make_kermany_tree(tmp_path / "chest_xray", splits=("train",), patients_per_class=3)

    def interrupted(state):
        raise KeyboardInterrupt

    monkeypatch.setattr(workflow, "STEPS", (workflow.STEPS[0], ("train", interrupted)))
    code, _ = _run(data, tmp_path / "out")
    assert code == 130  # main's Ctrl-C exit: "finished work is kept"
    summary = _summary(tmp_path / "out")
    assert summary["status"] == "interrupted"
    assert [(s["name"], s["status"]) for s in summary["steps"]] == [
        ("data check", "done"),
        ("train", "interrupted"),
    ]
    assert (tmp_path / "out" / "results" / "data_check.json").is_file()


@pytest.mark.parametrize(
    ("step", "module"),
    [("grad-cam", "pneumocxr.explain"), ("report", "pneumocxr.evaluation.report")],
)
def test_a_step_that_cannot_run_fails_the_run_after_the_other_steps(
    tmp_path, monkeypatch, capsys, step, module
):
    """A module missing from the install is not a quiet "skipped": exit 1 and one line naming the step and
    why, after every other requested step has run and written its files."""
    data = make_kermany_tree(tmp_path / "chest_xray", splits=("train",), patients_per_class=3)
    out = tmp_path / "out"
    steps = dict(workflow.STEPS)
    monkeypatch.setattr(
        workflow, "STEPS", (("data check", steps["data check"]), (step, steps[step]), ("eda", steps["eda"]))
    )
    monkeypatch.setitem(sys.modules, module, None)  # import raises ModuleNotFoundError, as if not installed
    code = main(["run", "--data", str(data), "--out", str(out), "--workers", "1"])
    captured = capsys.readouterr()
    assert code == 1
    [line] = captured.err.strip().splitlines()
    assert (
        line.startswith(f"pneumocxr: error: run incomplete: step '{step}' could not run") and module in line
    )
    summary = _summary(out)
    assert summary["status"] == "incomplete"
    statuses = [(s["name"], s["status"].split(":")[0]) for s in summary["steps"]]
    assert statuses == [("data check", "done"), (step, "not run"), ("eda", "done")]
    assert (out / "results" / "data_check.json").is_file()  # nothing done is lost …
    assert (out / "plots" / "dataset_distribution.png").is_file()  # … and the steps after it still ran


def test_until_stops_after_the_named_step_without_resolving_recipes(tmp_path, capsys):
    data = make_kermany_tree(tmp_path / "chest_xray", splits=("train",), patients_per_class=3)
    out = tmp_path / "out"
    # --preset cpu would need recipes; nothing is trained, so none is looked up
    assert main(["run", "--data", str(data), "--out", str(out), "--until", "eda", "--preset", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "[1/2] data check" in printed and "[2/2] eda" in printed
    assert not (out / "runs").exists() and (out / "plots" / "dataset_distribution.png").is_file()
    summary = _summary(out)
    assert summary["status"] == "completed" and [s["name"] for s in summary["steps"]] == ["data check", "eda"]


# ----------------------------------------------------------------------------- unavailable weights


def _no_network(*args, **kwargs):
    raise URLError("network is unreachable (test)")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """torch.hub with an empty cache and no network: ImageNet VGG16 cannot be had."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)


def _run_both(data: Path, out: Path, capsys, *more: str) -> tuple[int, str, str]:
    argv = ["run", "--data", str(data), "--out", str(out), *OPTIONS, "--set", *TINY, *more]
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_model_without_its_weights_is_skipped_and_the_run_completes(tmp_path, offline, capsys):
    data = make_kermany_tree(tmp_path / "chest_xray", size=(32, 32))
    out = tmp_path / "output"
    code, printed, _ = _run_both(data, out, capsys, "vgg16_transfer:model.pretrained=true")
    assert code == 0, printed  # the offline-only reason is not a failure (workflow.RunResult.exit_code)
    warning = "WARNING: vgg16_transfer is NOT trained"
    lines = printed.splitlines()
    assert printed.count(warning) == 2  # when found (before any work) and as the very last line
    assert lines.index(next(x for x in lines if x.startswith(warning))) < lines.index(
        f"== [1/{len(workflow.STEPS)}] data check"
    )
    assert lines[-1].startswith(warning) and VGG16_FIX in lines[-1] and VGG16_URL in lines[-1]
    assert "custom_cnn is the only trained model: evaluated alone, no comparison" in printed

    summary = _summary(out)
    assert summary["status"] == "completed"
    vgg = summary["models"]["vgg16_transfer"]
    assert vgg["status"] == "skipped" and vgg["detected"] == "pre-flight"
    assert VGG16_URL in vgg["reason"] and "URLError" in vgg["reason"]
    assert vgg["fix"] == VGG16_FIX and vgg["download"] == VGG16_URL
    assert summary["skipped_models"] == {"vgg16_transfer": vgg["reason"]}
    assert summary["models"]["custom_cnn"]["status"] == "trained"
    assert summary["preflight"]["pretrained_weights"] == {
        "custom_cnn": "none needed (trained from scratch)",
        "vgg16_transfer": "unavailable: skipped",
    }
    assert "train" in [s["name"] for s in summary["steps"]]
    assert (
        not (out / "runs" / "vgg16_transfer").exists() and not (out / "models" / "vgg16_transfer.pt").exists()
    )
    rows = _rows(out / "results" / "performance_metrics.csv")
    assert {(r["model"], r["split"]) for r in rows} == {("custom_cnn", "test")}  # never a random-init vgg16
    assert [set(e["models"]) for e in summary["evaluations"]] == [{"custom_cnn"}]
    assert not (out / "results" / "comparison.csv").exists()
    assert (out / "plots" / "gradcam_visualizations.png").is_file()
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "were NOT trained" in page and "vgg16_transfer" in page
    assert f"To train it: {VGG16_FIX}" in page and VGG16_URL in page


def test_when_every_model_is_skipped_the_run_fails_in_one_line(tmp_path, offline, capsys, monkeypatch):
    monkeypatch.setitem(run_recipes.PRESET_RECIPES, "reference", {"vgg16_transfer": "seed_vgg16"})
    data = make_kermany_tree(tmp_path / "chest_xray", splits=("train",), patients_per_class=3)
    out = tmp_path / "output"
    code, printed, errors = _run_both(data, out, capsys, "vgg16_transfer:model.pretrained=true")
    assert code == 2
    [line] = errors.strip().splitlines()
    assert line.startswith("pneumocxr: error: no model can be trained: pretrained weights are unavailable")
    assert VGG16_FIX in line and VGG16_URL in line
    assert "WARNING: vgg16_transfer is NOT trained" in printed and "== [1/" not in printed  # no work done
    summary = _summary(out)
    assert summary["status"] == "failed" and summary["steps"] == []
    assert summary["models"]["vgg16_transfer"]["status"] == "skipped"


def test_weights_lost_after_the_preflight_are_caught_in_training(tmp_path, offline, capsys, monkeypatch):
    """The pre-flight said yes (patched), training cannot load them: skipped there, same record."""
    monkeypatch.setitem(run_recipes.PRESET_RECIPES, "reference", {"vgg16_transfer": "seed_vgg16"})
    monkeypatch.setattr(run_weights, "resolve_weights", lambda config: 0.0)
    data = make_kermany_tree(tmp_path / "chest_xray", splits=("train",), patients_per_class=3)
    code, printed, errors = _run_both(data, tmp_path / "out", capsys, "vgg16_transfer:model.pretrained=true")
    assert code == 2 and "no model can be trained" in errors
    assert printed.count("WARNING: vgg16_transfer is NOT trained") == 1 and VGG16_FIX in printed
    summary = _summary(tmp_path / "out")
    vgg = summary["models"]["vgg16_transfer"]
    assert vgg["status"] == "skipped" and vgg["detected"] == "training" and vgg["fix"] == VGG16_FIX
    assert summary["steps"][-1]["name"] == "train" and summary["steps"][-1]["status"].startswith("failed")


def test_a_named_weights_file_that_is_missing_fails_before_any_work(tmp_path, capsys):
    data = make_kermany_tree(tmp_path / "chest_xray", splits=("train",), patients_per_class=3)
    missing = tmp_path / "nowhere" / "vgg16.pth"
    more = ["vgg16_transfer:model.pretrained=true", f"vgg16_transfer:model.weights={missing}"]
    code, printed, errors = _run_both(data, tmp_path / "out", capsys, *more)
    assert code == 2  # the user named this file: a typo must not quietly become a skipped model
    [line] = errors.strip().splitlines()
    assert line.startswith("pneumocxr: error: vgg16_transfer: weights file") and str(missing) in line
    assert "--set vgg16_transfer:model.weights=" in line
    assert "== [1/" not in printed and not (tmp_path / "out" / "results" / "data_check.json").exists()
