"""``pneumocxr evaluate`` and ``compare``: exit codes, printed tables, undefined metrics, one-line errors."""

from __future__ import annotations

import shutil

import pytest
import torch
from tests.conftest import make_kermany_tree

from pneumocxr.cli.main import main
from pneumocxr.labels import CLASS_NAMES
from pneumocxr.models import create_model, save_checkpoint


def checkpoint(path, seed=0, threshold=0.5):
    """An untrained 32-px custom_cnn: evaluation does not care how good it is."""
    torch.manual_seed(seed)
    model = create_model("custom_cnn", image_size=32, in_channels=1)
    kwargs = {"image_size": 32, "in_channels": 1}
    return save_checkpoint(
        path, model, model_name="custom_cnn", model_kwargs=kwargs, preprocess=model.spec.preprocess,
        class_names=CLASS_NAMES, threshold=threshold, temperature=0.05,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_evaluate_prints_metrics_with_cis_and_writes_outputs(tmp_path, capsys):
    tree = make_kermany_tree(tmp_path / "cx", splits=("test",), patients_per_class=2)
    ckpt = checkpoint(tmp_path / "run" / "best.pt", threshold=0.4)
    argv = [
        "evaluate",
        "--checkpoint",
        str(tmp_path / "run"),
        "--data",
        str(tree),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*argv, "--n-boot", "30", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "run (custom_cnn)" in out and "8 images" in out
    assert "threshold 0.4 (checkpoint)" in out and "threshold 0.5 (fixed_0.5)" in out
    auc_line = next(line for line in out.splitlines() if line.startswith("ROC AUC"))
    assert auc_line.count("(") == 2 and "–" in auc_line  # value (low–high) at both thresholds
    assert (tmp_path / "o" / "predictions.csv").is_file() and ckpt.is_file()
    assert (tmp_path / "o" / "results" / "performance_metrics.csv").is_file()


def test_single_class_folder_reports_undefined_auc_and_exits_0(tmp_path, capsys):
    tree = make_kermany_tree(tmp_path / "cx", splits=("test",), patients_per_class=2)
    shutil.rmtree(tree / "test" / "PNEUMONIA")
    argv = ["evaluate", "--checkpoint", str(checkpoint(tmp_path / "m.pt")), "--data", str(tree)]
    assert main([*argv, "--out", str(tmp_path / "o"), "--n-boot", "20"]) == 0
    out = capsys.readouterr().out
    assert "undefined: ROC AUC — only one class present" in out
    assert "n/a" in next(line for line in out.splitlines() if line.startswith("ROC AUC"))


def test_missing_split_is_one_line_on_stderr_and_exit_2(tmp_path, capsys):
    tree = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=1)
    argv = ["evaluate", "--checkpoint", str(checkpoint(tmp_path / "m.pt")), "--data", str(tree)]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no 'test' split (splits present: train)" in err


def test_missing_checkpoint_is_exit_2(tmp_path, capsys):
    tree = make_kermany_tree(tmp_path / "cx", splits=("test",), patients_per_class=1)
    argv = [
        "evaluate",
        "--checkpoint",
        str(tmp_path / "nope.pt"),
        "--data",
        str(tree),
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_compare_prints_the_table_with_p_values(tmp_path, capsys):
    tree = make_kermany_tree(tmp_path / "cx", splits=("test",), patients_per_class=2)
    a, b = checkpoint(tmp_path / "a.pt", seed=1), checkpoint(tmp_path / "b.pt", seed=2)
    argv = ["compare", str(a), str(b), "--data", str(tree), "--out", str(tmp_path / "o")]
    assert main([*argv, "--n-boot", "20", "--speed-seconds", "0"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert lines[head].split()[:3] == ["model", "params", "img/s"] and "p DeLong" in lines[head]
    assert lines[head + 1].startswith("a ") and lines[head + 2].startswith("b ")
    assert out.count("WARNING (") == 2  # neither checkpoint records its training split
    assert "p-values vs a" in out
    assert (tmp_path / "o" / "plots" / "roc_comparison.png").is_file()
    assert (tmp_path / "o" / "plots" / "confusion_matrix_comparison.png").is_file()
