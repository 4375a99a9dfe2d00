"""The Optuna study behind ``pneumocxr tune``: storage, creation or joining, the grid queue, and
recovery of trials whose process died. See tune.py's docstring for why it works this way."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from pneumocxr.config import RunConfig, to_dict
from pneumocxr.errors import ConfigError
from pneumocxr.training.tune_space import SearchSpace

logger = logging.getLogger(__name__)

OBJECTIVE = "val_auc"  # TrainResult.metrics key: validation AUC of the selected model
MAX_RETRY = 3  # re-runs of a trial whose process died or raised
READY_WAIT_S = 60.0  # how long a joining worker waits for the creator to finish queueing the grid
# Settings that may differ between the workers of one study (paths and hardware of each machine).
MACHINE_LOCAL = ("data.root", "data.cache_dir", "train.accelerator", "train.devices", "train.num_workers")
ATTR_SEARCH, ATTR_READY, ATTR_CELL, ATTR_WORKER = "search", "grid_queued", "grid_cell", "worker"


def storage_url(url: str) -> str:
    """``url`` with PostgreSQL's driver made explicit: psycopg 3, whatever SQLAlchemy's default is
    (psycopg2 before SQLAlchemy 2.1); ``postgres://`` (Heroku style) accepted too."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def open_storage(url: str, heartbeat_interval: int) -> RDBStorage:
    """The RDB storage with heartbeats (a dead worker's trial is retried) and a clear error when it fails."""
    import sqlalchemy.exc

    url = storage_url(url)
    engine: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if not url.startswith("sqlite"):
        engine["pool_pre_ping"] = True  # survive a server restart between long trials
    for attempt in range(3):
        try:
            return RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=heartbeat_interval,
                grace_period=3 * heartbeat_interval,
                heartbeat_stale_trial_callback=RetryOnce(),
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Workers starting together race to create Optuna's tables; the loser finds them made.
            if attempt == 2:
                raise
            time.sleep(1 + attempt)
        except ImportError as exc:
            raise ConfigError(
                f"storage {hide_password(url)}: its database driver is missing ({exc}); for "
                "postgresql:// install psycopg[binary]"
            ) from None
        except Exception as exc:  # sqlalchemy's errors: bad URL, server down, wrong password
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"cannot open the study storage {hide_password(url)}: {reason}; check the URL "
                "(sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB), the server and the credentials"
            ) from None
    raise AssertionError("unreachable")


def open_study(rdb: RDBStorage, name: str, config: RunConfig, space: SearchSpace) -> optuna.Study:
    """Create the study (and queue the grid), or join it after checking it is the same search."""
    sampler = _sampler(space)
    pruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=space.pruner_startup_trials, n_warmup_steps=space.pruner_warmup_epochs
        )
        if space.uses_pruning
        else optuna.pruners.NopPruner()
    )
    fingerprint = _fingerprint(config, space)
    try:
        study = optuna.create_study(
            study_name=name, storage=rdb, sampler=sampler, pruner=pruner, direction="maximize"
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=rdb, sampler=sampler, pruner=pruner)
        # A study created a moment ago by another worker may not carry its settings yet.
        _wait_for_attr(study, ATTR_SEARCH, READY_WAIT_S / 6)
        _check_same_search(study, fingerprint, name)
        if space.sampler == "grid" and not _wait_for_attr(study, ATTR_READY, READY_WAIT_S):
            logger.warning("the grid of study %r was never fully queued; queueing the rest", name)
            _queue_grid(study, space, missing_only=True)
        return study
    study.set_user_attr(ATTR_SEARCH, fingerprint)
    study.set_user_attr("objective", f"{OBJECTIVE}: patient-level validation split carved from train")
    if space.sampler == "grid":
        _queue_grid(study, space)
    logger.info("created study %r in %s", name, hide_password(rdb.url))
    return study


def _sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    if space.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=space.seed)
    return optuna.samplers.TPESampler(seed=space.seed)


def _queue_grid(study: optuna.Study, space: SearchSpace, missing_only: bool = False) -> None:
    """One WAITING trial per grid cell, carrying GridSampler's grid_id (see the module docstring)."""
    grid, size = space.grid(), space.target_trials(0)
    have = (
        {t.system_attrs.get("grid_id") for t in study.get_trials(deepcopy=False)} if missing_only else set()
    )
    for grid_id in range(size):
        if grid_id not in have:
            study.add_trial(
                optuna.trial.create_trial(
                    state=TrialState.WAITING,
                    system_attrs={"grid_id": grid_id, "search_space": grid},
                    user_attrs={ATTR_CELL: grid_id},
                )
            )
    study.set_user_attr(ATTR_READY, size)


