"""train_or_reuse: a finished run is reused, an interrupted one resumed, a changed one redone."""

from __future__ import annotations

import json

import pytest
from tests.conftest import make_kermany_tree

from pneumocxr.config import RunConfig, from_dict
from pneumocxr.training import reuse
from pneumocxr.training.reuse import changed_inputs, data_fingerprint, train_inputs, train_or_reuse


def _config(root, cache, **train) -> RunConfig:
    return from_dict(
        RunConfig,
        {
            "data": {"root": str(root), "val_fraction": 0.25, "cache_dir": str(cache)},
            "model": {"name": "custom_cnn", "image_size": 32},
            "train": {"max_epochs": 2, "batch_size": 8, "precision": "32", **train},
        },
    )


@pytest.fixture
def tree(tmp_path):
    return make_kermany_tree(tmp_path / "cx", splits=("train",), patients_per_class=6, size=(32, 32))


@pytest.fixture
def spy(monkeypatch):
    """Records every call of train() that train_or_reuse makes, then lets it run."""
    calls = []
    real = reuse.train

    def recording(config, out_dir, *, resume=False, progress=True):
        calls.append(resume)
        return real(config, out_dir, resume=resume, progress=False)

    monkeypatch.setattr(reuse, "train", recording)
    return calls


def test_finished_run_with_unchanged_inputs_is_reused_not_retrained(tree, tmp_path, spy):
    config = _config(tree, tmp_path / "cache", max_epochs=1)
    first = train_or_reuse(config, tmp_path / "run", progress=False)
    assert first.status == "trained" and spy == [False]
    stamp = first.best_checkpoint.stat().st_mtime_ns
    again = train_or_reuse(config, tmp_path / "run", progress=False)
    assert again.status == "reused" and spy == [False]  # no second train() call
    assert again.best_checkpoint.stat().st_mtime_ns == stamp
    assert again.metrics == first.metrics and again.operating_point == first.operating_point
    assert again.split["val_patients_sha256"] == first.split["val_patients_sha256"]
    assert again.epochs_run == 1 and again.best_epoch == 1
    recorded = json.loads((tmp_path / "run" / "inputs.json").read_text())
    assert recorded == train_inputs(config)


def test_interrupted_run_is_resumed_from_its_last_checkpoint(tree, tmp_path, spy):
    config = _config(tree, tmp_path / "cache")
    run = tmp_path / "run"
    train_or_reuse(config, run, progress=False)
    # what a kill during the final export leaves: checkpoints and the finished phase, no best.pt
    (run / "best.pt").unlink()
    resumed = train_or_reuse(config, run, progress=False)
    assert resumed.status == "resumed" and spy == [False, True]
    assert (run / "best.pt").is_file() and resumed.epochs_run == 2


def test_changed_inputs_move_the_old_run_aside_and_train_afresh(tree, tmp_path, spy):
    run = tmp_path / "run"
    train_or_reuse(_config(tree, tmp_path / "cache", max_epochs=1), run, progress=False)
    changed = train_or_reuse(_config(tree, tmp_path / "cache", max_epochs=1, lr=3e-4), run, progress=False)
    assert changed.status == "trained" and spy == [False, False]
    assert "train.lr" in changed.note and changed.moved_aside is not None
    assert (changed.moved_aside / "best.pt").is_file()  # the earlier model is kept, not deleted
    assert changed.moved_aside.name.startswith("run.previous-")


def test_truncated_checkpoint_is_not_reused(tree, tmp_path, spy):
    config = _config(tree, tmp_path / "cache", max_epochs=1)
    run = tmp_path / "run"
    train_or_reuse(config, run, progress=False)
    best = run / "best.pt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])  # a write cut short
    again = train_or_reuse(config, run, progress=False)
    assert again.status == "resumed" and spy == [False, True]


def test_data_fingerprint_sees_added_and_replaced_images(tree):
    before = data_fingerprint(tree)
    assert before["train_images"] == 24
    image = next((tree / "train" / "NORMAL").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")  # same name, other content size
    replaced = data_fingerprint(tree)
    assert replaced["train_images"] == 24 and replaced["train_files_sha256"] != before["train_files_sha256"]
    (tree / "train" / "NORMAL" / "IM-0999-0001.jpeg").write_bytes(image.read_bytes())
    assert data_fingerprint(tree)["train_images"] == 25


def test_changed_inputs_names_keys_and_tolerates_new_settings_at_their_default(tree, tmp_path):
    now = train_inputs(_config(tree, tmp_path))
    assert changed_inputs(now, now) == []
    assert changed_inputs(None, now) == ["no inputs.json record of the inputs"]
    older = json.loads(json.dumps(now))
    del older["config"]["train"]["checkpoint_every_n_steps"]  # a setting added after that training
    assert changed_inputs(older, now) == []
    older["config"]["train"]["lr"] = 0.5
    older["data"]["train_images"] = 3
    assert changed_inputs(older, now) == ["config.train.lr", "data.train_images"]
