"""`pneumocxr tune`: the grid runs each cell once, a killed search resumes, workers share a study.

Trials are tiny (custom_cnn at 32 px, one epoch, a few dozen synthetic images: about a second each).
Worker processes run with one thread each; the machine is shared.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml
from tests.conftest import make_kermany_tree

from pneumocxr.cli.main import main
from pneumocxr.config import RunConfig, from_dict, load_yaml
from pneumocxr.errors import ConfigError
from pneumocxr.training.tune import OptunaPruning, tune
from pneumocxr.training.tune_space import compose_base, load_search_space
from pneumocxr.training.tune_study import storage_url

GRID = {"train.lr": [1.0e-3, 1.0e-2], "model.dropout": [0.3, 0.5]}
RECIPE = {
    "model": {"name": "custom_cnn", "image_size": 32},
    "train": {"max_epochs": 1, "batch_size": 16, "precision": "32", "augment": "none"},
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("tune_data")
    return make_kermany_tree(
        base / "cx", splits=("train",), patients_per_class=8, images_per_patient=2, size=(36, 36)
    )


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def recipe_file(tmp_path: Path, data_root: Path) -> Path:
    recipe = {**RECIPE, "data": {"root": str(data_root), "val_fraction": 0.3}}
    return write_yaml(tmp_path / "recipe.yaml", recipe)


def cells(params: dict[str, list]) -> set[tuple]:
    names = sorted(params)
    return set(itertools.product(*(params[n] for n in names)))


def trial_cells(trials: list[optuna.trial.FrozenTrial]) -> list[tuple]:
    return [tuple(t.params[n] for n in sorted(t.params)) for t in trials]


def complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def worker_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def tune_command(recipe: Path, space: Path, out: Path, *extra: str) -> list[str]:
    args = ["tune", "--config", str(recipe), "--space", str(space), "--out", str(out), *extra]
    return [sys.executable, "-m", "pneumocxr", *args]


# ----------------------------------------------------------------------------- the search YAML


def test_search_space_types_values_and_rejects_typos(tmp_path):
    space = load_search_space(
        write_yaml(tmp_path / "s.yaml", {"sampler": "grid", "params": {"train.lr": ["1e-3"]}})
    )
    assert space.params == {"train.lr": [1e-3]}  # YAML's string "1e-3" typed as the config's float
    assert space.target_trials(None) == 1 and not space.uses_pruning

    bad_key = write_yaml(tmp_path / "k.yaml", {"sampler": "grid", "params": {"train.lrr": [1e-3]}})
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        load_search_space(bad_key)
    bad_top = write_yaml(tmp_path / "t.yaml", {"samplr": "grid", "params": {"train.lr": [1e-3]}})
    with pytest.raises(ConfigError, match="did you mean 'sampler'"):
        load_search_space(bad_top)
    range_in_grid = write_yaml(
        tmp_path / "r.yaml", {"sampler": "grid", "params": {"train.lr": {"low": 1, "high": 2}}}
    )
    with pytest.raises(ConfigError, match="a list of values"):
        load_search_space(range_in_grid)
    wrong_type = write_yaml(tmp_path / "w.yaml", {"sampler": "tpe", "params": {"train.batch_size": ["big"]}})
    with pytest.raises(ConfigError, match="batch_size"):
        load_search_space(wrong_type)


@pytest.mark.parametrize("name", ["search_grid", "search_tpe"])
def test_shipped_search_files_load(name):
    from pneumocxr.config import resolve_recipe

    space = load_search_space(resolve_recipe(name))
    if space.sampler == "grid":  # the reference grid of the seed project
        assert space.grid() == {
            "model.dropout": [0.3, 0.5, 0.7],
            "train.batch_size": [16, 32, 64],
            "train.lr": [1e-3, 1e-4, 1e-5],
        }
        assert space.target_trials(None) == 27
    else:
        assert space.uses_pruning and space.target_trials(5) == 5


def test_base_config_precedence_and_searched_keys_cannot_be_set():
    space = load_search_space_from({"sampler": "grid", "params": GRID, "fixed": {"train.max_epochs": 3}})
    base = compose_base({"train": {"max_epochs": 9, "batch_size": 4}}, space, ["train.batch_size=8"])
    assert (base.train.max_epochs, base.train.batch_size) == (3, 8)  # recipe < fixed < --set
    assert compose_base({}, space, ["train.max_epochs=5"]).train.max_epochs == 5
    with pytest.raises(ConfigError, match=r"train\.lr is searched"):
        compose_base({}, space, ["train.lr=0.1"])


def load_search_space_from(data: dict):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return load_search_space(write_yaml(Path(folder) / "s.yaml", data))


def test_pruning_callback_reports_each_epoch_and_raises_when_told():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.8))
    trial = study.ask()
    callback = OptunaPruning(trial)
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={"val_auc": 0.9})
    callback.on_validation_end(trainer, None)  # above the threshold: goes on
    trainer.callback_metrics["val_auc"] = 0.6
    with pytest.raises(optuna.TrialPruned, match="epoch 2"):
        callback.on_validation_end(trainer, None)
    assert study.get_trials()[0].intermediate_values == {1: 0.9, 2: 0.6}


def test_unusable_storage_is_a_config_error(tmp_path, data_root):
    space = load_search_space_from({"sampler": "grid", "params": GRID})
    config = compose_base({**RECIPE, "data": {"root": str(data_root)}}, space)
    with pytest.raises(ConfigError, match="cannot open the study storage"):
        tune(config, space, tmp_path / "out", storage="nosuchdialect://somewhere/db")


# ----------------------------------------------------------------------------- one worker, SQLite


@pytest.mark.slow
def test_grid_runs_every_cell_once_and_writes_the_report(tmp_path, data_root):
    recipe = recipe_file(tmp_path, data_root)
    space_file = write_yaml(tmp_path / "grid.yaml", {"sampler": "grid", "params": GRID})
    out = tmp_path / "search"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["tune", "--config", str(recipe), "--space", str(space_file), "--out", str(out)]) == 0
    assert "4 complete" in stdout.getvalue() and "best trial" in stdout.getvalue()

    study = optuna.load_study(study_name="pneumocxr-search", storage=f"sqlite:///{out / 'study.db'}")
    done = complete(study)
    assert sorted(trial_cells(done)) == sorted(cells(GRID))  # every cell, none twice
    for trial in done:
        assert (out / "trials" / str(trial.number) / "best.pt").is_file()
        assert 0.0 <= trial.value <= 1.0 and trial.intermediate_values  # val_auc, reported per epoch

    csv_rows = (out / "trials.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + 4 and csv_rows[0].startswith("number,state,val_auc")
    assert "| number | state | val_auc" in (out / "trials.md").read_text()
    for name in ("optimization_history.png", "param_importances.png", "optimization_history.csv"):
        assert (out / name).stat().st_size > 0
    best = from_dict(RunConfig, load_yaml(out / "best_config.yaml"))  # ready for `pneumocxr train`
    assert (best.train.lr, best.model.dropout) == (
        study.best_params["train.lr"],
        study.best_params["model.dropout"],
    )
    assert best.model.name == "custom_cnn" and best.data.root == str(data_root)

    # The same command again: nothing left to run, nothing re-run, the report rewritten.
    again = tune(
        compose_base(load_yaml(recipe), load_search_space(space_file)), load_search_space(space_file), out
    )
    assert (
        again.ran_here == 0 and len(study.get_trials()) == 4 and again.best_number == study.best_trial.number
    )
    # A different search in the same study is refused, naming what differs.
    with pytest.raises(ConfigError, match=r"base\.train\.max_epochs"):
        space = load_search_space(space_file)
        tune(compose_base(load_yaml(recipe), space, ["train.max_epochs=2"]), space, out)


@pytest.mark.slow
def test_tpe_stops_at_the_trial_budget_of_the_whole_study(tmp_path, data_root):
    space = load_search_space_from(
        {
            "sampler": "tpe",
            "n_trials": 3,
            "pruner_startup_trials": 1,
            "pruner_warmup_epochs": 0,
            "params": {"train.lr": {"low": 1e-4, "high": 1e-1, "log": True}, "model.dropout": [0.3, 0.5]},
            "fixed": {"train.max_epochs": 2},
        }
    )
    config = compose_base({**RECIPE, "data": {"root": str(data_root), "val_fraction": 0.3}}, space)
    first = tune(config, space, tmp_path / "tpe", n_trials=2)
    assert first.ran_here == 2 and first.counts["COMPLETE"] + first.counts["PRUNED"] == 2
    second = tune(config, space, tmp_path / "tpe")  # the YAML's budget, 3: one more, not three more
    assert second.ran_here == 1 and second.counts["COMPLETE"] + second.counts["PRUNED"] == 3
    assert (tmp_path / "tpe" / "best_config.yaml").is_file()
    importance = json.loads((tmp_path / "tpe" / "param_importances.json").read_text())
    assert importance["complete_trials"] == second.counts["COMPLETE"]
    assert "importances" in importance or "not available" in importance["note"]  # 2-3 trials may tie
    study = optuna.load_study(
        study_name="pneumocxr-search", storage=f"sqlite:///{tmp_path / 'tpe' / 'study.db'}"
    )
    for trial in complete(study):  # val_auc reported after every epoch, for the pruner
        assert sorted(trial.intermediate_values) == list(range(1, trial.user_attrs["epochs_run"] + 1))


def test_importance_with_one_trial_is_explained_not_fatal(tmp_path, data_root):
    space = load_search_space_from({"sampler": "grid", "params": {"train.lr": [1e-3]}})
    config = compose_base({**RECIPE, "data": {"root": str(data_root), "val_fraction": 0.3}}, space)
    result = tune(config, space, tmp_path / "one")
    assert result.counts["COMPLETE"] == 1
    note = (tmp_path / "one" / "param_importances.json").read_text()
    assert "needs at least 2 complete trials" in note
    assert (tmp_path / "one" / "param_importances.png").stat().st_size > 0


# ----------------------------------------------------------------------------- kill and resume


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_search_resumes_without_redoing_finished_trials(tmp_path, data_root, how):
    params = {"train.lr": [1e-3, 3e-3, 1e-2], "model.dropout": [0.3, 0.5]}
    recipe = recipe_file(tmp_path, data_root)
    space_file = write_yaml(tmp_path / "grid.yaml", {"sampler": "grid", "params": params})
    out = tmp_path / "search"
    url = f"sqlite:///{out / 'study.db'}"
    process = subprocess.Popen(
        tune_command(recipe, space_file, out),
        env=worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        before = wait_for_a_finished_and_a_running_trial(url, process, len(cells(params)))
        process.send_signal(how)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    if how == signal.SIGINT:
        assert process.returncode == 130 and "interrupted" in stderr

    space = load_search_space(space_file)
    result = tune(compose_base(load_yaml(recipe), space), space, out)  # the same search, run again

    study = optuna.load_study(study_name="pneumocxr-search", storage=url)
    done = complete(study)
    assert sorted(trial_cells(done)) == sorted(cells(params))  # each cell exactly once
    after = {t.number: (t.value, t.datetime_complete) for t in done}
    assert all(after[n] == v for n, v in before.items())  # finished trials kept, not re-run
    assert result.ran_here == len(cells(params)) - len(before)
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert len(failed) == 1  # the trial that was running when the search was killed ...
    retried = [t for t in done if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retried) == 1 and retried[0].params == failed[0].params  # ... ran again, once


def wait_for_a_finished_and_a_running_trial(
    url: str, process: subprocess.Popen, n_trials: int
) -> dict[int, tuple]:
    """Poll the study until one trial is complete and the next is training, with at least three
    trials not yet started (so the search cannot finish before the signal lands: on an idle machine
    a tiny trial takes well under a second, and one spare trial was not always enough); its complete
    trials."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the search exited early ({process.returncode}): {process.stderr.read()[-2000:]}")
        with contextlib.suppress(Exception):  # the study or its tables may not exist yet
            study = optuna.load_study(study_name="pneumocxr-search", storage=url)
            trials = study.get_trials(deepcopy=False)
            running = [t for t in trials if t.state.name == "RUNNING" and "config" in t.user_attrs]
            done = [t for t in trials if t.state.name == "COMPLETE"]
            if done and running and len(done) + len(running) <= n_trials - 3:
                return {t.number: (t.value, t.datetime_complete) for t in done}
        time.sleep(0.1)
    pytest.fail("no trial finished within 180 s")


