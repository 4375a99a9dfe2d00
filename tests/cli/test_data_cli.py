"""``pneumocxr data check``, ``data eda`` and ``run``: exit codes, output, files written."""

from __future__ import annotations

import json
import shutil

import pytest

from pneumocxr.cli.main import main


@pytest.fixture
def dirty_tree(kermany_tree):
    """The synthetic tree plus an exact copy within train and one unreadable file."""
    folder = kermany_tree / "train" / "PNEUMONIA"
    shutil.copy(folder / "person100_bacteria_0.jpeg", folder / "person100_bacteria_5.jpeg")
    (kermany_tree / "val" / "NORMAL" / "IM-0299-0001.jpeg").write_bytes(b"\xff\xd8 truncated")
    return kermany_tree


def test_check_clean_data_exits_0_with_a_summary(kermany_tree, capsys):
    assert main(["data", "check", "--data", str(kermany_tree), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "72 images" in out
    assert "unreadable files: 0" in out
    assert "exact duplicates (sha256 of bytes): 0 groups" in out


def test_check_unreadable_file_exits_1_and_names_it(dirty_tree, capsys):
    assert main(["data", "check", "--data", str(dirty_tree), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "unreadable files: 1" in out and "IM-0299-0001.jpeg" in out
    assert "exact duplicates (sha256 of bytes): 1 groups" in out


def test_check_allow_bad_exits_0(dirty_tree):
    assert main(["data", "check", "--data", str(dirty_tree), "--allow-bad", "--workers", "1"]) == 0


def test_check_json_prints_the_full_report_on_stdout(dirty_tree, capsys):
    code = main(
        ["data", "check", "--data", str(dirty_tree), "--json", "--near-threshold", "10", "--workers", "1"]
    )
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["val"] == {"NORMAL": 13, "PNEUMONIA": 12}
    assert report["near_duplicates"]["threshold"] == 10
    assert report["exact_duplicates"]["groups"][0]["patients"] == ["person100"]
    assert [u["path"].rsplit("/", 1)[-1] for u in report["unreadable"]] == ["IM-0299-0001.jpeg"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "{missing}"], "does not exist"),
        (["--data", "{tree}", "--near-threshold", "999"], "near_threshold"),
    ],
)
def test_check_user_mistakes_exit_2_with_one_line(kermany_tree, tmp_path, capsys, argv, message):
    argv = [a.format(missing=tmp_path / "nope", tree=kermany_tree) for a in argv]
    assert main(["data", "check", *argv, "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_eda_writes_plots_and_results(kermany_tree, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "data",
        "eda",
        "--data",
        str(kermany_tree),
        "--out",
        str(out),
        "--image-size",
        "16",
        "--workers",
        "1",
    ]
    assert main(argv) == 0
    assert (out / "plots" / "dataset_distribution.png").is_file()
    assert (out / "results" / "eda_summary.json").is_file()
    assert "EDA of 72 images" in capsys.readouterr().out


def test_run_reports_bad_files_without_failing(dirty_tree, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--data", str(dirty_tree), "--out", str(out), "--workers", "1", "--until", "eda"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "[1/2] data check" in printed and "[2/2] eda" in printed
    assert "unreadable files: 1" in printed
    check = json.loads((out / "results" / "data_check.json").read_text())
    assert check["exact_duplicates"]["n_groups"] == 1 and len(check["unreadable"]) == 1
    summary = json.loads((out / "results" / "eda_summary.json").read_text())
    assert len(summary["plots"]) == 5 and len(summary["unreadable"]) == 1
