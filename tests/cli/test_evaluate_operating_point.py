"""``evaluate --threshold-rule RULE --prevalence P``: printed, recorded; bad values one line, exit 2."""

from __future__ import annotations

import json

import pytest
import torch
from tests.conftest import make_kermany_tree

from pneumocxr.cli.main import main
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import create_model, save_checkpoint

RULES = {"youden": 0.47, "youden_edge": 0.52, "target_sensitivity": 0.3, "bootstrap_median": 0.46}


def checkpoint(path, *, with_rules: bool = True):
    """An untrained 32-px custom_cnn; with the rule table ``train`` stores, or as an older file."""
    torch.manual_seed(0)
    model = create_model("custom_cnn", image_size=32, in_channels=1)
    rules = {name: {"threshold": t, "sensitivity": 0.9, "specificity": 0.8} for name, t in RULES.items()}
    op = {"threshold": 0.47, "method": "youden", "threshold_rule": "youden", "rules": rules}
    if not with_rules:
        op = {"threshold": 0.47, "method": "youden"}
    return save_checkpoint(
        path, model, model_name="custom_cnn", model_kwargs={"image_size": 32, "in_channels": 1},
        preprocess=model.spec.preprocess, class_names=CLASS_NAMES, threshold=0.47, temperature=0.05,
        extra={"operating_point": op},
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def argv(tmp_path):
    tree = make_kermany_tree(tmp_path / "cx", splits=("test",), patients_per_class=2)
    return [
        "evaluate",
        "--data",
        str(tree),
        "--out",
        str(tmp_path / "o"),
        "--n-boot",
        "30",
        "--device",
        "cpu",
    ]


def test_prevalence_prints_ppv_and_npv_and_records_them(tmp_path, argv, capsys):
    ckpt = checkpoint(tmp_path / "run" / "best.pt")
    assert main([*argv, "--checkpoint", str(ckpt), "--prevalence", "0.1"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("at prevalence 0.1")]
    assert len(lines) == 2 and "(checkpoint)" in lines[0] and "PPV" in lines[0] and "NPV" in lines[0]
    assert "patient bootstrap percentile interval, n=30" in out
    summary = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert summary["prevalence_adjusted"]["checkpoint"]["prevalence"] == 0.1


def test_threshold_rule_evaluates_at_that_stored_threshold(tmp_path, argv, capsys):
    ckpt = checkpoint(tmp_path / "run" / "best.pt")
    assert main([*argv, "--checkpoint", str(ckpt), "--threshold-rule", "target_sensitivity"]) == 0
    out = capsys.readouterr().out
    assert "run@target_sensitivity (custom_cnn)" in out and "threshold 0.3 (checkpoint)" in out
    assert "threshold rule: target_sensitivity, threshold 0.3" in out
    summary = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert summary["threshold_rule"]["rule"] == "target_sensitivity"
    assert summary["checkpoint_meta"]["threshold"] == 0.47  # the checkpoint's own, recorded as such


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prevalence", "0"], "prevalence='0': use the share of PNEUMONIA"),
        (["--prevalence", "1"], "prevalence='1': use the share of PNEUMONIA"),
        (["--prevalence", "ten"], "prevalence='ten': use the share of PNEUMONIA"),
        (
            ["--threshold-rule", "median"],
            "--threshold-rule 'median' is not a threshold rule; use one of youden",
        ),
    ],
)
def test_bad_values_are_one_line_and_exit_2(tmp_path, argv, capsys, extra, message):
    ckpt = checkpoint(tmp_path / "m.pt")
    assert main([*argv, "--checkpoint", str(ckpt), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_checkpoint_without_stored_rules_is_refused_clearly(tmp_path, argv, capsys):
    ckpt = checkpoint(tmp_path / "old.pt", with_rules=False)
    assert main([*argv, "--checkpoint", str(ckpt), "--threshold-rule", "youden"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "old.pt stores no threshold rules" in err and "omit --threshold-rule" in err
    )