# ----------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get("PNEUMOCXR_TEST_POSTGRES_URL")
    if not url:
        pytest.skip(
            'PNEUMOCXR_TEST_POSTGRES_URL is not set: run `eval "$(scripts/ci_postgres.sh)"` (as root) '
            "to install and start a local PostgreSQL server for this test"
        )
    return storage_url(url)  # the driver made explicit, as `tune` does


@pytest.mark.slow
def test_two_workers_share_one_postgres_study(tmp_path, data_root, postgres_url):
    params = {"train.lr": [1e-3, 3e-3, 1e-2], "model.dropout": [0.3, 0.5], "train.batch_size": [8, 16]}
    recipe = recipe_file(tmp_path, data_root)
    space_file = write_yaml(tmp_path / "grid.yaml", {"sampler": "grid", "params": params})
    name = f"test-{uuid.uuid4().hex[:12]}"
    shared = ("--storage", postgres_url, "--study-name", name)
    workers = [
        subprocess.Popen(
            tune_command(recipe, space_file, tmp_path / f"worker{i}", *shared),
            env=worker_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]

    study = optuna.load_study(study_name=name, storage=postgres_url)
    done = complete(study)
    assert sorted(trial_cells(done)) == sorted(cells(params))  # every cell, none run twice
    assert len(study.get_trials()) == len(cells(params))  # and nothing else was started
    pids = {w.pid for w in workers}
    ran_by = {t.user_attrs["worker"]["pid"] for t in done}
    assert ran_by == pids  # both workers took part
    for i, worker in enumerate(workers):  # each trained its own trials in its own folder
        mine = {t.number for t in done if t.user_attrs["worker"]["pid"] == worker.pid}
        assert {int(p.name) for p in (tmp_path / f"worker{i}" / "trials").iterdir()} == mine
    # The worker that finished last saw the whole study: its report lists every trial.
    last = max(range(2), key=lambda i: (tmp_path / f"worker{i}" / "trials.csv").stat().st_mtime)
    assert len((tmp_path / f"worker{last}" / "trials.csv").read_text().strip().splitlines()) == 1 + len(done)
