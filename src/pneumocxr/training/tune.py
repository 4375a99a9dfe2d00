"""Hyperparameter search with Optuna: ``tune(config, space, out_dir)``.

Every trial is an ordinary training run (``train()``) in ``out_dir/trials/<number>/`` and its score
is the validation AUC of its selected model on the patient-level split carved from train: never
the test set, which only ``evaluate`` touches.

Why the grid is queued up front: Optuna's GridSampler picks a cell when a trial starts, and two
workers starting at the same moment can pick the same one (Optuna says so). Here the process that
creates the study enqueues one WAITING trial per cell, tagged with the sampler's own ``grid_id``;
workers then claim trials through the storage's atomic WAITING→RUNNING switch, and GridSampler
turns each ``grid_id`` into its parameter values. No cell is run twice, however many workers.

Why a killed search resumes: the study lives in an RDB (SQLite file by default, PostgreSQL for
workers on several machines). Finished trials stay finished. A trial left RUNNING by a dead process
is failed and re-enqueued with the same parameters: at once when the process ran on this machine
(its pid is gone), otherwise when its heartbeat is older than the grace period. A trial that
raised (Ctrl-C, a crash) is re-enqueued the same way, at most ``MAX_RETRY`` times.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from lightning.pytorch.callbacks import Callback
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from pneumocxr.config import RunConfig, from_dict, to_dict
from pneumocxr.training.train import train
from pneumocxr.training.tune_plots import write_outputs
from pneumocxr.training.tune_space import SearchSpace, set_dotted
from pneumocxr.training.tune_study import (
    ATTR_CELL,
    ATTR_WORKER,
    OBJECTIVE,
    RetryOnce,
    best_trial,
    count,
    has_work,
    hide_password,
    machine_id,
    open_storage,
    open_study,
    quiet_experimental,
    reap_dead_local_trials,
    study_id,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneResult:
    """Where a search stands after this worker stopped, and what it wrote."""

    out_dir: Path
    study_name: str
    storage: str  # URL, password hidden
    counts: dict[str, int]  # trials per state (COMPLETE, PRUNED, FAIL, RUNNING, WAITING), whole study
    ran_here: int  # trials this process finished
    target: int  # finished trials the study aims at
    best_number: int | None
    best_value: float | None  # validation AUC of the best trial
    best_params: dict[str, Any]
    files: dict[str, Path]  # trials_csv, trials_md, best_config, history_png, importance_png, …


def tune(
    config: RunConfig,
    space: SearchSpace,
    out_dir: str | Path,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    heartbeat_interval: int = 60,
) -> TuneResult:
    """Run (or continue) the search until the study holds its target of finished trials.

    ``storage``: an SQLAlchemy URL; default ``sqlite:///<out_dir>/study.db``. Several processes
    given the same URL and study name share the work. Re-running the same call continues the study.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    name = study_name or "pneumocxr-search"
    target = space.target_trials(n_trials)
    with quiet_experimental():
        rdb = open_storage(url, heartbeat_interval)
        study = open_study(rdb, name, config, space)
        reap_dead_local_trials(rdb, study)
        before = count(study, (TrialState.COMPLETE, TrialState.PRUNED))
        objective = _Objective(config, space, out_dir, rdb)
        while has_work(study, space, target):
            remaining = target - count(study, (TrialState.COMPLETE, TrialState.PRUNED))
            study.optimize(
                objective, n_trials=remaining, catch=(_NoCellLeft,), callbacks=[_StopWhenDone(space, target)]
            )
        ran_here = objective.finished
        logger.info("%d trials finished in this process (%d before)", ran_here, before)
        files = write_outputs(study, out_dir, list(space.params), config)
    counts = {state.name: count(study, (state,)) for state in TrialState}
    best = best_trial(study)
    return TuneResult(
        out_dir=out_dir,
        study_name=name,
        storage=hide_password(url),
        counts=counts,
        ran_here=ran_here,
        target=target,
        best_number=best.number if best else None,
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        files=files,
    )


