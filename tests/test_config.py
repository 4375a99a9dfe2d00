"""Config loading: defaults < YAML < overrides, unknown keys rejected with a suggestion."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pneumocxr.config import (
    DataConfig,
    Preprocess,
    apply_overrides,
    dump_yaml,
    from_dict,
    load_yaml,
    resolve_recipe,
    to_dict,
)
from pneumocxr.errors import ConfigError


@dataclass(frozen=True)
class _Train:
    lr: float = 1e-4  # learning rate
    epochs: int = 30  # maximum epochs


@dataclass(frozen=True)
class _Run:
    data: DataConfig = field(default_factory=DataConfig)
    train: _Train = field(default_factory=_Train)
    models: tuple[str, ...] = ("custom_cnn",)


def test_from_dict_builds_nested_dataclasses_with_yaml_scientific_strings():
    cfg = from_dict(_Run, {"train": {"lr": "1e-3"}, "models": ["a", "b"], "data": {"val_fraction": 0.2}})
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.epochs == 30
    assert cfg.models == ("a", "b")
    assert cfg.data.val_fraction == 0.2


def test_unknown_key_is_rejected_with_did_you_mean():
    with pytest.raises(ConfigError, match=r"train\.lrr.*did you mean 'lr'"):
        from_dict(_Run, {"train": {"lrr": 1}})


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        from_dict(_Run, {"train": {"epochs": "many"}})


def test_overrides_take_precedence_and_parse_values_as_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.01\n  epochs: 5\n")
    data = apply_overrides(load_yaml(path), ["train.epochs=7", "data.split_seed=3"])
    cfg = from_dict(_Run, data)
    assert (cfg.train.lr, cfg.train.epochs, cfg.data.split_seed) == (0.01, 7, 3)


def test_bad_override_syntax_is_a_config_error():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.epochs"])


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = from_dict(_Run, {"train": {"lr": 0.5}})
    dump_yaml(cfg, tmp_path / "resolved.yaml")
    assert from_dict(_Run, load_yaml(tmp_path / "resolved.yaml")) == cfg
    assert to_dict(cfg)["models"] == ["custom_cnn"]


def test_missing_and_invalid_yaml_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)


@pytest.mark.parametrize(
    "kwargs", [{"image_size": 4}, {"channels": 2}, {"resize_mode": "crop"}, {"mean": (0.1, 0.2)}]
)
def test_preprocess_rejects_impossible_settings(kwargs):
    with pytest.raises(ConfigError):
        Preprocess(**kwargs)


def test_resolve_recipe_accepts_a_shipped_name_or_a_path(tmp_path):
    shipped = resolve_recipe("seed_vgg16")
    assert shipped.name == "seed_vgg16.yaml" and shipped.parent.name == "configs"
    assert shipped.parent.parent.name == "pneumocxr"  # inside the package: found without the repository
    assert resolve_recipe("seed_vgg16.yaml") == shipped
    own = tmp_path / "mine.yaml"
    own.write_text("train:\n  lr: 0.1\n")
    assert resolve_recipe(own) == own and resolve_recipe(str(own)) == own
    with pytest.raises(ConfigError, match=r"'no_such_recipe' not found.*seed_custom_cnn"):
        resolve_recipe("no_such_recipe")
    with pytest.raises(ConfigError, match="not found"):
        resolve_recipe(tmp_path / "missing.yaml")


def test_integer_override_of_a_text_field_becomes_text():
    cfg = from_dict(_Run, apply_overrides({}, ["data.root=2024"]))
    assert cfg.data.root == "2024"
