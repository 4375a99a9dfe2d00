"""Three-class checkpoints through the wrappers — ensemble, MC-dropout, ensemble explain — by the
real CLI. The bug this guards: the wrappers averaged the probability of each member's predicted
class, dropped the class names and came out as NORMAL/PNEUMONIA, reading P(BACTERIAL) as P(PNEUMONIA).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import pytest
import torch
from tests.conftest import make_kermany_tree
from tests.inference.test_three_class import TASK, write_three_class_checkpoint

from pneumocxr.cli.main import main
from pneumocxr.data.discovery import discover
from pneumocxr.inference import load_predictor
from pneumocxr.labels import THREE_CLASS_NAMES
from pneumocxr.models.ensemble_file import save_ensemble


def run_cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv])
    assert code == 0, out.getvalue()
    return out.getvalue()


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    base = tmp_path_factory.mktemp("three_wrappers")
    tree = make_kermany_tree(base / "cx", splits=("test",), patients_per_class=3)
    members = [
        write_three_class_checkpoint(base / f"m{i}" / "best.pt", seed=i, temperature=1.0 + i)
        for i in range(3)
    ]
    payloads = [torch.load(m, map_location="cpu", weights_only=True) for m in members]
    ensemble = save_ensemble(base / "ens.pt", payloads, ["a", "b", "c"], threshold=0.5)
    images = sorted(p for p in (tree / "test").rglob("*.jpeg"))
    return base, tree, members, ensemble, images


def member_mean(members, images) -> np.ndarray:
    """(N, 3) mean of the members' calibrated class probabilities, computed member by member."""
    per_member = []
    for member in members:
        predictor = load_predictor(member, device="cpu")
        # the core's one-input path; refuse nothing: noise films have no anatomy for the polarity check
        answers = [predictor.predict(image, refuse=()) for image in images]
        per_member.append([[a.probabilities[c] for c in THREE_CLASS_NAMES] for a in answers])
    return np.mean(per_member, axis=0)


def test_predict_with_a_three_class_ensemble_averages_class_rows(three, tmp_path):
    _, _, members, ensemble, images = three
    run_cli(
        "predict",
        "--checkpoint",
        str(ensemble),
        *map(str, images[:6]),
        "--out",
        str(tmp_path / "p.csv"),
        "--device",
        "cpu",
    )
    rows = read_csv(tmp_path / "p.csv")
    expected = member_mean(members, images[:6])
    got = np.array([[float(r[f"p_{c}"]) for c in THREE_CLASS_NAMES] for r in rows])
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert [r["prediction"] for r in rows] == [THREE_CLASS_NAMES[i] for i in expected.argmax(1)]
    assert all(r["threshold"] == "" for r in rows)  # argmax: no threshold applies


def test_evaluate_with_mc_dropout_keeps_three_classes(three, tmp_path):
    _, tree, members, _, _ = three
    out = tmp_path / "ev"
    data = ["--data", str(tree), "--split", "test", "--out", str(out), "--n-boot", "20"]
    run_cli("evaluate", "--checkpoint", str(members[0]), *data, "--device", "cpu", "--mc-dropout", "4")
    matrix = json.loads((out / "confusion_matrix.json").read_text())
    assert matrix["matrix"] and len(matrix["matrix"]) == 3
    rows = read_csv(out / "predictions.csv")
    assert {r["prediction_name"] for r in rows} <= set(THREE_CLASS_NAMES)
    # the passes' mean, recomputed through the library: the same numbers as the CLI wrote
    predictor = load_predictor(members[0], device="cpu", mc_dropout=4)
    records = discover(tree).in_split("test")
    batch = predictor.predict_records(records)
    assert batch.class_names == THREE_CLASS_NAMES and batch.member_probabilities.shape == (4, len(records), 3)
    np.testing.assert_allclose(batch.probabilities, batch.member_probabilities.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(batch.probabilities.sum(axis=1), 1.0)
    written = np.array([[float(r[f"probability_{c}"]) for c in THREE_CLASS_NAMES] for r in rows])
    np.testing.assert_allclose(written, batch.probabilities, atol=1e-12)


def test_explain_with_a_three_class_ensemble_reports_every_class(three, tmp_path):
    _, _, members, ensemble, images = three
    run_cli(
        "explain",
        "--checkpoint",
        str(ensemble),
        str(images[0]),
        "--out",
        str(tmp_path / "x"),
        "--device",
        "cpu",
    )
    report = json.loads(next((tmp_path / "x").rglob("*.json")).read_text())
    expected = member_mean(members, images[:1])[0]
    assert list(report["probabilities"]) == list(THREE_CLASS_NAMES)
    np.testing.assert_allclose([report["probabilities"][c] for c in THREE_CLASS_NAMES], expected, atol=1e-6)
    assert report["prediction"] == THREE_CLASS_NAMES[int(expected.argmax())]


def test_members_of_different_tasks_are_refused(three, tmp_path):
    from tests.inference.conftest import write_checkpoint

    from pneumocxr.inference.ensemble import combine

    members = three[2]
    binary = load_predictor(write_checkpoint(tmp_path / "bin.pt"), device="cpu")
    three_class = load_predictor(members[0], device="cpu")
    pixels = np.zeros((1, 32, 32), dtype=np.uint8)
    with pytest.raises(Exception, match="different classes"):
        combine([binary.predict_arrays(pixels), three_class.predict_arrays(pixels)], 0.5)
    assert TASK == "normal-bacterial-viral"


def test_ensemble_create_refuses_three_class_members_by_name(three, tmp_path, capsys):
    members = three[2]
    code = main(["ensemble", "create", str(tmp_path / "e.pt"), *map(str, members[:2]), "--device", "cpu"])
    assert code == 2
    assert "k-class" in capsys.readouterr().err and not (tmp_path / "e.pt").exists()
