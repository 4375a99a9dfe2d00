"""The HTML report: parses, has every section, embeds PNGs, escapes text, says what did not run."""

from __future__ import annotations

import base64
import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from pneumocxr.errors import ConfigError
from pneumocxr.evaluation._report_html import PNG_SIGNATURE, TEST_LABEL, fmt_ci, fmt_p
from pneumocxr.evaluation.metrics import METRIC_NAMES
from pneumocxr.evaluation.report import SECTIONS, build_report

VOID = {"meta", "img", "br", "hr", "link", "input"}
EVIL = '<script>alert("x")</script>&amp;'


class Page(HTMLParser):
    """Collects what the tests look at, and fails on any unbalanced tag."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.ids: list[str] = []
        self.images: list[str] = []
        self.not_run: list[str] = []
        self.h2: list[str] = []
        self.text: list[str] = []
        self._capture: list[str] | None = None
        self.feed(text)
        self.close()
        assert self.stack == [], f"unclosed tags: {self.stack}"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "p" and attrs.get("class") == "not-run":
            self.not_run.append("")
            self._capture = self.not_run
        if tag == "h2":
            self.h2.append("")
            self._capture = self.h2

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag in ("p", "h2"):
            self._capture = None

    def handle_data(self, data):
        self.text.append(data)
        if self._capture is not None:
            self._capture[-1] += data

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def png(path: Path, size: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), 128).save(path)


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def metric_row(model: str, split: str, kind: str, auc: tuple[float, float, float]) -> dict:
    row = {"model": model, "checkpoint": f"runs/{model}/best.pt", "data": "/d", "split": split}
    row.update(threshold_kind=kind, threshold=0.42 if kind == "checkpoint" else 0.5, n=40, n_patients=20)
    row.update(tp=18, fp=3, tn=17, fn=2, undefined="", ci_method="Wilson (proportions), bootstrap (others)")
    for name in METRIC_NAMES:
        value, low, high = auc if name == "roc_auc" else (0.9, 0.8, 0.95)
        row.update({name: value, f"{name}_lo": low, f"{name}_hi": high})
    row["mcc"] = "nan"
    return row


def make_tree(out: Path, model: str = "cnn") -> Path:
    """A complete output tree in the formats the pipeline writes (see data/check.py, inference/…)."""
    write_data_outputs(out)
    run = out / "runs" / model
    history = [
        {"phase": 1, "epoch": e, "train_loss": 0.5 / e, "val_loss": 0.6, "val_auc": 0.8 + e / 100}
        for e in (1, 2, 3)
    ]
    write_csv(run / "history.csv", history)
    (run / "config.yaml").write_text("model:\n  name: custom_cnn\ntrain:\n  lr: 0.0001\n", encoding="utf-8")
    png(run / "training_curves.png")
    write_evaluation(out / "evaluation" / model, model)
    rows = [metric_row(model, "test", k, (0.953, 0.931, 0.970)) for k in ("checkpoint", "fixed_0.5")]
    write_csv(out / "results" / "performance_metrics.csv", rows)
    write_comparison(out, rows[0])
    png(out / "plots" / "gradcam_visualizations.png")
    write_json(
        out / "plots" / "gradcam_visualizations.json", {"method": "gradcam", "threshold": 0.42, "cases": []}
    )
    stress_row = {
        "model": model,
        "n_images": 200,
        "clean_auc": 0.99,
        "worst_auc": 0.83,
        "worst_auc_shift": "noise severe",
    }
    write_csv(out / "results" / "stress_summary.csv", [stress_row])
    png(out / "stress" / model / "stress.png")
    steps = [{"step": "train", "seconds": 812.5}, {"step": "evaluate", "seconds": 41.0}]
    write_json(out / "results" / "run_summary.json", {"steps": steps, "versions": {"torch": "2.14.1"}})
    return out


def write_data_outputs(out: Path) -> None:
    counts = {s: {"NORMAL": 10, "PNEUMONIA": 20} for s in ("train", "val", "test")}
    bad = {"path": "train/NORMAL/bad.jpeg", "split": "train", "label": "NORMAL", "reason": "truncated"}
    groups = {"n_groups": 1, "n_files": 2, "within_split": 1, "across_splits": 0}
    check = {"root": "/d", "n_images": 90, "counts": counts, "unreadable": [bad], "label_conflicts": 0}
    check["sublabel_counts"] = {s: {"normal": 10, "bacterial": 12, "viral": 8} for s in counts}
    check["exact_duplicates"] = groups
    check["near_duplicates"] = {**groups, "n_groups": 0, "n_files": 0, "within_split": 0, "method": "phash"}
    check["shared_patients"] = {"n_patients": 2, "with_duplicated_images": 0, "note": "info"}
    write_json(out / "results" / "data_check.json", check)
    eda = {
        "counts": counts,
        "image_size": 224,
        "intensity": {"NORMAL": {"images": 30, "mean": 0.48, "std": 0.2}},
    }
    eda["sizes"] = {"n": 90, "width_min": 400.0, "width_median": 1200.0, "width_max": 2900.0}
    write_json(out / "results" / "eda_summary.json", eda)
    for stem in ("dataset_distribution", "image_sizes", "intensity_histograms", "mean_images", "sample_grid"):
        png(out / "plots" / f"{stem}.png")


def write_evaluation(folder: Path, model: str) -> None:
    """metrics.json (the keys inference/evaluate.py writes that the report reads) and the plots."""
    estimates = {
        "ece": {"value": 0.03, "low": 0.02, "high": 0.05},
        "brier": {"value": 0.1, "low": 0.08, "high": 0.12},
    }
    meta = {"validation_metrics": {"val_auc": 0.991, "val_acc": 0.95}, "versions": {"torch": "2.14.1"}}
    meta.update(created="2026-01-02T03:04:05+00:00", threshold=0.42, temperature=1.7)
    metrics = {"model": model, "checkpoint": f"runs/{model}/best.pt", "checkpoint_sha256": "ab" * 32}
    metrics.update(data="/d", split="test", temperature=1.7, uncalibrated={"ece": 0.11, "brier": 0.14})
    metrics.update(metrics={"checkpoint": {"estimates": estimates}}, checkpoint_meta=meta)
    metrics["selection"] = {"could_have_been_used_for_selection": False, "same_dataset": True, "warnings": []}
    write_json(folder / "metrics.json", metrics)
    for stem in ("roc", "precision_recall", "confusion_matrix", "probability_histogram", "reliability"):
        png(folder / "plots" / f"{stem}.png")


def write_comparison(out: Path, row: dict) -> None:
    comparison = {"model": row["model"], "parameters": 1830000, "images_per_s": 34.0}
    comparison.update(speed_device="cpu", speed_batch_size=16)
    comparison.update(
        {k: v for k, v in row.items() if k.split("_")[0] in ("roc", "sensitivity", "specificity")}
    )
    comparison.update(delong_p_vs_reference="nan", mcnemar_p_vs_reference="nan")
    write_csv(out / "results" / "comparison.csv", [comparison])
    pair = {"model_a": row["model"], "model_b": "vgg", "auc_difference": 0.02}
    pair.update(auc_diff_ci_low=-0.01, auc_diff_ci_high=0.05, delong_p=0.0004)
    pair.update(mcnemar_b=3, mcnemar_c=5, mcnemar_p=0.72, mcnemar_method="exact")
    write_csv(out / "results" / "comparison_pairwise.csv", [pair])
    png(out / "plots" / "roc_comparison.png")
    png(out / "plots" / "confusion_matrix_comparison.png")


def render(out: Path) -> tuple[str, Page]:
    text = build_report(out).read_text(encoding="utf-8")
    return text, Page(text)


def test_complete_tree_has_every_section_and_nothing_not_run(tmp_path):
    _, page = render(make_tree(tmp_path))
    anchors = [anchor for anchor, _, _ in SECTIONS]
    assert [i for i in page.ids if i in anchors] == anchors
    assert page.h2 == [title for _, title, _ in SECTIONS]
    assert page.not_run == []
    assert "812.5" in page.all_text  # run summary steps with wall times
    assert "lr: 0.0001" in page.all_text  # the config, verbatim
    assert "2.14.1" in page.all_text  # versions


def test_every_figure_is_an_embedded_png_and_nothing_is_fetched(tmp_path):
    text, page = render(make_tree(tmp_path))
    assert (
        len(page.images) == 5 + 1 + 4 + 2 + 1 + 1 + 1
    )  # EDA, curves, eval, comparison, reliability, Grad-CAM, stress
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_SIGNATURE)
    assert not {"script", "link", "iframe"} & set(page.tags)
    assert "http://" not in text and "https://" not in text and "url(" not in text


def test_numbers_carry_their_confidence_intervals(tmp_path):
    _, page = render(make_tree(tmp_path))
    words = page.all_text
    assert "0.953 (0.931–0.970)" in words
    assert "n/a" in words  # MCC was NaN: undefined, never 0
    assert "<0.001" in words and "0.720 (exact)" in words  # DeLong and McNemar p-values
    assert TEST_LABEL in words
    assert "0.110" in words and "0.030 (0.020–0.050)" in words  # ECE before and after temperature scaling


def test_formatting_helpers():
    assert fmt_ci(0.9531, 0.9312, 0.97) == "0.953 (0.931–0.970)"
    assert fmt_ci("nan", 0.1, 0.2) == "n/a"
    assert fmt_ci(0.5, None, "") == "0.500"
    assert (fmt_p(0.0002), fmt_p(0.04567), fmt_p(float("nan"))) == ("<0.001", "0.046", "–")


def test_an_empty_folder_gives_a_not_run_note_with_the_reason_for_every_section(tmp_path):
    _, page = render(tmp_path)
    assert page.h2 == [title for _, title, _ in SECTIONS]
    notes = " | ".join(page.not_run)
    expected = (
        "data_check.json not found",
        "eda_summary.json not found",
        "no run folders",
        "performance_metrics.csv not found",
        "comparison.csv not found",
        "no evaluation folders",
        "gradcam_visualizations.png not found",
        "run_summary.json not found",
    )
    assert [e for e in expected if e not in notes] == []
    assert page.images == []


def test_missing_output_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        build_report(tmp_path / "nope")


def test_corrupt_inputs_are_reported_not_raised(tmp_path):
    out = make_tree(tmp_path)
    (out / "plots" / "roc_comparison.png").write_bytes(b"GIF89a not a png")
    (out / "results" / "eda_summary.json").write_text("{truncated", encoding="utf-8")
    _, page = render(out)
    notes = " | ".join(page.not_run)
    assert "roc_comparison.png is not a PNG image" in notes
    assert "eda_summary.json is unreadable" in notes
    write_json(out / "results" / "data_check.json", {"counts": ["not", "a", "mapping"]})
    _, page = render(out)
    assert page.not_run[0].startswith("Not run: Data — its input files could not be interpreted")
    assert "0.953 (0.931–0.970)" in page.all_text  # a malformed input costs its section, not the page


def test_text_from_files_is_escaped(tmp_path):
    out = make_tree(tmp_path, model=EVIL.replace("/", "|"))
    check = json.loads((out / "results" / "data_check.json").read_text())
    check["unreadable"][0]["path"] = '<img src=x onerror="alert(1)">'
    write_json(out / "results" / "data_check.json", check)
    (out / "runs" / EVIL.replace("/", "|") / "config.yaml").write_text("note: </pre><b>bold</b>\n")
    text, page = render(out)
    assert "script" not in page.tags and "b" not in page.tags
    assert [src for src in page.images if not src.startswith("data:image/png")] == []
    assert "&lt;script&gt;" in text and "&amp;amp;" in text
    assert '<img src=x onerror="alert(1)">' in page.all_text  # shown as text, intact
    assert "</pre><b>bold</b>" in page.all_text


def test_the_page_is_jinja2_with_autoescape_and_a_script_in_a_model_name_stays_text(tmp_path):
    from pneumocxr.evaluation._report_html import jinja_environment
    from pneumocxr.evaluation.report import PAGE

    assert jinja_environment().autoescape is True and PAGE.endswith(".j2")
    model = "<script>alert(1)<|script>"  # a folder name cannot hold "/"
    out = make_tree(tmp_path, model=model)
    text = build_report(out, title="<script>alert(2)</script>").read_text(encoding="utf-8")
    page = Page(text)
    assert "script" not in page.tags
    assert text.count("&lt;script&gt;alert(1)&lt;|script&gt;") >= 5  # tables, headings, captions
    assert "<title>&lt;script&gt;alert(2)&lt;/script&gt;</title>" in text
    assert model in page.all_text  # shown as text, intact


def test_split_labels_say_how_honest_each_number_is(tmp_path):
    out = make_tree(tmp_path)
    rows = list(csv.DictReader((out / "results" / "performance_metrics.csv").open()))
    rows += [metric_row("cnn", "train", "checkpoint", (0.999, 0.99, 1.0))]
    write_csv(out / "results" / "performance_metrics.csv", rows)
    metrics = json.loads((out / "evaluation" / "cnn" / "metrics.json").read_text())
    selection = {"could_have_been_used_for_selection": True, "warnings": ["fit, not performance"]}
    metrics.update(split="train", selection=selection)
    write_json(out / "evaluation" / "cnn-train" / "metrics.json", metrics)
    _, page = render(out)
    words = page.all_text
    assert f"Split: {TEST_LABEL}" in words
    assert "Split: train — used for training or selection: optimistic" in words
    assert "fit, not performance" in words
    assert "Validation (used for selection: optimistic)" in words and "0.991" in words


def test_run_summary_split_labels_override_the_defaults(tmp_path):
    out = make_tree(tmp_path)
    summary = json.loads((out / "results" / "run_summary.json").read_text())
    summary["split_labels"] = {"test": "test (official Kermany test folder, touched once)"}
    write_json(out / "results" / "run_summary.json", summary)
    _, page = render(out)
    assert "Split: test (official Kermany test folder, touched once)" in page.all_text


@pytest.mark.slow
def test_report_reads_what_the_real_pipeline_writes(tmp_path):
    """check → EDA → train → compare with the real writers, then the report: every format agrees."""
    from tests.conftest import make_kermany_tree

    from pneumocxr.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from pneumocxr.data.check import check_dataset
    from pneumocxr.data.discovery import discover
    from pneumocxr.data.eda import run_eda
    from pneumocxr.training.train import train
    from pneumocxr.workflows.compare import compare_models

    data = make_kermany_tree(tmp_path / "chest_xray", patients_per_class=4, size=(40, 40))
    out = tmp_path / "output"
    dataset = discover(data)
    check_dataset(dataset, workers=1).write_json(out / "results" / "data_check.json")
    run_eda(dataset, out, image_size=32, samples_per_class=1, workers=1)
    for name, lr in (("a", 1e-3), ("b", 1e-4)):
        config = RunConfig(
            data=DataConfig(root=str(data), val_fraction=0.5),
            model=ModelConfig(name="custom_cnn", image_size=32),
            train=TrainConfig(max_epochs=1, batch_size=8, lr=lr, accelerator="cpu", precision="32"),
        )
        train(config, out / "runs" / name, progress=False)
    runs = [out / "runs" / "a", out / "runs" / "b"]
    compare_models(runs, data, out_dir=out, n_boot=20, device="cpu", speed_seconds=0.05)
    _, page = render(out)
    notes = " | ".join(page.not_run)
    not_here = {"Not run: Grad-CAM", "Not run: run summary", "Not run: shift-stress suite"}  # run's steps
    assert {n.split(" — ")[0] for n in page.not_run} <= not_here, notes
    assert len(page.images) == 5 + 2 + 2 * 4 + 2 + 2
    assert TEST_LABEL in page.all_text and "p AUC vs a (DeLong)" in page.all_text
