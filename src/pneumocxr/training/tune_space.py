"""The search space of ``pneumocxr tune``: a YAML of dotted config keys and their candidate values.

    sampler: grid                       # or tpe
    params:
      train.lr: [1.0e-3, 1.0e-4]        # a list: grid values / TPE categorical choices
      model.dropout: {low: 0.2, high: 0.7}   # TPE only: a range (log: true for a log scale)
    fixed:                              # set for every trial: recipe < fixed < --set
      model.image_size: 64

Every key and value is checked against ``RunConfig`` when the file is read, so a typo fails at
once instead of in the seventh trial.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pneumocxr.config import RunConfig, apply_overrides, from_dict, load_yaml, to_dict
from pneumocxr.errors import ConfigError

DEFAULT_TPE_TRIALS = 20


@dataclass(frozen=True)
class SearchSpace:
    """A search YAML (configs/search_*.yaml). Parameter keys are dotted config keys (``train.lr``)."""

    sampler: str = "tpe"  # "grid": every combination of the listed values once; "tpe": Bayesian (Optuna TPE)
    params: dict[str, Any] = field(default_factory=dict)  # key → [values] or {low, high, log, step}
    fixed: dict[str, Any] = field(default_factory=dict)  # key → value for every trial: recipe < fixed < --set
    n_trials: int = 0  # finished (complete + pruned) trials of all workers to reach; 0 = grid size / 20
    seed: int = 0  # seeds the sampler (and the grid's order); trials use train.seed
    pruner: str = "auto"  # "median": stop trials below the median epoch curve; "none"; "auto": median for tpe
    pruner_startup_trials: int = 4  # trials that always run to the end before pruning starts
    pruner_warmup_epochs: int = 1  # epochs of each trial that are never pruned

    def __post_init__(self) -> None:
        if self.sampler not in ("grid", "tpe"):
            raise ConfigError(f"search sampler={self.sampler!r}; use 'grid' or 'tpe'")
        if self.pruner not in ("auto", "median", "none"):
            raise ConfigError(f"search pruner={self.pruner!r}; use 'median', 'none' or 'auto'")
        if not isinstance(self.params, dict) or not self.params:
            raise ConfigError("search params: give at least one, e.g. params: {train.lr: [1.0e-3, 1.0e-4]}")
        if not isinstance(self.fixed, dict):
            raise ConfigError("search fixed: must be a mapping of dotted config keys to values")
        if self.n_trials < 0:
            raise ConfigError(f"search n_trials={self.n_trials}; use 0 (default) or more")

    @property
    def uses_pruning(self) -> bool:
        return self.pruner == "median" or (self.pruner == "auto" and self.sampler == "tpe")

    def grid(self) -> dict[str, list[Any]]:
        """Grid values per parameter, sorted by name (GridSampler's own order)."""
        return {name: list(self.params[name]) for name in sorted(self.params)}

    def target_trials(self, n_trials: int | None) -> int:
        """Finished trials the study aims at: the CLI's --n-trials, else the YAML's, else the default."""
        n = n_trials if n_trials is not None else self.n_trials
        if self.sampler == "grid":
            size = 1
            for values in self.params.values():
                size *= len(values)
            return min(n, size) if n else size
        return n or DEFAULT_TPE_TRIALS


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and check a search YAML: unknown keys, config keys and value types fail here, not in trial 7."""
    try:
        space = from_dict(SearchSpace, load_yaml(path))
    except ConfigError as exc:
        raise ConfigError(exc if str(path) in str(exc) else f"{path}: {exc}") from None
    params = {name: _check_param(path, space.sampler, name, spec) for name, spec in space.params.items()}
    fixed = {name: _typed(path, name, value) for name, value in space.fixed.items()}
    return replace(space, params=params, fixed=fixed)


def _check_param(path: str | Path, sampler: str, name: str, spec: Any) -> Any:
    if isinstance(spec, list) and spec:
        return [_typed(path, name, value) for value in spec]
    keys = set(spec) if isinstance(spec, dict) else set()
    if sampler == "tpe" and {"low", "high"} <= keys <= {"low", "high", "log", "step"}:
        low, high = _typed(path, name, spec["low"]), _typed(path, name, spec["high"])
        if not isinstance(low, (int, float)) or isinstance(low, bool) or not low < high:
            raise ConfigError(f"{path}: {name} needs numbers low < high, got {low!r} and {high!r}")
        if spec.get("step") and spec.get("log"):
            raise ConfigError(f"{path}: {name}: a range takes step or log: true, not both (Optuna's rule)")
        return {"low": low, "high": high, "log": bool(spec.get("log", False)), "step": spec.get("step")}
    form = "a list of values" if sampler == "grid" else "a list of values or {low: …, high: …, log: true}"
    raise ConfigError(f"{path}: params.{name}={spec!r}; give {form}")


def _typed(path: str | Path, name: str, value: Any) -> Any:
    """``value`` as the config field ``name`` types it (YAML reads 1e-4 as a string), or a ConfigError."""
    section, _, key = name.partition(".")
    if not key or "." in key:
        raise ConfigError(f"{path}: {name!r} is not a config key; use section.key, e.g. train.lr")
    try:
        config = from_dict(RunConfig, set_dotted(to_dict(RunConfig()), {name: value}))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return getattr(getattr(config, section), key)


def set_dotted(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``{"section.key": value}`` set (a copy; the config dict is two levels deep)."""
    result = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for name, value in values.items():
        section, _, key = name.partition(".")
        result.setdefault(section, {})[key] = value
    return result


def compose_base(recipe: dict[str, Any], space: SearchSpace, overrides: Sequence[str] = ()) -> RunConfig:
    """The config every trial starts from: recipe < the search's ``fixed`` < ``overrides`` (--set key=value).

    A searched key cannot also be fixed: the search would silently overwrite it.
    """
    set_keys = {item.partition("=")[0] for item in overrides}
    clash = sorted(set(space.params) & (set(space.fixed) | set_keys))
    if clash:
        raise ConfigError(f"{', '.join(clash)} is searched; drop it from --set / the search's fixed section")
    return from_dict(RunConfig, apply_overrides(set_dotted(recipe, space.fixed), list(overrides)))
