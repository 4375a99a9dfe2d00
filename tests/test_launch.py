"""``pneumocxr.launch``: which rank of which job a process is, as torchrun, srun or nothing started it."""

from __future__ import annotations

import re

import pytest
import torch

from pneumocxr.errors import ConfigError
from pneumocxr.launch import Launch, cpu_threads_per_rank, detect_launch, rank_device, slurm_main_address

TORCHRUN = {
    "TORCHELASTIC_RUN_ID": "none",
    "RANK": "3",
    "WORLD_SIZE": "4",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "GROUP_RANK": "1",
}
SRUN = {
    "SLURM_NTASKS": "5",
    "SLURM_PROCID": "4",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "2",
    "SLURM_NNODES": "3",
    "SLURM_TASKS_PER_NODE": "2(x2),1",
    "SLURM_JOB_NAME": "predict",
}


def test_a_plain_start_is_rank_0_of_1():
    assert detect_launch({}) == Launch("none") and not Launch("none").distributed


def test_torchrun_gives_rank_world_and_local_layout():
    assert detect_launch(TORCHRUN) == Launch("torchrun", 3, 4, 1, 2)


def test_torchrun_inside_a_slurm_allocation_is_torchrun():
    assert detect_launch({**SRUN, **TORCHRUN}).launcher == "torchrun"


def test_srun_gives_rank_world_and_tasks_on_this_node():
    # "2(x2),1": two tasks on nodes 0 and 1, one on node 2 (this task's node)
    assert detect_launch(SRUN) == Launch("slurm", 4, 5, 0, 1)
    assert detect_launch({**SRUN, "SLURM_NODEID": "1", "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}) == Launch(
        "slurm", 3, 5, 1, 2
    )


@pytest.mark.parametrize("name", ["bash", "interactive"])
def test_an_interactive_slurm_shell_is_not_a_launcher(name):
    assert detect_launch({**SRUN, "SLURM_JOB_NAME": name}).launcher == "none"


def test_rank_and_world_size_set_by_hand_are_honoured():
    assert detect_launch({"RANK": "1", "WORLD_SIZE": "2"}) == Launch("env", 1, 2, 0, 1)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({**TORCHRUN, "RANK": "4"}, "rank 4 (RANK) of 4 (WORLD_SIZE)"),
        ({**TORCHRUN, "WORLD_SIZE": "four"}, "WORLD_SIZE='four' is not a whole number"),
        ({**SRUN, "SLURM_PROCID": "5"}, "rank 5 (SLURM_PROCID) of 5 (SLURM_NTASKS)"),
    ],
)
def test_an_inconsistent_environment_is_refused_by_name(env, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        detect_launch(env)


@pytest.mark.parametrize(
    "env", [{}, TORCHRUN, SRUN, {**SRUN, "SLURM_JOB_NAME": "bash"}, {**SRUN, **TORCHRUN}]
)
def test_the_launcher_is_the_one_lightning_sees_for_training(env, monkeypatch):
    """``training/hardware.py`` leaves detection to Lightning: predict must agree with it."""
    pytest.importorskip("lightning")
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    for name in {*TORCHRUN, *SRUN}:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    lightning = (
        "torchrun" if TorchElasticEnvironment.detect() else "slurm" if SLURMEnvironment.detect() else "none"
    )
    assert detect_launch().launcher == lightning


def test_srun_tasks_meet_at_the_first_node_on_a_port_from_the_job_id():
    env = {"SLURM_NODELIST": "gpu[07-09,12],cpu3", "SLURM_JOB_ID": "8812345"}
    assert slurm_main_address(env) == ("gpu07", 17345)
    assert slurm_main_address({"SLURM_NODELIST": "a1 a2"}) == ("a1", 12910)
    assert slurm_main_address({**env, "MASTER_ADDR": "head", "MASTER_PORT": "29500"}) == ("head", 29500)


def test_each_rank_gets_its_own_gpu_or_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rank_device("auto", Launch("torchrun", 1, 2, 1, 2)) == "cpu"
    assert rank_device("cpu", Launch("torchrun", 1, 2, 1, 2)) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert rank_device("auto", Launch("torchrun", 3, 4, 3, 4)) == "cuda:1"
    assert rank_device("cuda", Launch("slurm", 0, 2, 0, 1)) == "cuda:0"
    assert rank_device("cuda:1", Launch("torchrun", 0, 2, 0, 2)) == "cuda:1"  # pinned by the user


def test_cpu_ranks_share_the_cores_of_their_node(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(8)), raising=False)
    assert cpu_threads_per_rank(Launch("torchrun", 0, 4, 0, 4), {}) == 2
    assert cpu_threads_per_rank(Launch("torchrun", 0, 16, 0, 16), {}) == 1
    assert cpu_threads_per_rank(Launch("slurm", 0, 4, 0, 4), {"SLURM_CPUS_PER_TASK": "6"}) == 6
