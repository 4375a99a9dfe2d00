"""``predict`` under torchrun and srun: disjoint shards, every image scored once, one merged CSV.

The two multi-process tests start real processes (gloo on the CPU, one thread each) with the same
command lines a cluster job uses; the rest check the pieces in-process.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import make_kermany_tree
from tests.inference.conftest import write_checkpoint

import pneumocxr
from pneumocxr.cli.main import main
from pneumocxr.inference import load_predictor
from pneumocxr.launch import Launch
from pneumocxr.workflows.predict_files import input_files, score_files
from pneumocxr.workflows.predict_shards import _read_part, _write_part, part_path, shard, shard_identity

SRC = Path(pneumocxr.__file__).resolve().parents[1]
TIMEOUT = 120  # seconds for a whole multi-process run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    tree = make_kermany_tree(base / "cx", splits=("test",), patients_per_class=3, size=(40, 40))
    checkpoint = write_checkpoint(base / "ck" / "best.pt", seed=3)
    return tree, checkpoint


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def single_process(checkpoint: Path, out: Path, *inputs: str) -> list[dict[str, str]]:
    with contextlib.redirect_stdout(io.StringIO()):
        assert (
            main(["predict", "--checkpoint", str(checkpoint), *inputs, "--out", str(out), "--device", "cpu"])
            == 0
        )
    return rows(out)


def assert_same_predictions(got: list[dict[str, str]], want: list[dict[str, str]]) -> None:
    """Same files in the same order, same classes; probabilities equal up to float32 batching
    (a shard is batched differently from the whole list: ~1e-9 apart)."""
    assert [r["path"] for r in got] == [r["path"] for r in want]
    assert [r["prediction"] for r in got] == [r["prediction"] for r in want]
    for a, b in zip(got, want, strict=True):
        for key in ("calibrated_probability", "p_NORMAL", "p_PNEUMONIA", "logit"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6), (a["path"], key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any launcher's variables, plus ``extra``."""
    launcher = ("SLURM_", "TORCHELASTIC_", "MASTER_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher)}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**env, "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.parametrize(("n", "world"), [(0, 2), (1, 3), (7, 2), (12, 5), (10, 10)])
def test_shards_are_disjoint_complete_and_deterministic(n, world):
    shards = [list(shard(n, rank, world)) for rank in range(world)]
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(n))  # complete, and disjoint (no index twice)
    assert shards == [list(shard(n, rank, world)) for rank in range(world)]  # the same every time
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced


def test_a_rank_outside_the_world_is_refused():
    with pytest.raises(pneumocxr.errors.ConfigError, match="rank 2 is outside a world of 2"):
        shard(5, 2, 2)


def test_a_manifest_predicts_its_rows_in_order_like_the_same_files_named(setup, tmp_path):
    tree, checkpoint = setup
    files = sorted((tree / "test").rglob("*.jpeg"), reverse=True)[:5]
    manifest = tmp_path / "lists" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text("path\n" + "".join(f"{os.path.relpath(f, manifest.parent)}\n" for f in files))
    by_manifest = single_process(checkpoint, tmp_path / "m.csv", "--manifest", str(manifest))
    by_name = single_process(checkpoint, tmp_path / "n.csv", *map(str, files))
    assert [Path(r["path"]).resolve() for r in by_manifest] == [f.resolve() for f in files]
    assert [r["p_PNEUMONIA"] for r in by_manifest] == [r["p_PNEUMONIA"] for r in by_name]


