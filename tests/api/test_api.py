"""The top-level API: cheap to import, every name documented, thin wrappers that return typed,
displayable results (one tiny synthetic run drives every verb)."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import make_kermany_tree

import pneumocxr
from pneumocxr.errors import ConfigError, DatasetError

HEAVY = ("torch", "sklearn", "lightning", "scipy", "matplotlib", "pandas")
TINY = {
    "model": {"name": "custom_cnn", "image_size": 32},
    "train": {"max_epochs": 1, "batch_size": 8, "precision": "32", "channels_last": False},
    "data.val_fraction": 0.3,
}


def test_import_pneumocxr_loads_no_torch_sklearn_or_lightning():
    code = (
        "import sys, pneumocxr; "
        f"print([m for m in {HEAVY!r} if m in sys.modules]); print(len(pneumocxr.__all__))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, count = done.stdout.split("\n")[:2]
    assert loaded == "[]", f"import pneumocxr loaded {loaded}"
    assert int(count) >= 12


@pytest.mark.parametrize("name", pneumocxr.__all__)
def test_every_public_name_resolves_and_is_documented(name):
    obj = getattr(pneumocxr, name)
    doc = inspect.getdoc(obj) or ""
    assert len(doc) > 80, f"pneumocxr.{name} needs a docstring"
    if inspect.isfunction(obj):  # the calls: what, arguments, returns, raises, an example
        for section in ("Args:", "Returns:", "Raises:", "Example:"):
            assert section in doc, f"pneumocxr.{name}'s docstring has no {section!r} section"


def test_no_public_name_is_shadowed_by_a_subpackage():
    # importing pneumocxr.X sets the attribute X on the package: a call named like a subpackage
    # (pneumocxr.explain) would silently become the module
    root = Path(pneumocxr.__file__).parent
    for name in pneumocxr.__all__:
        assert not (root / name).exists() and not (root / f"{name}.py").exists(), name
    importlib.import_module("pneumocxr.explain")
    assert callable(pneumocxr.explain_images)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        pneumocxr.trian  # noqa: B018


def test_overrides_as_nested_or_dotted_dicts_or_set_strings():
    from pneumocxr.api._train import resolve_config

    config = resolve_config(
        "smoke", {"train": {"max_epochs": 3, "lr": 1}, "model.image_size": 48, "data.root": Path("/x")}
    )
    assert (config.train.max_epochs, config.train.lr, config.model.image_size) == (3, 1.0, 48)
    assert config.data.root == "/x" and config.model.name == "efficientnet_lite0"  # the rest: the recipe
    assert resolve_config("smoke", ["train.max_epochs=4"]).train.max_epochs == 4
    with pytest.raises(ConfigError, match="did you mean 'max_epochs'"):
        resolve_config("smoke", {"train.max_epoch": 3})
    with pytest.raises(ConfigError, match="not found"):
        resolve_config("no_such_recipe")


def test_patient_sample_keeps_whole_patients_and_reads_back(tmp_path):
    root = make_kermany_tree(
        tmp_path / "cx", splits=("train", "test"), patients_per_class=10, images_per_patient=3
    )
    sample = pneumocxr.patient_sample(root, 24, tmp_path / "s" / "sample.csv", seed=1)
    full = pneumocxr.discover(root)
    by_patient = {}
    for r in full.in_split("train"):
        by_patient.setdefault(r.patient_id, set()).add(r.path.resolve())
    kept = {r.path.resolve() for r in sample.records}
    assert 18 <= len(kept) <= 30 and sample.splits() == ["train"]
    for paths in by_patient.values():
        assert paths <= kept or not paths & kept  # a patient is in or out, never cut in two
    assert set(sample.counts()["train"].values()) != {0}  # both classes
    with pytest.raises(DatasetError, match="no 'val' split"):
        pneumocxr.patient_sample(root, 5, tmp_path / "x.csv", split="val")


def test_html_tables_escape_what_they_show():
    from pneumocxr.api._display import render_table

    html = render_table(
        caption="<b>c</b>", columns=["<i>"], rows=[["<script>alert(1)</script>"]], notes=["&"]
    )
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;" in html and "&amp;" in html


def test_to_frame_without_pandas_says_how_to_get_it(monkeypatch):
    from pneumocxr.api._display import to_frame

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ModuleNotFoundError, match="pip install pandas"):
        to_frame([{"a": 1}])


# ---- every verb on one tiny synthetic run -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(data root, TrainRun) of a one-epoch custom_cnn at 32 px on synthetic films."""
    base = tmp_path_factory.mktemp("api")
    root = make_kermany_tree(base / "cx", splits=("train",), patients_per_class=12, images_per_patient=3)
    run = pneumocxr.train(
        "cpu_custom_cnn", base / "runs" / "<img src=x>", {**TINY, "data.root": str(root)}, reuse=True
    )
    return root, run


@pytest.mark.slow
def test_train_returns_the_run_and_reuses_it_when_nothing_changed(tiny):
    root, run = tiny
    assert run.status == "trained" and run.best_checkpoint.is_file()
    assert run.config.model.image_size == 32 and "val_auc" in run.metrics
    html = run._repr_html_()
    assert "<img src=x>" not in html and "&lt;img src=x&gt;" in html
    again = pneumocxr.train("cpu_custom_cnn", run.out_dir, {**TINY, "data.root": str(root)}, reuse=True)
    assert again.status == "reused" and again.best_checkpoint == run.best_checkpoint
    assert [row["epoch"] for row in run.history] == ["1"]
    assert run.figures["training_curves"].get_size_inches().prod() > 0


