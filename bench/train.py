"""Training speed on this machine, measured side by side in one run.

Part 1 — images/s of training steps for ``custom_cnn`` and ``vgg16_transfer`` (frozen base, the
seed's head), for every combination of

- precision: fp32 vs bf16 autocast;
- memory format: channels_last off vs on (model and input);
- input: "cache" = uint8 squares served from memory (the pipeline: ``PreprocessedCache`` →
  ``PixelDataset``) vs "decode" = every JPEG decoded and resized by a DataLoader at each step
  (``decode_record`` in ``__getitem__``, ``--workers`` processes; 0 = in the training process).

A step is what the training loop does: fetch a batch, augment and normalise it on the device
(``anatomy`` preset), forward, class-weighted BCE, backward, Adam step. ``loader`` is the share
of step time spent waiting for the DataLoader, ``augment`` the share spent in augmentation +
normalisation. Weights are random (throughput does not depend on them; VGG16's ImageNet file
may not be on an offline machine). Each measurement is ``--steps`` steps after ``--warmup``.

Part 2 — ``configs/cpu_fast.yaml``'s time-to-AUC: wall seconds from calling ``train()`` (cold
image cache, so decoding counts) to the end of the first validation with AUC >= 0.97, via a
Lightning callback; the run is stopped there. ``--quick`` trains on a subset, and says so.

    python bench/train.py                 # ~6-8 min on 2 idle cores
    python bench/train.py --quick         # ~1-2 min: smaller images, fewer steps, a data subset
    python bench/train.py --skip-time-to-auc
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import random
import sys
import tempfile
import time
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from pneumocxr.config import RunConfig, apply_overrides, from_dict, load_yaml
from pneumocxr.data.cache import PreprocessedCache, decode_record
from pneumocxr.data.discovery import discover
from pneumocxr.data.records import ImageRecord
from pneumocxr.models import create_model, to_model_input
from pneumocxr.training import train
from pneumocxr.training.augment import PRESETS, BatchAugmenter
from pneumocxr.training.datamodule import PixelDataset, collate_batch
from pneumocxr.training.features import FeatureHead

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "chest_xray"
MODELS = ("custom_cnn", "vgg16_transfer")
TARGET_AUC = 0.97


@dataclass(frozen=True)
class Row:
    model: str
    precision: str
    channels_last: bool
    source: str
    images_per_s: float
    loader_share: float
    augment_share: float


class DecodingDataset(Dataset):
    """The naive input path: read and resize the JPEG in ``__getitem__``, every time."""

    def __init__(self, records: list[ImageRecord], size: int):
        self.records, self.size = records, size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        record = self.records[index]
        pixels = torch.from_numpy(decode_record(record, self.size))  # (S, S) uint8
        return pixels, torch.tensor(float(record.label))


def batches(loader: DataLoader):
    while True:
        yield from loader


def measure(
    name: str, loader: DataLoader, size: int, bf16: bool, channels_last: bool, steps: int, warmup: int
) -> tuple[float, float, float]:
    """(images/s, loader share, augment share) of ``steps`` training steps after ``warmup``."""
    torch.manual_seed(0)
    model = create_model(name, image_size=size).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    augmenter = BatchAugmenter(PRESETS["anatomy"], torch.Generator().manual_seed(0))
    pos_weight = torch.tensor([1341 / 3875])  # the train folder's class ratio
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    data = batches(loader)
    t_load = t_aug = 0.0
    images_done = 0
    for step in range(warmup + steps):
        if step == warmup:
            start, t_load, t_aug, images_done = time.perf_counter(), 0.0, 0.0, 0
        t0 = time.perf_counter()
        pixels, labels = next(data)
        t1 = time.perf_counter()
        images = to_model_input(pixels, model.spec.preprocess, augment=augmenter, channels_last=channels_last)
        t2 = time.perf_counter()
        with autocast:
            logits = model(images)[:, 0].float()
        loss = F.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=pos_weight)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t_load, t_aug, images_done = t_load + t1 - t0, t_aug + t2 - t1, images_done + len(labels)
    total = time.perf_counter() - start
    return images_done / total, t_load / total, t_aug / total


def throughput(args: argparse.Namespace, records: list[ImageRecord], cache_dir: Path) -> list[Row]:
    n_images = args.batch * (args.steps + args.warmup)
    sample = random.Random(0).sample(records, min(n_images, len(records)))
    pixels = PreprocessedCache(cache_dir, args.size).load(sample)  # filled once, outside the timing
    labels = torch.tensor([float(r.label) for r in sample])
    cached = PixelDataset(torch.from_numpy(pixels), labels)
    loaders = {
        "cache": DataLoader(cached, batch_size=args.batch, shuffle=True, collate_fn=collate_batch),
        "decode": DataLoader(
            DecodingDataset(sample, args.size),
            batch_size=args.batch,
            shuffle=True,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
        ),
    }
    rows = []
    for name, bf16, channels_last, source in itertools.product(MODELS, (False, True), (False, True), loaders):
        speed, load, aug = measure(
            name, loaders[source], args.size, bf16, channels_last, args.steps, args.warmup
        )
        row = Row(name, "bf16" if bf16 else "fp32", channels_last, source, speed, load, aug)
        print(
            f"  {name:<15}{row.precision:<6}cl={'on ' if channels_last else 'off'} {source:<7}"
            f"{speed:7.1f} img/s",
            flush=True,
        )
        rows.append(row)
    return rows


def report(rows: list[Row], args: argparse.Namespace) -> None:
    print(
        f"\nTraining steps at {args.size} px, batch {args.batch}, {args.steps} timed steps each "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads, decode workers {args.workers}):"
    )
    print(
        f"{'model':<16}{'precision':<10}{'channels_last':<15}{'input':<8}{'img/s':>8}"
        f"{'vs fp32/off/decode':>20}{'loader':>8}{'augment':>9}"
    )
    for name in MODELS:
        mine = [r for r in rows if r.model == name]
        base = next(r for r in mine if r.precision == "fp32" and not r.channels_last and r.source == "decode")
        for r in mine:
            print(
                f"{r.model:<16}{r.precision:<10}{'on' if r.channels_last else 'off':<15}{r.source:<8}"
                f"{r.images_per_s:>8.1f}{r.images_per_s / base.images_per_s:>19.2f}×"
                f"{r.loader_share:>8.0%}{r.augment_share:>9.0%}"
            )
        best = max(mine, key=lambda r: r.images_per_s)
        print(
            f"  {name}: fastest = {best.precision}, channels_last {'on' if best.channels_last else 'off'}, "
            f"{best.source}: {best.images_per_s / base.images_per_s:.2f}× the naive fp32/decode set-up"
        )
    print("loader = share of step time waiting for the DataLoader; augment = augmentation + normalisation.")


class TimeToAUC(L.Callback):
    """Records the wall time (from ``start``) of the first validation with AUC >= ``target``, then
    stops the run by raising ``Reached`` (the bench needs the time, not the rest of the run)."""

    class Reached(Exception):
        pass

    def __init__(self, start: float, target: float = TARGET_AUC):
        self.start, self.target = start, target
        self.seconds: float | None = None
        self.where = ""
        self.curve: list[tuple[float, float]] = []  # (seconds, val_auc) of every validation

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        auc = trainer.callback_metrics.get("val_auc")
        if auc is None or trainer.sanity_checking:
            return
        now = time.monotonic() - self.start
        self.curve.append((now, float(auc)))
        if float(auc) >= self.target and self.seconds is None:
            self.seconds = now
            stage = "head on frozen features" if isinstance(pl_module.model, FeatureHead) else "full model"
            self.where = f"epoch {trainer.current_epoch + 1} ({stage})"
            raise TimeToAUC.Reached


def time_to_auc(args: argparse.Namespace, workdir: Path) -> None:
    overrides = [f"data.root={args.data}", f"data.cache_dir={workdir / 'cache'}"]
    if args.quick:
        overrides += ["train.limit_train_images=1200", "model.image_size=128"]
    config = from_dict(RunConfig, apply_overrides(load_yaml(args.config), overrides))
    print(
        f"\n{args.config.name}: {config.model.name} at {config.model.image_size or 'default'} px, "
        f"frozen_features={config.train.frozen_features}, cold image cache"
        + (" — QUICK: 1,200-image subset, 128 px" if args.quick else ""),
        flush=True,
    )
    load = os.getloadavg()[0]
    start = time.monotonic()
    timer = TimeToAUC(start)
    with suppress(TimeToAUC.Reached):
        train(config, workdir / "run", progress=False, callbacks=[timer])
    if timer.seconds is None:
        print(f"  AUC {TARGET_AUC} NOT reached; validations (s, AUC): {timer.curve}")
        return
    print(
        f"  time to validation AUC >= {TARGET_AUC}: {timer.seconds:.0f} s "
        f"(AUC {timer.curve[-1][1]:.4f} after {timer.where}; load average at start {load:.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Kermany chest_xray folder")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "cpu_fast.yaml")
    parser.add_argument("--size", type=int, default=128, help="input side for part 1 (the CPU recipes' size)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16, help="timed training steps per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for the decode input")
    parser.add_argument("--quick", action="store_true", help="64 px, 6 steps, time-to-AUC on a subset")
    parser.add_argument("--skip-time-to-auc", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.steps, args.warmup = 64, 6, 1
    if not (args.data / "train").is_dir():
        print(f"no train/ folder in {args.data}; pass --data <chest_xray folder>", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    records = discover(args.data).in_split("train")
    print(f"load average at start {os.getloadavg()[0]:.2f}; part 1 at {args.size} px …", flush=True)
    with tempfile.TemporaryDirectory(prefix="pneumocxr-bench-train-") as tmp:
        rows = throughput(args, records, Path(tmp) / "cache")
        report(rows, args)
        if not args.skip_time_to_auc:
            time_to_auc(args, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