def _wait_for_attr(study: optuna.Study, attr: str, seconds: float) -> bool:
    """Wait until the study's creator has set ``attr`` (it sets the settings, then queues the grid,
    well under a second); False when it never came (the creator died half-way)."""
    deadline = time.monotonic() + seconds
    while attr not in study.user_attrs:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _fingerprint(config: RunConfig, space: SearchSpace) -> dict[str, Any]:
    """What must be equal for two processes to work on one study (machine-local paths excluded)."""
    base = {k: v for k, v in _flat(to_dict(config)).items() if k not in MACHINE_LOCAL}
    space_dict = {k: getattr(space, k) for k in ("sampler", "params", "seed", "pruner")}
    space_dict |= {"pruner_startup_trials": space.pruner_startup_trials}
    space_dict |= {"pruner_warmup_epochs": space.pruner_warmup_epochs}
    return json.loads(json.dumps({"base": base, "space": space_dict}))


def _check_same_search(study: optuna.Study, fingerprint: dict[str, Any], name: str) -> None:
    saved = study.user_attrs.get(ATTR_SEARCH)
    if saved is None:
        raise ConfigError(
            f"study {name!r} exists but was not made by `pneumocxr tune`; pass another --study-name"
        )
    if saved == fingerprint:
        return
    differ = [
        f"{part}.{k}"
        for part in ("base", "space")
        for k in sorted(set(saved[part]) | set(fingerprint[part]))
        if saved[part].get(k) != fingerprint[part].get(k)
    ]
    raise ConfigError(
        f"study {name!r} was started with different settings ({', '.join(differ)}); re-run it with the "
        "same --config/--space/--set, or start a new search with another --study-name or --out"
    )


def has_work(study: optuna.Study, space: SearchSpace, target: int) -> bool:
    if count(study, (TrialState.COMPLETE, TrialState.PRUNED)) >= target:
        return False
    return space.sampler != "grid" or count(study, (TrialState.WAITING,)) > 0


def reap_dead_local_trials(rdb: RDBStorage, study: optuna.Study) -> None:
    """Fail and re-enqueue RUNNING trials whose process is gone.

    A process on this machine that no longer exists is dead at once (without this, a re-run right
    after a kill would wait for the heartbeat grace period). A trial that never recorded its worker
    (killed between being claimed and starting) is dead once it is older than the grace period.
    Trials of other machines are left to the heartbeat.
    """
    me, now = machine_id(), datetime.datetime.now()
    grace = datetime.timedelta(seconds=rdb.grace_period or 2 * (rdb.heartbeat_interval or 60))
    retry = RetryOnce()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(ATTR_WORKER)
        if worker:
            dead = worker.get("machine") == me and not _pid_alive(int(worker.get("pid", -1)))
        else:
            dead = trial.datetime_start is not None and now - trial.datetime_start > grace
        if not dead:
            continue
        trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id(rdb, study), trial.number)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            if rdb.set_trial_state_values(trial_id, state=TrialState.FAIL):
                logger.warning(
                    "trial %d was left running by a dead process %s; retrying it", trial.number, worker
                )
                retry(study, rdb.get_trial(trial_id))


class RetryOnce:
    """Optuna's retry callback (same parameters, queued as WAITING, at most MAX_RETRY times), but never
    twice for one trial: a trial that queued its own retry and was then killed is found again later."""

    def __init__(self) -> None:
        self._retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        for other in study.get_trials(deepcopy=False):
            if trial.number in other.system_attrs.get("retry_history", ()):
                return
        self._retry(study, trial)


def study_id(rdb: RDBStorage, study: optuna.Study) -> int:
    return rdb.get_study_id_from_name(study.study_name)


def machine_id() -> str:
    """This machine (boot) identity: a pid is only meaningful on the machine and boot it came from."""
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return f"{socket.gethostname()}/{boot}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def count(study: optuna.Study, states: Sequence[TrialState]) -> int:
    return len(study.get_trials(deepcopy=False, states=tuple(states)))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def _flat(data: dict[str, Any]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, section in data.items() for k, v in section.items()}


def hide_password(url: str) -> str:
    with contextlib.suppress(Exception):
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    return url


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Heartbeats are 'experimental' in Optuna since 2.9; one warning per trial helps nobody."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