@pytest.mark.slow
def test_evaluate_gives_the_metrics_table_escaped_html_figures_and_a_gradcam_grid(tiny, tmp_path):
    root, run = tiny
    ev = pneumocxr.evaluate(
        run.out_dir, root, split="validation", out_dir=tmp_path / "ev", n_boot=50, device="cpu"
    )
    kinds = {row["threshold_kind"] for row in ev.rows}
    assert kinds == {"checkpoint", "fixed_0.5"} and len(ev.rows) == 2 * 12
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    auc = next(r for r in ev.rows if r["threshold_kind"] == "checkpoint" and r["metric"] == "roc_auc")
    assert auc["value"] == pytest.approx(ev.metrics["checkpoint"]["roc_auc"][0])
    assert "optimistic" in saved["split"]
    html = ev._repr_html_()
    assert "<img src=x>" not in html and "&lt;img src=x&gt;" in html  # the run folder names the model
    assert "ROC AUC" in html and "optimistic" in html
    assert {"roc", "confusion_matrix", "reliability"} <= set(ev.figures)
    assert len(ev.per_image) == ev.result.n_images
    grid = ev.gradcam_grid(per_category=1)
    assert (
        grid.get_size_inches().prod() > 0
        and (tmp_path / "ev" / "plots" / "gradcam_visualizations.png").is_file()
    )
    pd = pytest.importorskip("pandas")
    frame = ev.to_frame()
    assert isinstance(frame, pd.DataFrame) and {"metric", "value", "low", "high"} <= set(frame.columns)


@pytest.mark.slow
def test_compare_two_runs_on_their_shared_validation_split(tiny, tmp_path):
    root, run = tiny
    other = pneumocxr.train(
        "cpu_custom_cnn",
        tmp_path / "other",
        {**TINY, "data.root": str(root), "train.seed": 7},
    )
    cmp = pneumocxr.compare(
        [run.out_dir, other.out_dir], root, split="validation", out_dir=tmp_path / "cmp", n_boot=50,
        speed_seconds=0.1, device="cpu",
    )  # fmt: skip
    assert [r["model"] for r in cmp.rows] == list(cmp.evaluations) and cmp.reference == cmp.rows[0]["model"]
    html = cmp._repr_html_()
    assert "p DeLong" in html and "<img src=x>" not in html
    assert set(cmp.figures) == {"roc_comparison", "confusion_matrix_comparison"}
    assert all(ev.split.startswith("validation") for ev in cmp.evaluations.values())


@pytest.mark.slow
def test_explain_images_returns_the_overlay_and_the_raw_map_as_arrays(tiny):
    root, run = tiny
    film = next((root / "train" / "PNEUMONIA").glob("*.jpeg"))
    [item] = pneumocxr.explain_images(run.best_checkpoint, film, target="normal")
    height, width = item.image.shape
    assert item.target_class == "NORMAL" and item.prediction.label in ("NORMAL", "PNEUMONIA")
    assert item.raw_map.shape == (32, 32) and item.heatmap.shape == (height, width)
    assert item.overlay.shape == (height, width, 3) and item.overlay.dtype == np.uint8
    assert item.figure().axes
    items = pneumocxr.explain_images(run.best_checkpoint, [film.read_bytes(), root / "train" / "NORMAL"])
    assert len(items) == 1 + 12 * 3 and items[0].source == "bytes"
    with pytest.raises(ConfigError, match="target='lungs'"):
        pneumocxr.explain_images(run.best_checkpoint, film, target="lungs")


@pytest.mark.slow
def test_stress_model_card_and_onnx_export_wrap_their_commands(tiny, tmp_path):
    root, run = tiny
    stress = pneumocxr.stress(
        run.best_checkpoint,
        root,
        shifts="gamma",
        n_images=0,
        out_dir=tmp_path / "stress",
        n_boot=20,
        device="cpu",
    )
    assert stress.rows[0]["severity"] == 0 and len(stress.rows) == 4 and "stress" in stress.figures
    assert "gamma" in stress._repr_html_()
    card = pneumocxr.model_card(run.out_dir, tmp_path / "card.md", stress=stress)
    assert card.path.read_text(encoding="utf-8") == card.text == card._repr_markdown_()
    assert "Model card" in card.text and pneumocxr.model_card(run.out_dir).path is None
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    made = pneumocxr.export_onnx(run.out_dir, tmp_path / "tiny.onnx")
    assert made.onnx_path.is_file() and made.check["decisions_agree"] == made.check["images"]
    predictor = pneumocxr.load_predictor(made.onnx_path)
    assert predictor.runtime == "onnx" and isinstance(
        pneumocxr.load_predictor(run.out_dir), pneumocxr.Predictor
    )


def test_eda_and_check_dataset_return_results_with_figures(tmp_path):
    root = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=3, images_per_patient=2)
    check = pneumocxr.check_dataset(root, workers=1)
    assert check.ok and check.rows[0]["split"] == "train" and "NORMAL" in check._repr_html_()
    assert "unreadable files: 0" in str(check)
    result = pneumocxr.eda(root, tmp_path / "eda", image_size=32, samples_per_class=1, workers=1)
    assert {"dataset_distribution", "sample_grid"} <= set(result.figures)
    assert result.figures["sample_grid"].get_size_inches().prod() > 0
    assert "NORMAL" in result._repr_html_()
