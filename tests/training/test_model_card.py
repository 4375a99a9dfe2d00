"""Model cards: every Mitchell et al. section, the numbers the checkpoint records, evaluation folders
labelled by their split, stress results (or "not run"), three-class checkpoints and ensembles."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import torch
from tests.conftest import make_kermany_tree

from pneumocxr.cli.main import main
from pneumocxr.config import DataConfig, RunConfig, to_dict
from pneumocxr.data.discovery import discover
from pneumocxr.data.splits import patient_split
from pneumocxr.data.tasks import label_for_task
from pneumocxr.evaluation import wilson_interval
from pneumocxr.evaluation.model_card import fmt_ci
from pneumocxr.labels import task_class_names
from pneumocxr.models import create_model, save_checkpoint
from pneumocxr.models.ensemble_file import checkpoint_payload, save_ensemble
from pneumocxr.training.datamodule import split_info
from pneumocxr.training.model_card import build_model_card, write_model_card

SECTIONS = (
    "## Model details",
    "### Training recipe",
    "## Intended use",
    "## Factors and metrics",
    "## Training data",
    "## Evaluation",
    "## Stress-suite results",
    "## Operating point",
    "## Known limitations",
    "## Ethical considerations",
    "## Caveats and recommendations",
)
THRESHOLD = 0.2561
RULES = {
    "youden": {"threshold": THRESHOLD, "method": "youden", "sensitivity": 0.975, "specificity": 0.966},
    "youden_edge": {"threshold": 0.4012, "method": "youden_edge", "sensitivity": 0.97, "specificity": 0.97},
    "target_sensitivity": {
        "threshold": 0.1833,
        "method": "target_sensitivity",
        "sensitivity": 0.99,
        "specificity": 0.90,
        "target_sensitivity": 0.95,
    },
}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def card_checkpoint(path: Path, tree: Path, *, task: str = "binary", seed: int = 0) -> Path:
    """A tiny custom_cnn checkpoint recording what a training run records: split, operating point,
    validation metrics and config."""
    torch.manual_seed(seed)
    names = task_class_names(task)
    kwargs = {"image_size": 32, "in_channels": 1, "num_classes": len(names)}
    model = create_model("custom_cnn", **kwargs)
    records = label_for_task(discover(tree).in_split("train"), task)
    train, val = patient_split(records, 0.4, 3)
    data = DataConfig(root=str(tree), task=task, val_fraction=0.4, split_seed=3)
    split = split_info(data, 0, train, val).as_dict()
    config = to_dict(RunConfig())
    config["data"]["task"], config["model"]["num_classes"] = task, len(names)
    if task == "binary":
        operating = {"temperature": 1.3, **RULES["youden"], "threshold_rule": "youden", "rules": RULES}
        operating["chosen_on"] = "validation (carved from train)"
        metrics = {"val_auc": 0.9965, "val_loss": 0.0812}
    else:
        recall = {"NORMAL": 0.95, "BACTERIAL": 0.80, "VIRAL": 0.60}
        operating = {"temperature": 1.1, "decision": "argmax", "accuracy": 0.81, "recall": recall}
        operating |= {"balanced_accuracy": 0.78, "chosen_on": "validation (carved from train)"}
        metrics = {"val_auc": 0.91, "val_loss": 0.5}
    extra = {"split": split, "operating_point": operating, "best_epoch": 7, "epochs_run": 9}
    return save_checkpoint(
        path, model, model_name="custom_cnn", model_kwargs=kwargs, preprocess=model.spec.preprocess,
        class_names=names, task=task, threshold=THRESHOLD if task == "binary" else 0.5,
        temperature=operating["temperature"], metrics=metrics, config=config, extra=extra,
    )  # fmt: skip


def evaluate(checkpoint: Path, tree: Path, out: Path, split: str = "test") -> Path:
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(tree), "--split", split]
    argv += ["--out", str(out), "--n-boot", "20", "--device", "cpu"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    base = tmp_path_factory.mktemp("card")
    tree = make_kermany_tree(base / "cx", splits=("train", "test"), patients_per_class=5)
    checkpoint = card_checkpoint(base / "runs" / "lite" / "best.pt", tree)
    return base, tree, checkpoint, evaluate(checkpoint, tree, base / "eval_test")


def stress_result(shift, severity, name, level, auc, sensitivity, specificity, covered) -> dict:
    """One row as inference/stress.py writes it: value, _lo, _hi per metric."""
    row = {"shift": shift, "severity": severity, "severity_name": name, "level": level}
    for metric, (value, low, high) in zip(
        ("auc", "sensitivity", "specificity"), (auc, sensitivity, specificity)
    ):
        row |= {metric: value, f"{metric}_lo": low, f"{metric}_hi": high}
    return row | {"in_training_augmentation": covered}


def current_stress_json(path: Path) -> Path:
    """stress.json in the shape inference/stress_files.py writes today."""
    rows = [
        stress_result(
            "none", 0, "clean", None, (0.99, 0.97, 1.0), (0.97, 0.93, 0.99), (0.95, 0.9, 0.98), None
        ),
        stress_result(
            "zoom_in", 3, "severe", 0.7, (0.91, 0.86, 0.95), (0.99, 0.96, 1.0), (0.41, 0.33, 0.5), True
        ),
        stress_result(
            "jpeg", 2, "moderate", 25.0, (0.985, 0.96, 0.99), (0.96, 0.92, 0.98), (0.94, 0.89, 0.97), False
        ),
    ]
    worst = {
        "specificity": {"shift": "zoom_in", "severity": 3, "severity_name": "severe", "level": 0.7,
                        "value": 0.41, "low": 0.33, "high": 0.5, "change_from_clean": -0.54},
    }  # fmt: skip
    shifts = [
        {"name": "zoom_in", "covered_by": ["zoom"], "levels": {"severe": 0.7}},
        {"name": "jpeg", "covered_by": [], "levels": {"moderate": 25}},
    ]
    data = {
        "split": "validation (used for model selection: optimistic)",
        "n_images": 300,
        "threshold": THRESHOLD,
    }
    data |= {"rows": rows, "worst": worst, "worst_excluding_invert": worst, "shifts": shifts}
    path.mkdir(parents=True, exist_ok=True)
    (path / "stress.json").write_text(json.dumps(data), encoding="utf-8")
    return path


def section(card: str, heading: str) -> str:
    """The text of one ``## heading`` section."""
    start = card.index(heading)
    end = card.find("\n## ", start + len(heading))
    return card[start : end if end >= 0 else None]


