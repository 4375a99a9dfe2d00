"""Logs a batch system can read: progress bars only on a terminal; without one (CI, SLURM, ``| tee``)
one log line per epoch and per phase instead of a carriage-return stream; ``--no-progress`` reaches
every bar, the image-decode bar included."""

from __future__ import annotations

import io
import logging
import sys

import pytest
import yaml
from tests.conftest import make_kermany_tree

from pneumocxr.cli.main import main
from pneumocxr.config import DataConfig, Preprocess, TrainConfig
from pneumocxr.progress import show_bars
from pneumocxr.training.datamodule import ChestXrayDataModule


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch):
    """Call it in the test body (pytest's own capture re-installs its streams after fixtures run):
    stdout and stderr become terminals; returns them."""

    def install() -> tuple[Terminal, Terminal]:
        out, err = Terminal(), Terminal()
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        return out, err

    return install


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_kermany_tree(tmp_path_factory.mktemp("progress") / "cx", splits=("train",), size=(32, 32))


def test_bars_only_when_asked_and_both_streams_are_terminals(monkeypatch):
    monkeypatch.setattr(sys, "stdout", Terminal())
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert show_bars(True) and not show_bars(False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # `2> log`, SLURM, CI
    assert not show_bars(True)
    monkeypatch.setattr(sys, "stderr", Terminal())
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # `| tee`: Lightning's bars go to stdout
    assert not show_bars(True)


def _datamodule(tree, tmp_path, progress: bool) -> ChestXrayDataModule:
    data = DataConfig(root=str(tree), val_fraction=0.3)
    return ChestXrayDataModule(
        data, TrainConfig(batch_size=4), Preprocess(image_size=16), tmp_path, progress=progress
    )


@pytest.mark.parametrize("progress", [True, False])
def test_the_decode_bar_follows_progress_on_a_terminal(tree, tmp_path, terminal, caplog, progress):
    caplog.set_level(logging.INFO, logger="pneumocxr.data.cache")
    _, err = terminal()
    _datamodule(tree, tmp_path / "cache", progress).prepare_data()
    drawn = err.getvalue()
    assert ("decoding images" in drawn) is progress  # --no-progress (progress=False) reaches this bar
    assert any(r.getMessage().startswith("decoded 24 of 24 images in") for r in caplog.records)


def test_without_a_terminal_the_decode_phase_is_one_log_line(tree, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="pneumocxr.data.cache")
    _datamodule(tree, tmp_path / "cache", True).prepare_data()
    printed = capsys.readouterr()
    assert "\r" not in printed.err + printed.out and "decoding images" not in printed.err
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("decoded")] == [
        caplog.records[-1].getMessage()
    ]


def _train(tree, tmp_path, *more: str) -> int:
    config = tmp_path / "run.yaml"
    settings = {
        "data": {"root": str(tree), "val_fraction": 0.3, "cache_dir": str(tmp_path / "cache")},
        "model": {"name": "custom_cnn", "image_size": 32},
        "train": {"max_epochs": 2, "batch_size": 8, "precision": "32", "accelerator": "cpu"},
    }
    config.write_text(yaml.safe_dump(settings))
    return main(["train", "--config", str(config), "--out", str(tmp_path / "run"), *more])


def _epoch_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pneumocxr.training.progress"]


def test_train_without_a_terminal_logs_one_line_per_epoch_and_draws_no_bar(tree, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    assert (
        _train(tree, tmp_path) == 0
    )  # progress asked for (the default), but stdout/stderr are not terminals
    printed = capsys.readouterr()
    assert "\r" not in printed.out + printed.err
    assert "decoding images" not in printed.err and "Epoch 0" not in printed.out + printed.err
    lines = _epoch_lines(caplog)
    assert lines[0].startswith("phase 1: epochs 1–2")
    assert [line.split(":")[0] for line in lines[1:]] == ["phase 1 epoch 1/2", "phase 1 epoch 2/2"]
    assert all("val_auc" in line and "train_loss" in line for line in lines[1:])


def test_no_progress_on_a_terminal_draws_no_bar_at_all(tree, tmp_path, terminal, caplog):
    caplog.set_level(logging.INFO)
    streams = terminal()
    assert _train(tree, tmp_path, "--no-progress") == 0
    out, err = (stream.getvalue() for stream in streams)
    assert "\r" not in out + err and "decoding images" not in err
    assert len(_epoch_lines(caplog)) == 3  # the phase line and one per epoch instead


def test_train_on_a_terminal_still_draws_bars(tree, tmp_path, terminal):
    streams = terminal()
    assert _train(tree, tmp_path) == 0
    out, err = (stream.getvalue() for stream in streams)
    assert "decoding images" in err and "\r" in out  # tqdm's decode bar; Lightning's epoch bar
