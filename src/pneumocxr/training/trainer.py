"""The Lightning ``Trainer`` of a run and the checkpoint plumbing the phases share.

``settings`` is the small dict ``train()`` resolves once per run: accelerator, precision,
whether to show progress, and extra callbacks for every phase.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

from pneumocxr.config import RunConfig
from pneumocxr.training.hardware import resolve_devices, resolve_num_nodes

# Lightning warnings that say nothing about the user's run, printed on every one of them:
# - its own use of a torch pytree API that torch deprecated (a Lightning matter, not ours);
# - "modules in eval mode at the start of training": the frozen backbone's BatchNorm layers are kept in
#   eval mode on purpose (PneumoModel.train in models/registry.py), so their statistics do not drift.
_NOISE = (r".*isinstance\(treespec, LeafSpec\).*", r".*module\(s\) in eval mode at the start of training.*")


def make_trainer(config: RunConfig, settings: dict[str, Any], callbacks: list, logger: Any) -> L.Trainer:
    """A Trainer for ``config.train.max_epochs``; without callbacks it is a quiet validate-only one."""
    for message in _NOISE:
        warnings.filterwarnings("ignore", message=message)
    return L.Trainer(
        accelerator=settings["accelerator"],
        devices=resolve_devices(config.train.devices),
        num_nodes=resolve_num_nodes(),  # multi-node DDP: from torchrun/srun, see hardware.py
        precision=settings["precision"],
        max_epochs=config.train.max_epochs,
        callbacks=callbacks,
        logger=logger,
        log_every_n_steps=1,  # only epoch-level values are logged; this just avoids a warning
        enable_progress_bar=settings["progress"] and bool(callbacks),
        enable_model_summary=settings["progress"] and bool(callbacks),
        enable_checkpointing=bool(callbacks),
        deterministic=False,
        # No sanity pass: validation runs after every epoch anyway, and on a path-sorted val set
        # its first two batches hold one class only, which only produces misleading warnings.
        num_sanity_val_steps=0,
    )


def distributed_backend() -> str:
    """The process group's backend ("gloo" on CPU, "nccl" on GPUs), or "none" for one process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return str(torch.distributed.get_backend())
    return "none"


def read_lightning(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as data (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_weights(model: torch.nn.Module, lightning_ckpt: str) -> None:
    """Load the model part of a Lightning checkpoint (keys ``model.*``) into ``model``."""
    state = read_lightning(lightning_ckpt)["state_dict"]
    prefix = "model."
    model.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