def test_card_has_every_section_and_the_intended_use_statements(binary, tmp_path):
    _, _, checkpoint, _ = binary
    out = write_model_card(checkpoint, tmp_path / "cards" / "card.md")
    card = out.read_text(encoding="utf-8")
    positions = [card.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    intended = section(card, "## Intended use")
    for phrase in (
        "pediatric frontal",
        "children aged 1–5",
        "Guangzhou",
        "Kermany et al. 2018",
        "Not a medical device",
    ):
        assert phrase in intended, phrase
    for phrase in ("adults", "lateral", "CR/DX", "without local validation"):
        assert phrase in intended, phrase
    assert "NOT a medical device" in card.split("## Model details")[0]  # said before anything else


def test_card_reports_the_model_recipe_and_training_split(binary):
    _, tree, checkpoint, _ = binary
    card = build_model_card(checkpoint)
    assert card.startswith("# Model card: lite (custom_cnn, binary)")
    details = section(card, "## Model details")
    n_params = sum(p.numel() for p in create_model("custom_cnn", image_size=32, in_channels=1).parameters())
    assert f"{n_params:,}" in details
    assert "32×32 px, 1 channel" in details
    assert "none: trained from random initialisation (seed 42)" in details
    import hashlib

    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() in details
    assert "| Best epoch (selected on validation) | 7 |" in details
    assert "anatomy: rotation ±7°" in details and "no flips" in details
    data = section(card, "## Training data")
    assert str(tree.resolve()) in data
    assert "by patient" in data and "stratified by class" in data and "40% of train/" in data


def test_card_states_the_stored_threshold_rules_temperature_and_validation_metrics(binary):
    _, _, checkpoint, _ = binary
    card = build_model_card(checkpoint)
    validation = section(card, "## Evaluation")
    assert "### Validation — carved validation split, used for model selection: optimistic" in validation
    meta_split = torch.load(checkpoint, weights_only=True)["extra"]["split"]
    n_pos = meta_split["val_class_counts"][1]
    low, high = wilson_interval(round(0.975 * n_pos), n_pos)
    assert (
        f"| Sensitivity at the stored threshold {THRESHOLD:.4f} | {fmt_ci(0.975, low, high)} |" in validation
    )
    assert "| ROC AUC | 0.997 (" in validation and "Hanley–McNeil" in validation
    operating = section(card, "## Operating point")
    assert f"{THRESHOLD:.4f}" in operating
    assert "Youden's J: the centre" in operating
    assert "1.3 (sigmoid(logit / T)" in operating
    for rule in RULES:
        assert f"| {rule} |" in operating
    stored = [line for line in operating.splitlines() if "**yes**" in line]
    assert len(stored) == 1 and stored[0].startswith("| youden |")
    assert "target sensitivity 0.95" in operating


def test_an_evaluation_folder_is_shown_under_its_split_label_with_its_intervals(binary):
    _, _, checkpoint, eval_dir = binary
    card = build_model_card(checkpoint, evaluation_dir=eval_dir)
    evaluation = section(card, "## Evaluation")
    assert "### test — withheld: not used for training or model selection" in evaluation
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    auc = metrics["metrics"]["checkpoint"]["estimates"]["roc_auc"]
    assert f"| ROC AUC | {fmt_ci(auc['value'], auc['low'], auc['high'])} |" in evaluation
    assert f"at the stored threshold {THRESHOLD:.4f}" in evaluation and "at 0.5" in evaluation
    assert "No test or external evaluation" not in section(card, "## Known limitations")


def test_the_rebuilt_validation_split_keeps_its_optimistic_label(binary, tmp_path):
    _, tree, checkpoint, _ = binary
    val_dir = evaluate(checkpoint, tree, tmp_path / "eval_val", split="validation")
    card = build_model_card(checkpoint, evaluation_dir=[val_dir])
    assert "### validation (used for model selection: optimistic)" in card
    assert "Patient-bootstrap intervals for this split: see the validation evaluation below." in card
    assert "No test or external evaluation is attached" in section(card, "## Known limitations")


def test_evaluations_that_are_missing_or_of_another_checkpoint_are_said_so(binary, tmp_path):
    _, tree, _, eval_dir = binary
    other = card_checkpoint(tmp_path / "other.pt", tree, seed=5)
    card = build_model_card(other, evaluation_dir=[eval_dir, tmp_path / "missing"])
    assert "> **Warning:** this evaluation is of another checkpoint" in card
    assert "Not shown:" in card and "missing/metrics.json not found" in card


def test_stress_results_fill_a_table_with_augmentation_coverage_and_the_worst_case(binary, tmp_path):
    _, _, checkpoint, _ = binary
    card = build_model_card(checkpoint, stress=current_stress_json(tmp_path / "stress"))
    stress = section(card, "## Stress-suite results")
    assert "Not run" not in stress
    assert "| shift | severity | AUC (95 % CI) | sensitivity (95 % CI) | specificity (95 % CI) |" in stress
    assert (
        "| zoom_in | severe (0.7) | 0.910 (0.860–0.950) | 0.990 (0.960–1.000) | 0.410 (0.330–0.500) |"
        in stress
    )
    assert "yes (zoom 1 ± 0.1 per axis)" in stress
    jpeg = next(line for line in stress.splitlines() if line.startswith("| jpeg |"))
    assert "no (no augmentation of this kind)" in jpeg
    assert (
        "**Worst case:** specificity 0.410 (0.330–0.500) (zoom_in at severity severe (0.7), -0.540" in stress
    )
    assert f"({THRESHOLD:.4f})" in stress


def test_stress_is_not_run_when_absent_missing_or_of_an_unknown_shape(binary, tmp_path):
    _, _, checkpoint, _ = binary
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "stress.json").write_text(json.dumps({"version": 9, "data": {"x": 1}}))
    for stress in (None, tmp_path / "nowhere", tmp_path / "odd", tmp_path / "odd" / "stress.json"):
        card = build_model_card(checkpoint, stress=stress)
        assert "**Not run:**" in section(card, "## Stress-suite results"), stress


