"""Does FGSM adversarial training buy robustness, and what does it cost clean? Side by side, one run.

Trains one recipe twice with the same seed and split: ``train.adversarial_eps=0`` (plain) and
``train.adversarial_eps=EPS`` (FGSM examples replace ``train.adversarial_fraction`` of each batch,
see ``pneumocxr.training.adversarial``), then attacks both on the validation split they share with
``bench/adversarial.py`` (FGSM and PGD at ε ∈ {0.5, 1, 2, 4}/255) and prints the tables.

    .venv/bin/python bench/adversarial_training.py --config smoke --data ../shared/data/chest_xray \\
        --out runs/adv_smoke [--eps 2] [--set train.max_epochs=3 …]

The adversarial callback is passed to ``train(..., callbacks=...)`` here; once ``training/phases.py``
registers it from the config, the two instances act once (the callback checks), so this script
stays correct. Sized for a smoke-scale check on CPU: the numbers are a sign, not a result.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from pneumocxr.config import RunConfig, apply_overrides, from_dict, load_yaml, resolve_recipe
from pneumocxr.training import train
from pneumocxr.training.adversarial import adversarial_callbacks

sys.path.insert(0, str(Path(__file__).resolve().parent))
import adversarial as attack_bench  # bench/adversarial.py, beside this file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="smoke", help="recipe name or YAML path")
    parser.add_argument("--data", type=Path, default=attack_bench.DEFAULT_DATA)
    parser.add_argument(
        "--out", type=Path, required=True, help="runs go to OUT/plain, OUT/fgsm; tables to OUT"
    )
    parser.add_argument("--eps", type=float, default=2.0, help="training ε in 1/255 pixel units")
    parser.add_argument("--fraction", type=float, default=0.5, help="share of each batch made adversarial")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides")
    parser.add_argument("--images", type=int, default=200, help="validation images to attack (0 = all)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (shared machines: 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    base = apply_overrides(load_yaml(resolve_recipe(args.config)), [f"data.root={args.data}", *args.set])
    runs = []
    for name, eps in (("plain", 0.0), ("fgsm", args.eps)):
        overrides = [f"train.adversarial_eps={eps}", f"train.adversarial_fraction={args.fraction}"]
        config = from_dict(RunConfig, apply_overrides(base, overrides))
        start = time.perf_counter()
        result = train(config, args.out / name, progress=False, callbacks=adversarial_callbacks(config.train))
        print(
            f"{name}: adversarial_eps={eps:g}/255, val AUC {result.metrics['val_auc']:.4f}, "
            f"{result.epochs_run} epochs in {time.perf_counter() - start:.0f} s"
        )
        runs.append(str(result.best_checkpoint))
    print()
    return attack_bench.main(
        [
            "--checkpoint",
            *runs,
            "--data",
            str(args.data),
            "--images",
            str(args.images),
            "--threads",
            str(args.threads),
            "--out",
            str(args.out),
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
