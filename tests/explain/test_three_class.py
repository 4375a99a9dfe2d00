"""`explain` on a normal-bacterial-viral checkpoint: Grad-CAM of the argmax class, or of a named class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.inference.conftest import write_checkpoint

from pneumocxr.cli.main import main
from pneumocxr.explain import explain_images
from pneumocxr.labels import THREE_CLASS_NAMES


def three_class_checkpoint(path: Path) -> Path:
    return write_checkpoint(path, temperature=1.3, task="normal-bacterial-viral")


def test_default_target_is_the_argmax_class_and_a_named_class_can_be_asked(tmp_path, make_png):
    checkpoint = three_class_checkpoint(tmp_path / "nbv.pt")
    image = make_png(tmp_path / "img" / "x.png", 40, 36)
    run = explain_images(checkpoint, [image], tmp_path / "out")
    item = run.explanations[0]
    report = json.loads(item.report.read_text())
    probs = report["probabilities"]
    assert list(probs) == list(THREE_CLASS_NAMES) and sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    assert item.prediction == max(probs, key=probs.get) == item.target_class
    assert report["threshold"] is None  # argmax: no threshold applies
    viral = explain_images(checkpoint, [image], tmp_path / "viral", target="viral").explanations[0]
    bacterial = explain_images(checkpoint, [image], tmp_path / "bact", target="BACTERIAL").explanations[0]
    assert viral.target_class == "VIRAL" and bacterial.target_class == "BACTERIAL"
    assert not np.array_equal(np.load(viral.raw_map), np.load(bacterial.raw_map))


def test_a_class_the_checkpoint_does_not_have_is_a_one_line_error(tmp_path, make_png, capsys):
    checkpoint = three_class_checkpoint(tmp_path / "nbv.pt")
    image = make_png(tmp_path / "img" / "x.png", 20, 20)
    argv = ["explain", "--checkpoint", str(checkpoint), str(image), "--out", str(tmp_path / "o")]
    assert main([*argv, "--target", "pneumonia"]) == 2
    err = capsys.readouterr().err.strip()
    assert "normal, bacterial, viral, predicted" in err and len(err.splitlines()) == 1
    assert main([*argv, "--target", "viral", "--device", "cpu"]) == 0
    assert "map of VIRAL" in capsys.readouterr().out