# ----------------------------------------------------------------------------- trials


class _StopWhenDone:
    """Optuna callback: stop once the study has its finished trials (or, for a grid, no queued cell)."""

    def __init__(self, space: SearchSpace, target: int):
        self.space, self.target = space, target

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not has_work(study, self.space, self.target):
            study.stop()


class _NoCellLeft(Exception):
    """A grid worker asked for a trial after another worker took the last queued cell."""


class _Objective:
    """One trial: claim it, sample its parameters, train it, return its validation AUC."""

    def __init__(self, config: RunConfig, space: SearchSpace, out_dir: Path, rdb: RDBStorage):
        self.config, self.space, self.out_dir, self.rdb = config, space, out_dir, rdb
        self.finished = 0
        self.worker = {"machine": machine_id(), "host": socket.gethostname(), "pid": os.getpid()}

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            trial.set_user_attr(ATTR_WORKER, self.worker)
            if self.space.sampler == "grid" and ATTR_CELL not in trial.user_attrs:
                trial.set_user_attr("note", "no grid cell left to claim: another worker took the last one")
                trial.study.stop()
                raise _NoCellLeft
            value = self._train(trial)
        except optuna.TrialPruned:
            self.finished += 1
            raise
        except _NoCellLeft:
            raise
        except SystemExit:
            # Lightning turns Ctrl-C into sys.exit(1); turn it back, so that Optuna records the trial
            # as failed and the CLI reports an interruption instead of exiting silently.
            self._retry_later(trial)
            raise KeyboardInterrupt from None
        except BaseException:
            self._retry_later(trial)
            raise
        self.finished += 1
        return value

    def _train(self, trial: optuna.Trial) -> float:
        params = {name: self._suggest(trial, name) for name in sorted(self.space.params)}
        config = from_dict(RunConfig, set_dotted(to_dict(self.config), params))
        trial.set_user_attr("config", to_dict(config))  # best_config.yaml comes from here
        run_dir = self.out_dir / "trials" / str(trial.number)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        if not config.data.cache_dir:  # one preprocessed-image cache for all trials, not one each
            config = replace(config, data=replace(config.data, cache_dir=str(self.out_dir / "cache")))
        callbacks = [OptunaPruning(trial)]  # reports every epoch; prunes only under a MedianPruner
        result = train(config, run_dir, progress=False, callbacks=callbacks)
        trial.set_user_attr("metrics", result.metrics)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epochs_run", result.epochs_run)
        return float(result.metrics[OBJECTIVE])

    def _suggest(self, trial: optuna.Trial, name: str) -> Any:
        spec = self.space.params[name]
        if isinstance(spec, list):
            return trial.suggest_categorical(name, spec)
        if isinstance(spec["low"], int):
            return trial.suggest_int(name, spec["low"], spec["high"], step=spec["step"] or 1, log=spec["log"])
        return trial.suggest_float(name, spec["low"], spec["high"], step=spec["step"], log=spec["log"])

    def _retry_later(self, trial: optuna.Trial) -> None:
        """Queue the same parameters again (Ctrl-C, a crash) before Optuna marks this trial FAIL."""
        with contextlib.suppress(Exception):  # never hide the original error behind this one
            trial_id = self.rdb.get_trial_id_from_study_id_trial_number(
                study_id(self.rdb, trial.study), trial.number
            )
            RetryOnce()(trial.study, self.rdb.get_trial(trial_id))


class OptunaPruning(Callback):
    """Reports validation AUC to the trial after every epoch and stops the run when the pruner says so.

    Written here because optuna-integration's callback tracks the ``pytorch_lightning`` namespace;
    epochs are counted across both training phases.
    """

    def __init__(self, trial: optuna.Trial, monitor: str = OBJECTIVE):
        self.trial, self.monitor, self.epoch = trial, monitor, 0

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        self.epoch += 1
        self.trial.report(float(value), step=self.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {self.epoch}: {self.monitor} {float(value):.4f}")
