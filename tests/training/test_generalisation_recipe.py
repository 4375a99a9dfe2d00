"""The generalisation knobs of a recipe: label smoothing, EMA weights, the warm-up cosine schedule."""

from __future__ import annotations

import pytest
import torch
import yaml
from tests.conftest import make_kermany_tree

from pneumocxr.config import RunConfig, TrainConfig, apply_overrides, from_dict, load_yaml, resolve_recipe
from pneumocxr.errors import ConfigError
from pneumocxr.models import load_checkpoint
from pneumocxr.training import train
from pneumocxr.training.module import ClassifierModule, warmup_cosine
from pneumocxr.training.trainer import read_lightning


def test_warmup_cosine_rises_then_decays_to_one_percent():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    peak = lrs.index(max(lrs))
    assert peak == 4  # 5 % warm-up
    assert lrs[0] < lrs[peak] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :]))
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)


def test_label_smoothing_pulls_the_binary_targets_toward_one_half():
    """With smoothing eps the loss is minimal at sigmoid(logit) = 1 - eps/2, not at an infinite logit."""
    model = torch.nn.Linear(1, 1)
    module = ClassifierModule(model, label_smoothing=0.2)
    logits = torch.linspace(-8, 8, 1601)
    targets = torch.ones_like(logits)
    eps = module.hparams.label_smoothing
    smoothed = targets * (1 - eps) + 0.5 * eps
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, smoothed, reduction="none")
    best = torch.sigmoid(logits[loss.argmin()])
    assert float(best) == pytest.approx(0.9, abs=0.01)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("train.label_smoothing=0.6", "label_smoothing"),
        ("train.ema_decay=1.0", "ema_decay"),
        ("train.lr_schedule=linear", "plateau, cosine"),
    ],
)
def test_bad_generalisation_settings_are_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(RunConfig, apply_overrides({}, [override]))


def test_cpu_accurate_recipe_trains_the_whole_network_with_wide_zoom():
    config = from_dict(RunConfig, load_yaml(resolve_recipe("cpu_accurate")))
    assert config.model.name == "efficientnet_lite0" and config.model.pretrained
    assert not config.train.frozen_features and config.train.finetune_epochs == 0
    assert config.train.augment == "fov"
    # texture too: without noise/blur ranges the model read texture (stress suite, docs/RESULTS.md)
    assert dict(config.train.augment_overrides) == {"noise": 0.03, "blur": 1.0}
    assert config.train.ema_decay > 0 and config.train.label_smoothing > 0
    assert config.train.lr_schedule == "cosine"
    assert config.train.select_on == "stress" and config.train.threshold_rule == "target_sensitivity"
    assert TrainConfig().ema_decay == 0  # the reference recipe's default stays untouched


@pytest.mark.slow
def test_ema_run_exports_the_averaged_weights(tmp_path):
    root = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=12, size=(36, 36))
    settings = {
        "data": {"root": str(root), "val_fraction": 0.25},
        "model": {"name": "custom_cnn", "image_size": 32},
        "train": {
            "max_epochs": 2,
            "batch_size": 8,
            "lr": 1e-3,
            "precision": "32",
            "augment": "fov",
            "ema_decay": 0.9,
            "label_smoothing": 0.1,
            "lr_schedule": "cosine",
            "recalibrate_bn": False,
        },
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    config = from_dict(RunConfig, load_yaml(tmp_path / "run.yaml"))
    result = train(config, tmp_path / "run", progress=False)
    lightning = read_lightning(result.out_dir / "checkpoints" / "last.ckpt")
    averaged, current = lightning["state_dict"], lightning["current_model_state"]
    weight = "model.net.classifier.0.weight" if "model.net.classifier.0.weight" in averaged else None
    key = weight or next(k for k in averaged if k.endswith("weight") and averaged[k].ndim == 2)
    assert not torch.equal(averaged[key], current[key])  # the average is not the last step's weights
    model, meta = load_checkpoint(result.best_checkpoint)
    assert meta.config["train"]["ema_decay"] == 0.9
    best = read_lightning(meta.extra["lightning_checkpoint"])["state_dict"]
    exported = model.state_dict()
    assert torch.equal(exported[key.removeprefix("model.")], best[key])  # best.pt holds averaged weights


@pytest.mark.slow
def test_stress_selection_scores_best_and_last_and_records_its_choice(tmp_path):
    root = make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=12, size=(36, 36))
    settings = {
        "data": {"root": str(root), "val_fraction": 0.25},
        "model": {"name": "custom_cnn", "image_size": 32},
        "train": {"max_epochs": 3, "batch_size": 8, "lr": 1e-3, "precision": "32", "select_on": "stress"},
    }
    config = from_dict(RunConfig, settings)
    result = train(config, tmp_path / "run", progress=False)
    _, meta = load_checkpoint(result.best_checkpoint)
    selection = meta.extra["selection"]
    assert selection["rule"] == "stress"
    kinds = {c["kind"] for c in selection["candidates"]}
    assert kinds <= {"best", "last"} and "best" in kinds
    scores = {c["path"]: c["score"] for c in selection["candidates"]}
    assert selection["chosen"] == max(scores, key=scores.get)
    assert meta.extra["lightning_checkpoint"] == selection["chosen"]
    for c in selection["candidates"]:
        assert 0.0 <= c["stress_auc"] <= 1.0 and c["score"] == pytest.approx(
            0.5 * c["val_auc"] + 0.5 * c["stress_auc"]
        )
    assert 1 <= meta.extra["best_epoch"] <= 3


def test_select_on_must_be_a_known_rule():
    with pytest.raises(ConfigError, match="val_auc or stress"):
        from_dict(RunConfig, {"train": {"select_on": "luck"}})