def test_stress_rows_in_other_shapes_are_read(binary, tmp_path):
    _, _, checkpoint, _ = binary
    rows = [
        {
            "name": "rotation",
            "level": 2,
            "auc": {"value": 0.95, "low": 0.9, "high": 0.97},
            "specificity": 0.8,
        },
        {"name": "gamma", "level": 1, "auc": 0.97, "auc_ci": [0.95, 0.99], "sensitivity": 0.9},
    ]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    card = build_model_card(checkpoint, stress=tmp_path / "list.json")
    stress = section(card, "## Stress-suite results")
    assert "| rotation | 2 | 0.950 (0.900–0.970) | — | 0.800 | yes (rotation ±7°) |" in stress
    assert "| gamma | 1 | 0.970 (0.950–0.990) | 0.900 | — | no (no augmentation of this kind) |" in stress
    assert "**Lowest AUC:** rotation at severity 2" in stress
    csv_dir = tmp_path / "csvdir"
    csv_dir.mkdir()
    (csv_dir / "stress.csv").write_text(
        "shift,severity,auc,auc_lo,auc_hi,in_training_augmentation\nblur,1,0.93,0.9,0.95,False\n"
    )
    assert "| blur | 1 | 0.930 (0.900–0.950) |" in build_model_card(checkpoint, stress=csv_dir)


