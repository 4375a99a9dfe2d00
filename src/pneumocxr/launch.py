"""Which launcher started this process, and which rank of how many it is.

Training leaves this to Lightning (``training/hardware.py``); batch prediction runs without
Lightning, so it reads the same launchers in the same order itself — torchrun (torchelastic) first,
because torchrun may run inside a SLURM allocation, then SLURM ``srun``, then a plain
``RANK``/``WORLD_SIZE`` environment. The checks copy Lightning's (``TorchElasticEnvironment``,
``SLURMEnvironment``), so ``train`` and ``predict`` agree on what a job is; a test holds them
together.

Imports only the standard library and torch (and that lazily): every layer may use it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pneumocxr.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["Launch", "cpu_threads_per_rank", "detect_launch", "rank_device", "slurm_main_address"]

# A SLURM job named like this is an interactive shell that launches processes itself (Lightning's rule).
_SLURM_INTERACTIVE_NAMES = ("bash", "interactive")


@dataclass(frozen=True)
class Launch:
    """This process's place in a job: ``rank`` of ``world_size``, ``local_rank`` of
    ``local_world_size`` on its node. A plain start is rank 0 of 1 (``launcher`` "none")."""

    launcher: str  # "none", "torchrun", "slurm" or "env" (RANK/WORLD_SIZE set by hand)
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        """More than one process: ranks must share the work and meet to merge it."""
        return self.world_size > 1


def detect_launch(env: Mapping[str, str] | None = None) -> Launch:
    """The launcher of this process from its environment (``os.environ`` unless given)."""
    env = os.environ if env is None else env
    if env.get("TORCHELASTIC_RUN_ID") is not None:  # torch.distributed.is_torchelastic_launched
        return _checked(
            "torchrun",
            rank=_int(env, "RANK"),
            world_size=_int(env, "WORLD_SIZE"),
            local_rank=_int(env, "LOCAL_RANK"),
            local_world_size=_int(env, "LOCAL_WORLD_SIZE"),
        )
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in _SLURM_INTERACTIVE_NAMES:
        return _checked(
            "slurm",
            rank=_int(env, "SLURM_PROCID", 0),
            world_size=_int(env, "SLURM_NTASKS"),
            local_rank=_int(env, "SLURM_LOCALID", 0),
            local_world_size=_slurm_tasks_on_this_node(env),
        )
    if "WORLD_SIZE" in env and "RANK" in env:
        return _checked(
            "env",
            rank=_int(env, "RANK"),
            world_size=_int(env, "WORLD_SIZE"),
            local_rank=_int(env, "LOCAL_RANK", 0),
            local_world_size=_int(env, "LOCAL_WORLD_SIZE", 1),
        )
    return Launch("none")


_NAMES = {
    "torchrun": ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    "slurm": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_TASKS_PER_NODE"),
    "env": ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
}


def _checked(launcher: str, **values: int) -> Launch:
    launch = Launch(launcher, **values)
    if not (0 <= launch.rank < launch.world_size and 0 <= launch.local_rank < launch.local_world_size):
        rank, world, local, local_world = _NAMES[launcher]
        raise ConfigError(
            f"{launcher} environment is inconsistent: rank {launch.rank} ({rank}) of {launch.world_size} "
            f"({world}), local rank {launch.local_rank} ({local}) of {launch.local_world_size} "
            f"({local_world}); start the command with torchrun or srun rather than setting these by hand"
        )
    return launch


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = env.get(name)
    if text is None and default is not None:
        return default
    try:
        return int(str(text))
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} is not a whole number") from None


def _slurm_tasks_on_this_node(env: Mapping[str, str]) -> int:
    """Tasks of this step on this node: ``SLURM_STEP_TASKS_PER_NODE`` / ``SLURM_TASKS_PER_NODE``
    ("2(x3),1": two tasks on each of three nodes, then one) indexed by ``SLURM_NODEID``."""
    text = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if text:
        counts: list[int] = []
        for part in text.split(","):
            match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
            if match is None:
                break
            counts += [int(match[1])] * int(match[2] or 1)
        else:
            node = _int(env, "SLURM_NODEID", 0)
            if node < len(counts):
                return max(1, counts[node])
    nodes = _int(env, "SLURM_NNODES", 1)
    return max(1, _int(env, "SLURM_NTASKS") // max(1, nodes))


def slurm_main_address(env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """(host, port) where the ranks of an ``srun`` job meet: ``MASTER_ADDR``/``MASTER_PORT`` when
    set, else the first host of ``SLURM_NODELIST`` and 15000 + the job id's last four digits —
    Lightning's rule, so every task computes the same pair without talking."""
    env = os.environ if env is None else env
    host = env.get("MASTER_ADDR")
    if host is None:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST", "127.0.0.1")
        nodes = re.sub(r"\[(.*?)[,-].*?\]", r"\1", nodes)  # first node of every range: a[05-09] → a05
        host = re.sub(r"\[(.*?)\]", r"\1", nodes).split(" ")[0].split(",")[0]
    if "MASTER_PORT" in env:
        return host, _int(env, "MASTER_PORT")
    job = env.get("SLURM_JOB_ID", "")
    port = 15000 + int(job[-4:]) if job[-4:].isdigit() else 12910
    return host, port


def rank_device(requested: str, launch: Launch) -> str:
    """The device of one rank: "auto" and "cuda" become ``cuda:<local rank>`` (modulo the visible
    GPUs, so one GPU per task from ``--gpus-per-task`` works too) when CUDA is present; "auto"
    without CUDA is the CPU. An explicit ``cuda:N``, ``cpu`` or ``mps`` is kept as asked."""
    import torch

    text = str(requested).strip()
    if text in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{launch.local_rank % torch.cuda.device_count()}"
    if text == "auto":
        return "cpu"  # not mps: one Apple GPU shared by several processes helps none of them
    return text


def cpu_threads_per_rank(launch: Launch, env: Mapping[str, str] | None = None) -> int:
    """Intra-op threads for one CPU rank: ``SLURM_CPUS_PER_TASK`` under SLURM (srun already binds
    each task to its cores), else the cores this process may use divided by the ranks on the node.
    torchrun's blanket OMP_NUM_THREADS=1 would leave all but one core per rank idle."""
    env = os.environ if env is None else env
    if launch.launcher == "slurm" and env.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return max(1, int(env["SLURM_CPUS_PER_TASK"]))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, launch.local_world_size))
