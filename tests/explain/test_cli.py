"""``pneumocxr explain`` on a PNG, a folder and a DICOM; outputs in the original geometry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dicom_factory import ramp, write_dicom
from PIL import Image

from pneumocxr.cli import explain_cmd
from pneumocxr.cli.main import main
from pneumocxr.explain import METHODS, TARGETS


def _explain(checkpoint, *inputs, out, extra=()):
    return main(["explain", "--checkpoint", str(checkpoint), *map(str, inputs), "--out", str(out), *extra])


def _report(out, stem):
    return json.loads((out / f"{stem}.json").read_text())


def test_a_wide_png_gets_overlay_raw_map_and_report(tmp_path, checkpoint, make_png, capsys):
    image = make_png(tmp_path / "in" / "wide chest.png", 60, 180)
    out = tmp_path / "out"
    assert _explain(checkpoint, image, out=out, extra=["--target", "normal"]) == 0
    report = _report(out, "wide_chest")
    assert report["image_size"] == {"height": 60, "width": 180}
    assert report["target_class"] == "NORMAL"
    assert report["method"] == "gradcam" and report["layer"] == "net.features.block4.relu2"
    assert report["threshold"] == 0.4 and report["temperature"] == 1.5
    assert report["prediction"] in ("NORMAL", "PNEUMONIA")
    assert report["prediction"] == ("PNEUMONIA" if report["calibrated_probability"] >= 0.4 else "NORMAL")
    assert 0.0 <= report["probability"] <= 1.0
    raw = np.load(out / report["outputs"]["raw_map"])
    assert raw.shape == (32, 32) and raw.min() >= 0 and raw.max() <= 1
    width, height = Image.open(out / report["outputs"]["overlay"]).size
    assert width > 2 * height  # drawn at the original 3:1 aspect (plus colour bar), not square
    assert "wide chest.png: " in capsys.readouterr().out


def test_a_folder_is_explained_image_by_image(tmp_path, checkpoint, make_png):
    folder = tmp_path / "films"
    make_png(folder / "a.png", 40, 40)
    make_png(folder / "sub" / "b.png", 50, 30, seed=1)
    make_png(folder / "sub2" / "a.png", 30, 50, seed=2)  # same stem as a.png: must not overwrite it
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert _explain(checkpoint, folder, out=out, extra=["--method", "eigencam"]) == 0
    names = sorted(p.name for p in out.glob("*.json"))
    assert names == ["a-2.json", "a.json", "b.json"]
    assert _report(out, "a-2")["image_size"] == {"height": 30, "width": 50}
    assert _report(out, "b")["class_agnostic"] is True


def test_a_dicom_is_explained_in_its_own_geometry(tmp_path, make_checkpoint):
    checkpoint = make_checkpoint(tmp_path / "lb.pt", resize_mode="letterbox")
    dicom = write_dicom(tmp_path / "film.dcm", ramp(48, 96, 4095), bits_stored=12)
    out = tmp_path / "out"
    assert _explain(checkpoint, dicom, out=out, extra=["--method", "gradcam++"]) == 0
    report = _report(out, "film")
    assert report["image_size"] == {"height": 48, "width": 96}
    assert report["model_input"] == {"size": 32, "resize_mode": "letterbox"}
    assert (out / "film.overlay.png").is_file()


def test_a_broken_file_is_reported_and_the_rest_explained(tmp_path, checkpoint, make_png, capsys):
    folder = tmp_path / "mixed"
    make_png(folder / "good.png", 40, 40)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    assert _explain(checkpoint, folder, out=out) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "Traceback" not in err
    assert (out / "good.json").is_file() and not (out / "broken.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "{tmp}/missing.pt", "{tmp}/img/x.png"], "missing.pt"),
        (["--checkpoint", "{ckpt}", "{tmp}/nothing.png"], "nothing.png"),
        (["--checkpoint", "{ckpt}", "{tmp}/empty"], "no image files"),
        (["--checkpoint", "{ckpt}", "{tmp}/img", "--device", "tpu"], "tpu"),
    ],
)
def test_user_mistakes_are_one_line_errors(tmp_path, checkpoint, make_png, capsys, args, message):
    (tmp_path / "empty").mkdir()
    make_png(tmp_path / "img" / "x.png", 20, 20)
    argv = [a.format(tmp=tmp_path, ckpt=checkpoint) for a in args]
    assert main(["explain", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_choices_match_the_library():
    assert explain_cmd.METHODS == METHODS
    assert explain_cmd.TARGETS == TARGETS