def test_user_strings_with_pipes_do_not_break_tables(binary, tmp_path):
    _, tree, _, _ = binary
    checkpoint = card_checkpoint(tmp_path / "a|b" / "best.pt", tree)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "stress.json").write_text(json.dumps([{"shift": "x|y", "severity": 1, "auc": 0.9}]))
    card = build_model_card(checkpoint, stress=tmp_path / "s")
    for block in re.findall(r"(?:^\|.*\|\n)+", card, flags=re.M):
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in block.splitlines()}
        assert len(widths) == 1, block
    assert r"| x\|y |" in card


def test_a_three_class_checkpoint_gets_an_argmax_card_with_per_class_results(tmp_path):
    tree = make_kermany_tree(tmp_path / "cx", splits=("train", "test"), patients_per_class=4)
    checkpoint = card_checkpoint(tmp_path / "runs" / "nbv" / "best.pt", tree, task="normal-bacterial-viral")
    eval_dir = evaluate(checkpoint, tree, tmp_path / "eval")
    card = build_model_card(checkpoint, evaluation_dir=eval_dir)
    assert card.startswith("# Model card: nbv (custom_cnn, normal-bacterial-viral)")
    assert "0 = NORMAL, 1 = BACTERIAL, 2 = VIRAL" in card
    operating = section(card, "## Operating point")
    assert "the most probable class (argmax); no threshold" in operating
    validation = section(card, "## Evaluation")
    assert "| Recall of VIRAL | 0.600 (" in validation
    assert "| Macro ROC AUC (one-vs-rest) |" in validation
    assert (
        "| class | images | recall (sensitivity) | specificity | precision | AUC (one-vs-rest) |"
        in validation
    )
    assert "Three-class task" in section(card, "## Known limitations")


def test_an_ensemble_file_is_described_with_its_members(binary, tmp_path):
    _, tree, first, _ = binary
    second = card_checkpoint(tmp_path / "b.pt", tree, seed=1)
    payloads = [checkpoint_payload(first), checkpoint_payload(second)]
    members = [{"name": n, "sha256": "ab" * 32, "model_name": "custom_cnn"} for n in ("fold0", "fold1")]
    extra = {
        "split": payloads[0]["extra"]["split"],
        "threshold_choice": {"threshold": 0.42, "method": "youden", "sensitivity": 0.9, "specificity": 0.8},
        "members": members,
        "conformal": {"labels": [0] * 10 + [1] * 30, "alpha": 0.05, "method": "lac", "source": "validation"},
    }
    extra["threshold_choice"]["chosen_on"] = "validation predictions (40 images)"
    metrics = {"roc_auc": 0.97, "sensitivity": 0.9, "specificity": 0.8, "accuracy": 0.875}
    ens = save_ensemble(
        tmp_path / "ens.pt", payloads, ["fold0", "fold1"], threshold=0.42, metrics=metrics, extra=extra
    )
    card = build_model_card(ens)
    assert card.startswith("# Model card: ens (ensemble of 2 members: custom_cnn)")
    assert "**ensemble of 2 members**" in card
    assert "| fold0 | custom_cnn |" in card and "| fold1 | custom_cnn |" in card
    assert "### Validation — validation predictions (40 images)" in card
    assert "| Specificity at the stored threshold 0.4200 | 0.800 (" in card  # Wilson on the 10 NORMAL
    assert "anatomy: rotation" in card  # the members' recipe


def test_an_old_checkpoint_without_records_still_gets_a_card(tmp_path):
    torch.manual_seed(0)
    model = create_model("custom_cnn", image_size=32, in_channels=1)
    kwargs = {"image_size": 32, "in_channels": 1}
    checkpoint = save_checkpoint(
        tmp_path / "old.pt", model, model_name="custom_cnn", model_kwargs=kwargs,
        preprocess=model.spec.preprocess, class_names=("NORMAL", "PNEUMONIA"),
    )  # fmt: skip
    card = build_model_card(checkpoint)
    for heading in SECTIONS[:1] + SECTIONS[2:]:
        assert heading in card
    assert "The checkpoint records no training configuration." in card
    assert "records no split" in card
    assert "The checkpoint records no validation metrics." in card
