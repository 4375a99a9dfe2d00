"""Which device and numeric precision a run uses when the config says "auto".

Kept apart from the training loop so the choice is testable and reportable (the run folder and
the checkpoint record what was actually used).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

from pneumocxr.errors import ConfigError

logger = logging.getLogger(__name__)

ACCELERATORS = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "32", "bf16-mixed", "16-mixed")
# CPU flags meaning native bf16 arithmetic (AVX-512 BF16, AMX): without them bf16 autocast on a
# CPU is emulated and slower than fp32, so "auto" stays at fp32 there.
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_supports_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU advertises native bf16 instructions (Linux ``/proc/cpuinfo`` flags)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False  # not Linux (or unreadable): assume no native bf16
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return any(flag in flags for flag in _CPU_BF16_FLAGS)
    return False


def resolve_accelerator(requested: str) -> str:
    """cuda > mps > cpu for "auto"; a ConfigError when the requested device is not present."""
    if requested not in ACCELERATORS:
        raise ConfigError(f"train.accelerator={requested!r}; use one of {', '.join(ACCELERATORS)}")
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.accelerator='cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.accelerator='mps' but MPS is not available; use 'auto' or 'cpu'")
    return requested


def resolve_precision(requested: str, accelerator: str) -> str:
    """Lightning precision string for "auto": bf16-mixed where the hardware does bf16 natively, else 32."""
    if requested not in PRECISIONS:
        raise ConfigError(f"train.precision={requested!r}; use one of {', '.join(PRECISIONS)}")
    if requested == "16-mixed" and accelerator == "cpu":
        raise ConfigError("train.precision='16-mixed' needs a GPU; on a CPU use 'bf16-mixed', '32' or 'auto'")
    if requested != "auto":
        return requested
    if accelerator == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32"
    if accelerator == "cpu":
        return "bf16-mixed" if cpu_supports_bf16() else "32"
    return "32"  # mps: bf16 autocast support varies by OS version; fp32 is the safe default


def launcher_layout() -> tuple[int, int] | None:
    """(processes per node, nodes) of the torchrun or SLURM ``srun`` job that started this process;
    None when it was started plainly.

    Lightning takes ranks and world size from these launchers but the per-node process count
    (``devices``) and ``num_nodes`` from the Trainer, and refuses to start when they disagree.
    Reading both from the launcher means ``torchrun --nproc_per_node N`` or ``srun`` needs no
    matching flags. The checks are Lightning's own, in its order (torchrun may run inside SLURM).
    """
    if TorchElasticEnvironment.detect():
        per_node = int(os.environ["LOCAL_WORLD_SIZE"])
        return per_node, max(1, int(os.environ["WORLD_SIZE"]) // per_node)
    if SLURMEnvironment.detect():
        nodes = int(os.environ.get("SLURM_NNODES", os.environ.get("SLURM_JOB_NUM_NODES", "1")))
        per_node = os.environ.get("SLURM_NTASKS_PER_NODE")
        tasks = int(per_node) if per_node else int(os.environ["SLURM_NTASKS"]) // max(1, nodes)
        return max(1, tasks), nodes
    return None


def resolve_devices(requested: str) -> int | str:
    """Lightning ``devices``: a positive count or "auto" (under torchrun/srun: processes per node)."""
    text = str(requested).strip()
    layout = launcher_layout()
    if text == "auto":
        return layout[0] if layout else "auto"
    if not (text.isdigit() and int(text) > 0):
        raise ConfigError(f"train.devices={requested!r}; use 'auto' or a positive number such as 2")
    if layout and int(text) != layout[0]:
        raise ConfigError(
            f"train.devices={text} but the launcher started {layout[0]} process(es) per node "
            "(one per device); "
            f"use train.devices=auto or launch with --nproc_per_node {text} (torchrun) / "
            f"--ntasks-per-node={text} (SLURM)"
        )
    return int(text)


def resolve_num_nodes() -> int:
    """Lightning ``num_nodes``: the launcher's node count (torchrun --nnodes, SLURM --nodes), else 1."""
    layout = launcher_layout()
    return layout[1] if layout else 1
