"""ONNX export and the ONNX Runtime backend: parity with torch, the sidecar, refusals, the CLI.

The checkpoints are tiny custom_cnns whose logits are spread on purpose (``spread_checkpoint``):
an untrained one gives every image p ≈ 0.497, where parity and "identical decisions" would be
tested on nothing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tests.inference.conftest import IMAGE_SIZE, write_checkpoint

from pneumocxr.cli.main import main
from pneumocxr.errors import CheckpointError, ConfigError
from pneumocxr.inference import load_predictor
from pneumocxr.inference.onnx_runtime import sidecar_path
from pneumocxr.inference.predictor import file_sha256
from pneumocxr.models import to_model_input
from pneumocxr.models.ensemble_file import checkpoint_payload, save_ensemble
from pneumocxr.workflows.onnx_export import export_onnx, synthetic_pixels

SIZE = IMAGE_SIZE  # conftest's checkpoints: 32 px
TOLERANCE = 1e-4  # max |Δ calibrated probability| between ONNX Runtime (fp32) and torch


def spread_checkpoint(path, *, task="binary", threshold=0.5, temperature=1.3, seed=0):
    """A 32-px custom_cnn (conftest's ``write_checkpoint``) whose logits spread over several units
    on synthetic images (``_spread_logits``)."""
    return write_checkpoint(
        path,
        seed=seed,
        task=task,
        threshold=threshold,
        temperature=temperature,
        extra={"operating_point": {"threshold_rule": "youden"}, "split": {"val_patients": ["101", "102"]}},
        prepare=_spread_logits,
    )


def _spread_logits(model):
    """BatchNorm running variances shrunk (each BN layer amplifies ×10), then the last Linear
    rescaled so the logits have mean 0 and std 3 on the check images."""
    model.eval()
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_var.fill_(0.01)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        z = model(to_model_input(torch.from_numpy(synthetic_pixels(SIZE, 24, seed=7)), model.spec.preprocess))
        scale = 3.0 / z.std(dim=0)  # (k,)
        last.weight.mul_(scale[:, None])
        last.bias.mul_(scale).sub_(z.mean(dim=0) * scale)


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """(checkpoint, onnx path, what `pneumocxr export` printed): exported through the CLI."""
    folder = tmp_path_factory.mktemp("onnx_binary")
    ckpt = spread_checkpoint(folder / "best.pt", threshold=0.45)
    out = folder / "model.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out)])
    assert code == 0
    return ckpt, out, printed.getvalue()


@pytest.fixture(scope="module")
def three_class(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx_three")
    ckpt = spread_checkpoint(folder / "three.pt", task="normal-bacterial-viral", temperature=0.8)
    return ckpt, export_onnx(ckpt, folder / "three.onnx").onnx_path


def pixels(n=37, seed=3):
    """Odd-sized batches on purpose: the batch axis must be dynamic (and 1 must work)."""
    return synthetic_pixels(SIZE, n, seed=seed)


def test_export_prints_what_it_wrote_and_its_parity(binary):
    _, out, printed = binary
    assert f"wrote {out}" in printed and "model.onnx.json" in printed
    assert "decisions agree 16/16" in printed


def test_fp32_onnx_gives_torchs_probabilities_and_decisions(binary):
    ckpt, out, _ = binary
    torch_p = load_predictor(ckpt, device="cpu", batch_size=8)
    onnx_p = load_predictor(out, batch_size=8, threads=1)
    for batch in (pixels(), pixels(1, seed=4)):
        a, b = torch_p.predict_arrays(batch), onnx_p.predict_arrays(batch)
        assert np.abs(a.calibrated_probability - b.calibrated_probability).max() <= TOLERANCE
        assert np.abs(a.probability - b.probability).max() <= TOLERANCE
        np.testing.assert_array_equal(a.prediction, b.prediction)
    decided = torch_p.predict_arrays(pixels()).prediction
    assert 0 < decided.sum() < len(decided)  # both classes occur: the decision test can fail


def test_three_class_onnx_keeps_every_class(three_class):
    ckpt, out = three_class
    a = load_predictor(ckpt, device="cpu").predict_arrays(pixels())
    b = load_predictor(out, threads=1).predict_arrays(pixels())
    assert b.class_names == ("NORMAL", "BACTERIAL", "VIRAL") and b.probabilities.shape == (37, 3)
    assert np.abs(a.probabilities - b.probabilities).max() <= TOLERANCE
    np.testing.assert_array_equal(a.prediction, b.prediction)
    assert len(set(a.prediction.tolist())) >= 2


def test_sidecar_says_what_the_graph_is_and_where_it_came_from(binary):
    ckpt, out, _ = binary
    side = json.loads(sidecar_path(out).read_text())
    assert side["onnx_sha256"] == file_sha256(out)
    assert side["source_checkpoint"]["sha256"] == file_sha256(ckpt)
    assert side["preprocess"] == {
        "image_size": 32,
        "channels": 1,
        "mean": [0.0],
        "std": [1.0],
        "resize_mode": "squash",
    }
    assert side["class_names"] == ["NORMAL", "PNEUMONIA"] and side["task"] == "binary"
    assert side["threshold"] == 0.45 and side["threshold_rule"] == "youden" and side["temperature"] == 1.3
    assert side["model_name"] == "custom_cnn" and side["model_kwargs"] == {"image_size": 32, "in_channels": 1}
    assert side["exporter"]["name"] == "torch.onnx.export(dynamo=True)" and side["exporter"]["opset"] == 20
    assert side["graph"]["input"] == {"name": "pixels", "dtype": "uint8", "shape": ["batch", 32, 32]}
    assert side["pneumocxr_version"] and side["quantization"] is None
    assert side["export_check"]["max_abs_probability_difference"] <= TOLERANCE


def test_graph_is_valid_onnx_taking_uint8_pixels_with_a_dynamic_batch(binary):
    import onnx

    model = onnx.load(str(binary[1]))
    onnx.checker.check_model(model, full_check=True)
    pixels_in = model.graph.input[0].type.tensor_type
    assert pixels_in.elem_type == onnx.TensorProto.UINT8
    assert pixels_in.shape.dim[0].dim_param and [d.dim_value for d in pixels_in.shape.dim[1:]] == [32, 32]
    assert not list(binary[1].parent.glob("*.data"))  # weights inside the one file


def test_result_names_the_onnx_runtime_and_both_files(binary, tmp_path):
    ckpt, out, _ = binary
    image = tmp_path / "film.png"
    Image.fromarray(pixels(1)[0]).resize((70, 60)).save(image)
    via_onnx = load_predictor(out, threads=1).predict(image)
    via_torch = load_predictor(ckpt, device="cpu").predict(image)
    assert via_onnx.model.runtime == "onnx" and via_torch.model.runtime == "torch"
    assert via_onnx.model.sha256 == file_sha256(out) and via_onnx.model.source_sha256 == file_sha256(ckpt)
    assert via_onnx.label == via_torch.label and via_onnx.threshold_rule == "youden"
    for name, p in via_torch.probabilities.items():
        assert abs(via_onnx.probabilities[name] - p) <= TOLERANCE
    described = load_predictor(out, threads=1).describe()
    assert described["runtime"] == "onnx" and described["threads"] == 1 and described["precision"] == "fp32"
    assert described["onnx_sha256"] == file_sha256(out)
    assert described["source_checkpoint_sha256"] == file_sha256(ckpt)


def test_an_onnx_file_without_its_sidecar_is_refused_with_the_fix(binary, tmp_path):
    lone = tmp_path / "lone.onnx"
    shutil.copy(binary[1], lone)
    with pytest.raises(CheckpointError, match=r"no sidecar lone\.onnx\.json.*pneumocxr export"):
        load_predictor(lone)


def test_a_sidecar_of_another_graph_is_refused(binary, three_class, tmp_path):
    swapped = tmp_path / "swapped.onnx"
    shutil.copy(three_class[1], swapped)
    shutil.copy(sidecar_path(binary[1]), sidecar_path(swapped))
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        load_predictor(swapped)


def test_a_file_that_is_not_onnx_is_refused_in_one_line(binary, tmp_path):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"\x08this is not a model")
    side = json.loads(sidecar_path(binary[1]).read_text())
    side["onnx_sha256"] = file_sha256(fake)
    sidecar_path(fake).write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="ONNX Runtime cannot load it"):
        load_predictor(fake)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match="a checkpoint; export it once"):
        load_predictor(tmp_path / "notes.txt", runtime="onnx")


def test_runtime_choices_that_cannot_run_are_refused(binary):
    ckpt, out, _ = binary
    with pytest.raises(ConfigError, match="pneumocxr export --checkpoint"):
        load_predictor(ckpt, runtime="onnx")
    with pytest.raises(ConfigError, match="holds no torch weights"):
        load_predictor(out, runtime="torch")
    with pytest.raises(ConfigError, match="TTA, MC-dropout run"):
        load_predictor(out, tta=True, mc_dropout=5)
    with pytest.raises(ConfigError, match="per process"):
        load_predictor(ckpt, threads=2)
    with pytest.raises(ConfigError, match="runs on the CPU"):
        load_predictor(out, device="cuda")
    with pytest.raises(ConfigError, match="threads=0"):
        load_predictor(out, threads=0)
    with pytest.raises(ConfigError, match="runtime='tensorrt'"):
        load_predictor(out, runtime="tensorrt")


def test_export_refuses_ensembles_int8_without_images_and_other_names(binary, tmp_path):
    ckpt = binary[0]
    ensemble = save_ensemble(tmp_path / "ens.pt", [checkpoint_payload(ckpt)], ["one"], threshold=0.5)
    with pytest.raises(ConfigError, match=r"ensemble file.*Export each member"):
        export_onnx(ensemble, tmp_path / "ens.onnx")
    with pytest.raises(ConfigError, match="--int8 needs --calibration"):
        export_onnx(ckpt, tmp_path / "m.onnx", int8=True)
    with pytest.raises(ConfigError, match=r"name the ONNX file \*\.onnx"):
        export_onnx(ckpt, tmp_path / "m.pt")
    assert not list(tmp_path.glob("*.onnx*"))


def test_predict_cli_runs_the_onnx_model_like_the_checkpoint(binary, tmp_path, capsys):
    ckpt, out, _ = binary
    folder = tmp_path / "films"
    folder.mkdir()
    for i, square in enumerate(pixels(6, seed=11)):
        Image.fromarray(square).resize((48, 40)).save(folder / f"f{i}.png")
    argv = ["predict", str(folder), "--device", "cpu"]
    assert main([*argv, "--checkpoint", str(ckpt), "--out", str(tmp_path / "torch.csv")]) == 0
    assert (
        main([*argv, "--checkpoint", str(out), "--out", str(tmp_path / "onnx.csv"), "--runtime", "onnx"]) == 0
    )
    rows = {name: list(csv.DictReader((tmp_path / f"{name}.csv").open())) for name in ("torch", "onnx")}
    assert [r["prediction"] for r in rows["torch"]] == [r["prediction"] for r in rows["onnx"]]
    for a, b in zip(rows["torch"], rows["onnx"]):
        assert abs(float(a["calibrated_probability"]) - float(b["calibrated_probability"])) <= TOLERANCE
    capsys.readouterr()
    assert (
        main([*argv, "--checkpoint", str(ckpt), "--out", str(tmp_path / "x.csv"), "--runtime", "onnx"]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("pneumocxr: error:") and "pneumocxr export" in err and "Traceback" not in err


@pytest.mark.slow
def test_int8_export_is_calibrated_on_images_and_records_its_change(binary, tmp_path):
    ckpt = binary[0]
    folder = tmp_path / "calibration"
    folder.mkdir()
    for i, square in enumerate(pixels(24, seed=5)):
        Image.fromarray(square).save(folder / f"c{i:02d}.png")
    made = export_onnx(ckpt, tmp_path / "int8.onnx", int8=True, calibration=[folder], calibration_limit=16)
    side = json.loads(sidecar_path(made.onnx_path).read_text())
    assert side["quantization"]["method"] == "static QDQ" and side["quantization"]["calibration_images"] == 16
    assert (
        side["export_check"]["images"] == 16 and side["export_check"]["images_were"] == "calibration images"
    )
    predictor = load_predictor(made.onnx_path, threads=1)
    assert predictor.describe()["precision"] == "int8 (static QDQ)"
    a = load_predictor(ckpt, device="cpu").predict_arrays(pixels())
    b = predictor.predict_arrays(pixels())
    assert np.abs(a.calibrated_probability - b.calibrated_probability).max() < 0.5  # int8: close, not equal


def test_importing_the_core_does_not_load_onnxruntime():
    code = (
        "import sys, pneumocxr.inference, pneumocxr.inference.onnx_runtime\n"
        "print([m for m in ('onnxruntime', 'onnx', 'onnxscript') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_evaluate_cli_scores_the_onnx_model_like_the_checkpoint(binary, tmp_path):
    from tests.conftest import make_kermany_tree

    ckpt, out, _ = binary
    tree = make_kermany_tree(tmp_path / "cx", splits=("test",), patients_per_class=2)
    common = ["evaluate", "--data", str(tree), "--n-boot", "20", "--device", "cpu"]
    assert main([*common, "--checkpoint", str(ckpt), "--out", str(tmp_path / "t")]) == 0
    assert main([*common, "--checkpoint", str(out), "--out", str(tmp_path / "o"), "--runtime", "onnx"]) == 0
    rows = [list(csv.DictReader((tmp_path / d / "predictions.csv").open())) for d in ("t", "o")]
    assert len(rows[0]) == len(rows[1]) == 8
    for a, b in zip(*rows):
        assert a["path"] == b["path"] and a["prediction"] == b["prediction"]
        assert abs(float(a["calibrated_probability"]) - float(b["calibrated_probability"])) <= TOLERANCE
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["checkpoint_sha256"] == file_sha256(out) and metrics["inference"]["runtime"] == "onnx"


def test_the_validation_split_an_onnx_model_records_is_its_checkpoints(binary):
    from pneumocxr.workflows.validation import recorded_split

    ckpt, out, _ = binary
    assert recorded_split(out) == recorded_split(ckpt) == {"val_patients": ["101", "102"]}
