"""Callbacks and LR schedule driven by scripted metric sequences (no real training)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from pneumocxr.training.callbacks import early_stopping, read_history, standard_callbacks
from pneumocxr.training.module import ClassifierModule, plateau_scheduler


class ScriptedModule(ClassifierModule):
    """The real optimiser/scheduler configuration, but validation reports a scripted series."""

    def __init__(self, val_loss: list[float], val_auc: list[float] | None = None, **kwargs):
        super().__init__(nn.Linear(1, 1), **kwargs)
        self.series_loss = val_loss
        self.series_auc = val_auc or [0.5] * len(val_loss)

    def training_step(self, batch, batch_idx):
        return self.model(batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        epoch = self.current_epoch
        self.log("val_loss", self.series_loss[epoch])
        self.log("val_auc", self.series_auc[epoch])
        self.log("train_loss", 1.0 / (epoch + 1))

    def train_dataloader(self):
        return DataLoader(torch.ones(2, 1), batch_size=2)

    def val_dataloader(self):
        return DataLoader(torch.ones(2, 1), batch_size=2)


def _fit(module: L.LightningModule, callbacks: list, max_epochs: int, logger=False) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=logger,
        enable_checkpointing=any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(module)
    return trainer


@pytest.mark.parametrize("patience", [3, 10])
def test_early_stopping_stops_after_patience_epochs_without_improvement(patience):
    # best at epoch index 1; every later epoch is worse
    series = [1.0, 0.5] + [0.6] * (patience + 5)
    stopper = early_stopping(patience)
    trainer = _fit(ScriptedModule(series), [stopper], max_epochs=len(series))
    assert stopper.stopped_epoch == 1 + patience
    assert trainer.current_epoch == 1 + patience + 1  # epochs completed


def test_an_improvement_resets_the_early_stopping_count():
    series = [1.0, 0.9, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.85]
    stopper = early_stopping(3)
    _fit(ScriptedModule(series), [stopper], max_epochs=len(series))
    assert stopper.stopped_epoch == 7  # 3 epochs after the improvement at index 4


def test_plateau_halves_the_lr_after_five_flat_epochs():
    weight = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([weight], lr=1e-4)
    scheduler = plateau_scheduler(optimizer, factor=0.5, patience=5)
    lrs = []
    for value in [1.0] + [1.0] * 5 + [1.0] * 5:  # a best epoch, then flat
        scheduler.step(value)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[:5] == [1e-4] * 5  # best + 4 flat epochs: unchanged
    assert lrs[5] == pytest.approx(5e-5)  # the 5th flat epoch halves it (Keras' patience=5)
    assert lrs[10] == pytest.approx(2.5e-5)  # and 5 more flat epochs halve it again


def test_training_loop_steps_the_plateau_on_val_loss_and_history_records_it(tmp_path):
    series = [1.0, 0.8] + [0.9] * 6
    aucs = [0.6, 0.7, 0.9, 0.8, 0.85, 0.7, 0.7, 0.7]
    module = ScriptedModule(series, aucs, lr=1e-3, plateau_factor=0.5, plateau_patience=5)
    history = tmp_path / "history.csv"
    best, callbacks = standard_callbacks(tmp_path / "ckpt", history, patience=10, progress=False)
    trainer = _fit(module, callbacks, max_epochs=len(series), logger=CSVLogger(tmp_path / "logs"))
    assert trainer.current_epoch == len(series)  # patience 10 never triggered
    rows = read_history(history)
    assert [r["epoch"] for r in rows] == list(range(1, len(series) + 1))
    assert [r["val_loss"] for r in rows] == pytest.approx(series)
    # best val_loss at epoch 2; epochs 3-7 are five flat ones, so epoch 8 trains at half the LR
    assert [r["lr"] for r in rows] == pytest.approx([1e-3] * 7 + [5e-4])
    # the best checkpoint is the highest validation AUC (epoch 3), not the lowest val_loss (epoch 2)
    assert float(best.best_model_score) == pytest.approx(0.9)
    assert torch.load(best.best_model_path, weights_only=True)["epoch"] == 2
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()
    assert (tmp_path / "training_curves.png").stat().st_size > 1000


def test_history_rows_of_repeated_epochs_are_replaced_not_duplicated(tmp_path):
    history = tmp_path / "history.csv"
    for _ in range(2):  # the same two epochs logged twice, as after a resume
        _, callbacks = standard_callbacks(tmp_path / "ckpt", history, patience=5, progress=False)
        _fit(ScriptedModule([1.0, 0.9]), callbacks[-1:], max_epochs=2)
    assert [r["epoch"] for r in read_history(history)] == [1, 2]
