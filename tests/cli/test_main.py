"""The CLI's contract: user mistakes become one line on stderr and exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pneumocxr.cli.main import main


def test_no_command_prints_help_and_returns_2(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "pneumocxr" in capsys.readouterr().out


def test_python_dash_m_works():
    result = subprocess.run(
        [sys.executable, "-m", "pneumocxr", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "data" in result.stdout
