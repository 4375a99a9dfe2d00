"""The callbacks of a training run, and the per-epoch history (CSV + curves) they write.

Checkpoint selection: the best checkpoint is the one with the highest validation AUC.
Why AUC and not val_loss: what a checkpoint cannot fix afterwards is its ranking of cases; its
calibration can be fixed (evaluation chooses the decision threshold on validation and may fit a
temperature). val_loss mixes both and is hostage to calibration drift: the custom CNN puts
Dropout before the next block's BatchNorm (as the reference does), so its eval-mode outputs are
shifted against train mode, and on short runs an epoch with validation AUC 0.21 had a LOWER
val_loss than the next epoch with AUC 1.0 (measured on the synthetic set of the tests).
EarlyStopping and ReduceLROnPlateau keep watching val_loss, as in the reference recipe: for
"is it still improving" a smooth proper score is the better signal; a tied AUC keeps the
earlier checkpoint.

The k-class task logs under the same names (module.py): val_auc is the macro one-vs-rest AUC,
val_sensitivity/val_specificity are macro recall/specificity, so the same columns and selection
rule apply; only the curves' labels say which (``multiclass=True``).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)

logger = logging.getLogger(__name__)
progress_logger = logging.getLogger("pneumocxr.training.progress")  # EpochLog's lines

MONITOR, MONITOR_MODE = "val_auc", "max"  # best checkpoint
STOP_MONITOR = "val_loss"  # early stopping (and, in module.py, the plateau scheduler)
HISTORY_COLUMNS = (
    "phase",
    "epoch",
    "train_loss",
    "val_loss",
    "val_acc",
    "val_auc",
    "val_sensitivity",
    "val_specificity",
    "lr",
)


def checkpoint_callbacks(
    ckpt_dir: Path, every_n_steps: int = 0
) -> tuple[ModelCheckpoint, list[ModelCheckpoint]]:
    """(best, last-savers). ``last.ckpt`` is rewritten after every validation (and also every
    ``every_n_steps`` training steps when > 0, so a killed run loses little of a long epoch)."""
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best-epoch{epoch:03d}",
        monitor=MONITOR,
        mode=MONITOR_MODE,
        save_top_k=1,
        auto_insert_metric_name=False,
    )
    # monitor=None + save_top_k=1 + a fixed name = one rolling "last.ckpt", overwritten in place.
    savers = [ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False)]
    if every_n_steps > 0:
        savers.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="last",
                save_top_k=1,
                enable_version_counter=False,
                every_n_train_steps=every_n_steps,
            )
        )
    return best, savers


def early_stopping(patience: int) -> EarlyStopping:
    """Stop after ``patience`` epochs without a lower val_loss (Keras semantics: the same count)."""
    return EarlyStopping(monitor=STOP_MONITOR, mode="min", patience=patience)


def standard_callbacks(
    ckpt_dir: Path,
    history_csv: Path,
    *,
    patience: int,
    phase: int = 1,
    epoch_offset: int = 0,
    every_n_steps: int = 0,
    progress: bool = True,
    multiclass: bool = False,
) -> tuple[ModelCheckpoint, list[Callback]]:
    """(best-checkpoint callback, all callbacks) for one training phase."""
    best, savers = checkpoint_callbacks(ckpt_dir, every_n_steps)
    callbacks: list[Callback] = [
        best,
        *savers,
        early_stopping(patience),
        LearningRateMonitor(logging_interval="epoch"),
        # progress: bars (on a terminal, see pneumocxr.progress), else one log line per epoch
        TQDMProgressBar() if progress else EpochLog(phase=phase, epoch_offset=epoch_offset),
        HistoryWriter(history_csv, phase=phase, epoch_offset=epoch_offset, multiclass=multiclass),
    ]
    return best, callbacks


class EpochLog(Callback):
    """One log line per epoch (and one when the phase starts): the progress report of a batch log.

    Logged to ``pneumocxr.training.progress`` so that a command printing its own progress (``tune``:
    one line per trial) can quiet it alone.
    """

    def __init__(self, *, phase: int = 1, epoch_offset: int = 0):
        self.phase = phase
        self.epoch_offset = epoch_offset
        self._started = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            batches = trainer.num_training_batches
            progress_logger.info(
                "phase %d: epochs %d–%d, %s batches per epoch",
                self.phase,
                self.epoch_offset + trainer.current_epoch + 1,
                self.epoch_offset + trainer.max_epochs,
                batches if math.isfinite(batches) else "?",
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        shown = [f"{n} {float(metrics[n]):.4f}" for n in HISTORY_COLUMNS[2:-1] if n in metrics]
        progress_logger.info(
            "phase %d epoch %d/%d: %s (%.1f s)",
            self.phase,
            self.epoch_offset + trainer.current_epoch + 1,
            self.epoch_offset + trainer.max_epochs,
            ", ".join(shown) or "no metrics yet",
            time.monotonic() - self._started,
        )


class HistoryWriter(Callback):
    """Writes one tidy row per epoch to ``history.csv`` and redraws ``training_curves.png`` beside it.

    Rows of this phase from ``epoch_offset + current epoch`` on are replaced, so a resumed run
    rewrites the epochs it repeats instead of duplicating them. ``lr`` is the LR the epoch
    trained with (of the first parameter group: the head's, when there are several).
    """

    def __init__(self, path: Path, *, phase: int = 1, epoch_offset: int = 0, multiclass: bool = False):
        self.path = Path(path)
        self.phase = phase
        self.epoch_offset = epoch_offset
        self.multiclass = multiclass

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row: dict[str, Any] = {"phase": self.phase, "epoch": self.epoch_offset + trainer.current_epoch + 1}
        for name in HISTORY_COLUMNS[2:-1]:
            value = metrics.get(name)
            row[name] = float(value) if value is not None else math.nan
        # Lightning steps ReduceLROnPlateau only after this hook: this is the LR the epoch used.
        row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else math.nan
        rows = [r for r in read_history(self.path) if int(r["epoch"]) < row["epoch"]]
        write_history(self.path, [*rows, row])
        plot_history([*rows, row], self.path.with_name("training_curves.png"), multiclass=self.multiclass)


def read_history(path: Path) -> list[dict[str, Any]]:
    """Rows of a history CSV (numbers as floats, phase/epoch as ints); [] when absent."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for r in rows:
        row: dict[str, Any] = {"phase": int(r["phase"]), "epoch": int(r["epoch"])}
        row.update({k: float(r[k]) if r.get(k) not in (None, "") else math.nan for k in HISTORY_COLUMNS[2:]})
        out.append(row)
    return out


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomically (temp file + rename) write the history, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(HISTORY_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def plot_history(rows: list[dict[str, Any]], path: Path, *, multiclass: bool = False) -> None:
    """Loss (train, val) and validation AUC vs epoch, side by side; object-oriented matplotlib only.

    ``multiclass``: label the axes for a k-class run (cross-entropy, macro AUC, argmax accuracy)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, auc_ax = figure.subplots(1, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], marker="o", label="train")
    loss_ax.plot(epochs, [r["val_loss"] for r in rows], marker="o", label="validation")
    loss_name = "cross-entropy" if multiclass else "binary cross-entropy"
    loss_ax.set(xlabel="epoch", ylabel=loss_name, title="Loss")
    loss_ax.legend()
    auc_name, acc_name = (
        ("macro AUC (one-vs-rest)", "accuracy (argmax)") if multiclass else ("AUC", "accuracy at 0.5")
    )
    auc_ax.plot(epochs, [r["val_auc"] for r in rows], marker="o", color="tab:green", label=auc_name)
    auc_ax.plot(epochs, [r["val_acc"] for r in rows], marker=".", color="tab:gray", label=acc_name)
    auc_ax.set(xlabel="epoch", ylabel="validation score", title="Validation AUC and accuracy")
    auc_ax.legend()
    finetune = [r["epoch"] for r in rows if r["phase"] == 2]
    for ax in (loss_ax, auc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if finetune:
            ax.axvline(min(finetune) - 0.5, color="k", linestyle=":", linewidth=1)  # phase-2 start
    tmp = path.with_name(path.stem + ".tmp.png")
    figure.savefig(tmp, dpi=100)
    tmp.replace(path)
