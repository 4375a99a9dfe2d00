"""``predict_launched``: ``predict`` shared between the ranks of a torchrun or ``srun`` job.

Started plainly (or with one process) it is ``predict_images``, unchanged: no process group. With
W > 1 ranks (``pneumocxr.launch``):

- **Inputs**: rank 0 lists the files (folders sorted, then the manifest's rows) and sends the list
  to every rank, so all ranks shard the same list even if a folder changes meanwhile, and a large
  network folder is listed once. A bad input is reported by every rank, before any work.
- **Sharding**: round-robin, rank r scores inputs r, r + W, r + 2W, … — disjoint and complete
  (``shard``). Not contiguous blocks: a sorted listing groups classes and scanners, so blocks
  would hand one rank all the large DICOMs.
- **Device**: ``cuda:<local rank>`` where CUDA is present, else the CPU with the node's cores
  divided between its ranks (``launch.rank_device``, ``launch.cpu_threads_per_rank``).
- **Part files**: each rank writes ``<out>.parts/rank-R-of-W.json`` atomically (a temporary file,
  then ``os.replace``) with the shard's identity (its paths' sha256, the checkpoint's sha256, the
  inference settings). A rerun after a killed job skips every rank whose part matches.
- **Merge**: the ranks meet at a gloo barrier (CPU-only, no NCCL needed), rank 0 gathers every
  shard's outcomes, puts them back in input order and writes ONE CSV and ONE JSON — with
  ``distributed``: launcher, world size and each rank's host, device, images, failures and
  seconds. Then every rank removes its part file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pneumocxr.errors import ConfigError, PneumoCXRError
from pneumocxr.inference.predictor import PredictorBase, file_sha256
from pneumocxr.launch import Launch, cpu_threads_per_rank, detect_launch, rank_device, slurm_main_address
from pneumocxr.workflows.predict_files import (
    Outcome,
    PredictRun,
    input_files,
    predict_images,
    score_files,
    write_outputs,
)
from pneumocxr.workflows.provenance import inference_settings

logger = logging.getLogger(__name__)

__all__ = ["LaunchedRun", "RankReport", "part_path", "predict_launched", "shard", "shard_identity"]

# Joining the group and rank 0's listing of the inputs: torch's own default for gloo.
START_TIMEOUT = timedelta(minutes=30)
# The barrier before the merge waits for the slowest shard (a resumed rank waits for all the others).
MERGE_TIMEOUT = timedelta(hours=48)
SHARDING = "round-robin: rank r of W scores inputs r, r+W, r+2W, ..."


@dataclass(frozen=True)
class RankReport:
    """What one rank did (one entry per rank in the JSON's ``distributed.ranks``)."""

    rank: int
    host: str
    device: str
    threads: int  # intra-op CPU threads
    images: int  # files in its shard
    failures: int  # of those, files that could not be decoded
    seconds: float  # scoring time (when resumed: the time recorded in its part file)
    resumed: bool  # its part file from an earlier run was reused


@dataclass(frozen=True)
class LaunchedRun:
    """``merged``: the written CSV/JSON (rank 0, or a plain run); None on the other ranks."""

    launch: Launch
    report: RankReport
    merged: PredictRun | None


def shard(n: int, rank: int, world_size: int) -> range:
    """Indices of the ``n`` inputs that ``rank`` scores: disjoint between ranks, together complete."""
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is outside a world of {world_size} process(es)")
    return range(rank, n, world_size)


def predict_launched(
    checkpoint: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    *,
    load: Callable[[str], PredictorBase],
    device: str = "auto",
    manifest: str | os.PathLike | None = None,
    launch: Launch | None = None,
) -> LaunchedRun:
    """Predict ``inputs`` and ``manifest`` into ``out_csv`` (``predict_files``) on every rank of
    the job that started this process (module docstring). ``load(device)`` loads the predictor."""
    launch = detect_launch() if launch is None else launch
    if not launch.distributed:
        predictor = load(device)
        started = time.perf_counter()
        made = predict_images(checkpoint, inputs, out_csv, predictor=predictor, manifest=manifest)
        report = RankReport(
            rank=0,
            host=socket.gethostname(),
            device=str(getattr(predictor, "device", device)),
            threads=_threads(),
            images=len(made.rows) + len(made.failures),
            failures=len(made.failures),
            seconds=round(time.perf_counter() - started, 3),
            resumed=False,
        )
        return LaunchedRun(launch, report, made)
    import torch.distributed as dist

    owned = not dist.is_initialized()  # inside a job that already has a group (Lightning): use it
    if owned:
        _init_group(launch)
    try:
        files = _files_from_rank0(inputs, manifest, launch)
        return _predict_shard(checkpoint, files, Path(out_csv), load, device, launch)
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def _init_group(launch: Launch) -> None:
    import torch.distributed as dist

    if launch.launcher == "slurm":  # srun starts the tasks but sets no rendezvous address
        host, port = slurm_main_address()
        init_method = f"tcp://{host}:{port}"
    else:  # torchrun sets MASTER_ADDR/MASTER_PORT (or its agent's store); by hand they must be set
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise ConfigError(
                f"RANK/WORLD_SIZE are set but {' and '.join(missing)} not; start the command with "
                "torchrun --nproc_per_node N (or srun), which sets them"
            )
        init_method = "env://"
    logger.info("rank %d of %d joining the gloo group (%s)", launch.rank, launch.world_size, init_method)
    try:
        dist.init_process_group(
            "gloo",
            init_method=init_method,
            rank=launch.rank,
            world_size=launch.world_size,
            timeout=START_TIMEOUT,
        )
    except RuntimeError as exc:  # DistStoreError / DistNetworkError: the ranks never all met
        raise ConfigError(
            f"rank {launch.rank} of {launch.world_size} ({launch.launcher}) could not join the others at "
            f"{init_method} ({str(exc).splitlines()[0]}); under SLURM start the command with srun (a batch "
            "script is one process, however many tasks it asked for), under torchrun check "
            "--master_addr/--master_port"
        ) from None


def _files_from_rank0(
    inputs: Sequence[str | os.PathLike], manifest: str | os.PathLike | None, launch: Launch
) -> list[Path]:
    """Rank 0's list of input files on every rank; rank 0's input error raised on every rank."""
    import torch.distributed as dist

    payload: list[Any] = [None]
    error: PneumoCXRError | None = None
    if launch.rank == 0:
        try:
            payload = [[str(p) for p in input_files(inputs, manifest)]]
        except PneumoCXRError as exc:
            error, payload = exc, [f"{exc}"]  # the message, not the exception: it need not unpickle
    dist.broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    if isinstance(payload[0], str):
        raise PneumoCXRError(payload[0])
    return [Path(p) for p in payload[0]]


def _predict_shard(
    checkpoint: str | os.PathLike,
    files: list[Path],
    out_csv: Path,
    load: Callable[[str], PredictorBase],
    device: str,
    launch: Launch,
) -> LaunchedRun:
    """Score this rank's shard (or reuse its part file), then meet the others for the merge."""
    import torch

    device = rank_device(device, launch)
    if device == "cpu":
        torch.set_num_threads(cpu_threads_per_rank(launch))
    predictor = load(device)
    mine = [files[i] for i in shard(len(files), launch.rank, launch.world_size)]
    part = part_path(out_csv, launch.rank, launch.world_size)
    identity = shard_identity(checkpoint, predictor, mine, launch)
    saved = _read_part(part, identity)
    if saved is None:
        started = time.perf_counter()
        outcomes = score_files(mine, predictor)
        seconds = time.perf_counter() - started
        _write_part(part, {"identity": identity, "seconds": seconds, "outcomes": outcomes})
    else:
        outcomes, seconds = saved["outcomes"], float(saved["seconds"])
        logger.info("rank %d: reusing %s (%d images)", launch.rank, part, len(outcomes))
    report = RankReport(
        rank=launch.rank,
        host=socket.gethostname(),
        device=str(getattr(predictor, "device", device)),
        threads=_threads(),
        images=len(mine),
        failures=sum(isinstance(o, str) for o in outcomes),
        seconds=round(seconds, 3),
        resumed=saved is not None,
    )
    merged = _gather_and_merge(checkpoint, predictor, out_csv, files, report, outcomes, launch)
    _remove_part(part, launch)
    return LaunchedRun(launch, report, merged)


def _gather_and_merge(
    checkpoint: str | os.PathLike,
    predictor: PredictorBase,
    out_csv: Path,
    files: list[Path],
    report: RankReport,
    outcomes: list[Outcome],
    launch: Launch,
) -> PredictRun | None:
    """Wait for every rank, gather their outcomes on rank 0 and write the merged files there.
    Every rank hears whether that worked, so none waits for a rank 0 that has failed."""
    import torch.distributed as dist

    dist.monitored_barrier(timeout=MERGE_TIMEOUT, wait_all_ranks=True)  # names a rank that never came
    gathered: list[Any] | None = [None] * launch.world_size if launch.rank == 0 else None
    dist.gather_object((report, outcomes), gathered, dst=0)
    merged, error = None, None
    if gathered is not None:
        try:
            merged = _merge(checkpoint, predictor, out_csv, files, gathered, launch)
        except Exception as exc:  # raised below, once the other ranks know
            error = exc
    status = [error is None]
    dist.broadcast_object_list(status, src=0)
    if error is not None:
        raise error
    if not status[0]:
        parts = part_path(out_csv, launch.rank, launch.world_size).parent
        raise PneumoCXRError(
            f"rank 0 could not write {out_csv}; the part files in {parts} are kept for a rerun"
        )
    return merged


def _merge(
    checkpoint: str | os.PathLike,
    predictor: PredictorBase,
    out_csv: Path,
    files: list[Path],
    gathered: list[tuple[RankReport, list[Outcome]]],
    launch: Launch,
) -> PredictRun:
    """Every rank's outcomes back in input order, written once (rank 0)."""
    outcomes: list[Outcome | None] = [None] * len(files)
    for report, shard_outcomes in gathered:
        indices = shard(len(files), report.rank, launch.world_size)
        if len(indices) != len(shard_outcomes):
            raise PneumoCXRError(
                f"rank {report.rank} returned {len(shard_outcomes)} results for {len(indices)} inputs"
            )
        for index, outcome in zip(indices, shard_outcomes, strict=True):
            outcomes[index] = outcome
    missing = [str(files[i]) for i, o in enumerate(outcomes) if o is None]
    if missing:
        raise PneumoCXRError(f"{len(missing)} input(s) were scored by no rank, first {missing[0]}")
    extra = {
        "distributed": {
            "launcher": launch.launcher,
            "world_size": launch.world_size,
            "backend": "gloo",
            "sharding": SHARDING,
            "ranks": [asdict(report) for report, _ in sorted(gathered, key=lambda g: g[0].rank)],
        }
    }
    return write_outputs(checkpoint, predictor, out_csv, files, outcomes, extra)  # type: ignore[arg-type]


def part_path(out_csv: str | os.PathLike, rank: int, world_size: int) -> Path:
    """Where ``rank`` keeps its shard's results until the merge: beside the CSV, one folder per CSV."""
    out_csv = Path(out_csv)
    return out_csv.with_name(out_csv.name + ".parts") / f"rank-{rank:05d}-of-{world_size:05d}.json"


def shard_identity(
    checkpoint: str | os.PathLike, predictor: PredictorBase, mine: list[Path], launch: Launch
) -> dict[str, Any]:
    """What a part file must match to be reused: the same shard of the same files, same model and settings."""
    paths = hashlib.sha256("\n".join(str(p) for p in mine).encode("utf-8")).hexdigest()
    return {
        "rank": launch.rank,
        "world_size": launch.world_size,
        "n_images": len(mine),
        "paths_sha256": paths,
        "checkpoint_sha256": file_sha256(checkpoint),
        "inference": inference_settings(predictor),
    }


def _read_part(part: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    try:
        saved = json.loads(part.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent, or cut short: score the shard again
    if saved.get("identity") != json.loads(json.dumps(identity)):
        logger.info("%s is from another run (inputs, checkpoint or settings differ); scoring again", part)
        return None
    return saved


def _write_part(part: Path, content: dict[str, Any]) -> None:
    """Atomically: a reader (or a rerun after a kill) sees the whole file or none."""
    part.parent.mkdir(parents=True, exist_ok=True)
    temporary = part.with_name(f".{part.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(content), encoding="utf-8")
    os.replace(temporary, part)


def _remove_part(part: Path, launch: Launch) -> None:
    """After the merged files exist: each rank removes its own part (the folder may not be shared)."""
    import torch.distributed as dist

    part.unlink(missing_ok=True)
    dist.barrier()  # every rank has removed its part before rank 0 removes the folder
    if launch.rank == 0:
        with contextlib.suppress(OSError):  # not empty (a part of another world size) or already gone
            part.parent.rmdir()


def _threads() -> int:
    import torch

    return torch.get_num_threads()