def test_a_bad_manifest_is_one_line_naming_the_file_and_row(setup, tmp_path, capsys):
    _, checkpoint = setup
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\nmissing.png\n")
    argv = [
        "predict",
        "--checkpoint",
        str(checkpoint),
        "--manifest",
        str(manifest),
        "--out",
        str(tmp_path / "p.csv"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.count("\n") == 0 and "m.csv: 1 bad row(s): line 2: file" in err and "missing.png not found" in err
    )
    manifest.write_text("file\nmissing.png\n")
    assert main(argv) == 2
    assert "m.csv: no 'path' column in the header ['file']" in capsys.readouterr().err


def test_a_part_file_is_reused_only_for_the_same_shard_and_model(setup, tmp_path):
    tree, checkpoint = setup
    predictor = load_predictor(checkpoint, device="cpu")
    files = input_files([tree])
    launch = Launch("torchrun", 1, 2, 1, 2)
    mine = [files[i] for i in shard(len(files), 1, 2)]
    identity = shard_identity(checkpoint, predictor, mine, launch)
    part = part_path(tmp_path / "p.csv", 1, 2)
    _write_part(part, {"identity": identity, "seconds": 1.5, "outcomes": ["why"] * len(mine)})
    assert [p.name for p in part.parent.iterdir()] == [part.name]  # no temporary file left behind
    assert _read_part(part, identity)["outcomes"] == ["why"] * len(mine)
    other_shard = shard_identity(checkpoint, predictor, mine[1:], launch)
    other_settings = shard_identity(
        checkpoint, load_predictor(checkpoint, device="cpu", tta=True), mine, launch
    )
    assert _read_part(part, other_shard) is None and _read_part(part, other_settings) is None
    part.write_text('{"identity": ')  # cut short by a kill
    assert _read_part(part, identity) is None


@pytest.mark.slow
def test_torchrun_two_ranks_score_every_image_once_in_input_order(setup, tmp_path):
    tree, checkpoint = setup
    want = single_process(checkpoint, tmp_path / "one.csv", str(tree))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "-m", "pneumocxr", "predict", "--checkpoint", str(checkpoint),
        str(tree), "--out", str(tmp_path / "two.csv"), "--device", "cpu",
    ]  # fmt: skip
    done = subprocess.run(
        command, env=clean_env(), cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_predictions(rows(tmp_path / "two.csv"), want)
    summary = json.loads((tmp_path / "two.json").read_text())
    job = summary["distributed"]
    assert (job["launcher"], job["world_size"], job["backend"]) == ("torchrun", 2, "gloo")
    assert [r["images"] for r in job["ranks"]] == [len(shard(len(want), r, 2)) for r in range(2)]
    assert summary["n_images"] == len(want) and summary["failures"] == []
    # two processes share the pipe, so their lines may interleave mid-line: count messages, not lines
    out = done.stdout
    assert out.count("rank 1/2: 6 images, 0 failed") == 1 and "rank 0/2" not in out
    assert out.count(f"{len(want)} predicted, 0 failed by 2 ranks") == 1
    assert out.count("\n") == 2  # nothing else printed
    assert not part_path(tmp_path / "two.csv", 0, 2).parent.exists()  # parts removed after the merge


@pytest.mark.slow
def test_srun_tasks_merge_failures_from_every_rank_and_reuse_a_finished_shard(setup, tmp_path):
    """srun starts the tasks itself (SLURM_PROCID/SLURM_NTASKS, no torchrun): the same merge.
    Rank 0's shard was finished by an earlier, killed run; rank 1's shard has a broken file."""
    tree, checkpoint = setup
    good = sorted((tree / "test").rglob("*.jpeg"))[:6]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    manifest = tmp_path / "m.csv"
    files = [good[0], broken, *good[1:]]  # index 1: rank 1's shard
    manifest.write_text("path\n" + "".join(f"{f}\n" for f in files))
    out = tmp_path / "out" / "p.csv"
    predictor = load_predictor(checkpoint, device="cpu")
    mine = [files[i] for i in shard(len(files), 0, 2)]
    earlier = score_files(mine, predictor)
    earlier[0]["prediction"] = "FROM_THE_PART_FILE"
    identity = shard_identity(checkpoint, predictor, mine, Launch("slurm", 0, 2, 0, 2))
    _write_part(part_path(out, 0, 2), {"identity": identity, "seconds": 9.0, "outcomes": earlier})

    slurm = {
        "SLURM_NTASKS": "2",
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_TASKS_PER_NODE": "2",
        "SLURM_JOB_NAME": "predict",
        "SLURM_NODELIST": "localhost",
        "MASTER_PORT": str(free_port()),
    }
    argv = [sys.executable, "-m", "pneumocxr", "predict", "--checkpoint", str(checkpoint), "--manifest",
            str(manifest), "--out", str(out), "--device", "cpu"]  # fmt: skip
    tasks = [
        subprocess.Popen(
            argv,
            env=clean_env(**slurm, SLURM_PROCID=str(r), SLURM_LOCALID=str(r)),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    try:
        results = [task.communicate(timeout=TIMEOUT) for task in tasks]
    finally:
        for task in tasks:
            task.kill()
    assert [task.returncode for task in tasks] == [2, 0], results  # rank 0 speaks for the job
    assert results[1][0].startswith("rank 1/2: 3 images, 1 failed, ") and results[1][0].count("\n") == 1
    assert results[1][1] == ""  # nothing on stderr: rank 0 names the failure
    merged = rows(out)
    assert [r["path"] for r in merged] == [str(f) for f in files if f != broken]
    assert merged[0]["prediction"] == "FROM_THE_PART_FILE"  # reused, not scored again
    summary = json.loads(out.with_suffix(".json").read_text())
    assert [f["path"] for f in summary["failures"]] == [str(broken)]
    assert [(r["rank"], r["resumed"], r["images"]) for r in summary["distributed"]["ranks"]] == [
        (0, True, 4),
        (1, False, 3),
    ]
    assert summary["distributed"]["launcher"] == "slurm"
    assert "broken.png" in results[0][1]


def test_a_rank_whose_peers_never_come_is_told_how_to_launch(monkeypatch):
    """An sbatch script that runs predict without srun: SLURM says 2 tasks, one process exists."""
    from datetime import timedelta

    import pneumocxr.workflows.predict_shards as shards

    monkeypatch.setattr(shards, "START_TIMEOUT", timedelta(seconds=1))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    with pytest.raises(
        pneumocxr.errors.ConfigError, match=r"could not join the others .* start the command with srun"
    ):
        shards._init_group(Launch("slurm", 0, 2, 0, 2))
