"""``pneumocxr evaluate --stress``: the suite after the evaluation, and one-line errors for bad options."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import make_kermany_tree
from tests.inference.test_stress import stress_checkpoint

from pneumocxr.cli.main import main


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run(tmp_path):
    root = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=6, size=(40, 40))
    stress_checkpoint(tmp_path / "run" / "best.pt", root)
    return root, tmp_path / "run"


def evaluate(run_dir, root, out, *extra):
    return main(
        ["evaluate", "--checkpoint", str(run_dir), "--data", str(root), "--split", "validation",
         "--out", str(out), "--n-boot", "20", "--device", "cpu", *extra]
    )  # fmt: skip


def test_stress_flag_adds_the_suite_to_the_evaluation(run, tmp_path, capsys):
    root, run_dir = run
    code = evaluate(
        run_dir, root, tmp_path / "o", "--stress", "--stress-shifts", "zoom_in,text", "--stress-images", "0"
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "shift-stress suite: run on validation (used for model selection: optimistic)" in out
    assert "zoom_in" in out and "worst specificity" in out
    for name in ("stress.csv", "stress.json", "stress.md", "stress.png", "metrics.json"):
        assert (tmp_path / "o" / name).is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--stress", "--stress-shifts", "jpeg,zoom"],
            "unknown stress shift(s) 'zoom'; use a comma-separated",
        ),
        (["--stress-shifts", "jpeg"], "--stress-shifts needs --stress"),
        (["--stress", "--stress-images", "-3"], "--stress-images -3; use a whole number"),
    ],
)
def test_bad_stress_options_are_one_line_and_exit_2(run, tmp_path, capsys, extra, message):
    root, run_dir = run
    assert evaluate(run_dir, root, tmp_path / "o", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()  # failed before anything was evaluated
