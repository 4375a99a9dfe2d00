"""``run_pipeline`` as a library call: a typed request in, a ``RunResult`` out, its account through the
injected ``notify`` (nothing printed), and the exit status it decides."""

from __future__ import annotations

import json

import pytest
from tests.conftest import make_kermany_tree

from pneumocxr.errors import ConfigError
from pneumocxr.workflows.run import RunRequest, run_pipeline, step_ids
from pneumocxr.workflows.run import pipeline as workflow
from pneumocxr.workflows.run.state import StepNotRun


@pytest.fixture
def data(tmp_path):
    return make_kermany_tree(tmp_path / "chest_xray", splits=("train",), patients_per_class=3)


def test_the_account_goes_to_notify_and_nothing_is_printed(data, tmp_path, capsys):
    lines: list[str] = []
    result = run_pipeline(RunRequest(data, tmp_path / "out", until="eda", workers=1), notify=lines.append)
    assert capsys.readouterr().out == ""
    assert lines[0] == "== [1/2] data check" and "== [2/2] eda" in lines
    assert any(line.startswith("dataset: ") for line in lines)  # the data check's report
    assert (result.status, result.exit_code, result.problem, result.not_run) == ("completed", 0, "", {})
    summary = json.loads(result.summary_file.read_text())
    assert summary["status"] == "completed" and [s["name"] for s in summary["steps"]] == ["data check", "eda"]
    assert summary["arguments"]["until"] == "eda" and summary["arguments"]["data"] == str(data)


def test_an_unknown_step_is_refused_before_any_work(data, tmp_path):
    with pytest.raises(ConfigError, match="--until 'evaluation' is not a step; use one of data-check"):
        run_pipeline(RunRequest(data, tmp_path / "out", until="evaluation"))
    assert not (tmp_path / "out").exists()
    assert step_ids()[:3] == ["data-check", "eda", "train"] and step_ids()[-1] == "report"


def test_a_step_that_cannot_run_makes_the_result_incomplete_with_exit_code_1(data, tmp_path, monkeypatch):
    def cannot(state):
        raise StepNotRun("its module is not installed")

    ran = []
    steps = (("first", lambda s: ran.append(1) or "done"), ("second", cannot), ("third", lambda s: "done"))
    monkeypatch.setattr(workflow, "STEPS", steps)
    lines: list[str] = []
    result = run_pipeline(RunRequest(data, tmp_path / "out"), notify=lines.append)
    assert ran and "   NOT RUN: its module is not installed" in lines and "== [3/3] third" in lines
    assert result.status == "incomplete" and result.exit_code == 1
    assert result.not_run == {"second": "its module is not installed"}
    assert result.problem.startswith("run incomplete: step 'second' could not run: its module is not")
    assert json.loads(result.summary_file.read_text())["status"] == "incomplete"
