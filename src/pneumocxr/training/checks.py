"""Refusals before a run starts: settings the loop cannot train, and run folders it must not clobber."""

from __future__ import annotations

import logging
from pathlib import Path

from pneumocxr.config import RunConfig, from_dict, load_yaml, to_dict
from pneumocxr.errors import ConfigError

logger = logging.getLogger(__name__)


def check_supported(config: RunConfig) -> None:
    """ConfigError for settings the training loop cannot run (the task/num_classes pairing is
    checked by RunConfig itself)."""
    if config.train.max_epochs < 1:
        raise ConfigError(f"train.max_epochs={config.train.max_epochs}; use 1 or more")
    if config.train.checkpoint_every_n_steps < 0:
        raise ConfigError(
            f"train.checkpoint_every_n_steps={config.train.checkpoint_every_n_steps}; "
            "use 0 (checkpoint per epoch only) or more"
        )
    if config.train.finetune_epochs < 0:
        raise ConfigError(f"train.finetune_epochs={config.train.finetune_epochs}; use 0 (off) or more")


def check_resume(config: RunConfig, out_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a run silently, and to resume one that is not there or is a different run."""
    ckpt_dir = out_dir / "checkpoints"
    has_run = ckpt_dir.is_dir() and any(ckpt_dir.rglob("*.ckpt"))
    if not resume:
        if has_run:
            raise ConfigError(
                f"{out_dir} already holds a training run; pass --resume to continue it or choose a new --out"
            )
        return
    if not (ckpt_dir / "last.ckpt").is_file():
        raise ConfigError(
            f"nothing to resume: {ckpt_dir / 'last.ckpt'} does not exist; start the run without --resume"
        )
    saved = out_dir / "config.yaml"
    if saved.is_file():
        before = to_dict(from_dict(RunConfig, load_yaml(saved)))
        now = to_dict(config)
        changed = [f"{s}.{k}" for s in now for k in now[s] if before.get(s, {}).get(k) != now[s][k]]
        fixed = [key for key in changed if not key.startswith("train.")]
        if fixed:
            raise ConfigError(
                f"--resume with a different {', '.join(fixed)} than {saved} records; resume with the same "
                "data and model settings (omit --config to reuse the saved one)"
            )
        if changed:
            logger.warning("resuming with changed settings: %s", ", ".join(changed))
