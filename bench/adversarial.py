"""How far do small pixel perturbations move each model? FGSM and PGD accuracy vs ε, side by side.

For each checkpoint, on a seeded class-stratified subsample of the validation split it records
(rebuilt exactly as ``pneumocxr evaluate --split validation`` does; it chose the checkpoint, so the
clean numbers are optimistic — the drop from clean is what this measures):

* attacks from ART (adversarial-robustness-toolbox), L∞, untargeted, on the true label, in [0, 1]
  pixel space BEFORE the model's normalisation (``models.pixel_space.PixelSpaceModel``:
  normalisation + model as one module). The one-logit head z is presented as two logits
  [−z/2, z/2]: softmax = [1 − σ(z), σ(z)], so ART's cross-entropy is exactly the binary
  cross-entropy (not [0, z]: in float32 that masks the gradient of images with z ≳ 17, see
  ``PixelSpaceModel``);
* ε ∈ {0.5, 1, 2, 4}/255 by default. FGSM: one signed-gradient step of ε. PGD: 10 steps of
  α = ε/4 from a uniform random start in the ε-ball (seeded), projected onto the ball and [0, 1];
* accuracy at the checkpoint's stored threshold on the temperature-calibrated probability (the
  rule ``evaluate`` applies), its ratio to the clean accuracy, AUC, sensitivity and specificity.

    .venv/bin/python bench/adversarial.py --checkpoint runs/A runs/B [--images 200] [--out DIR]

Prints tables; ``--out`` also writes adversarial.csv (one row per model × attack × ε) and
adversarial.json (the rows and the settings). Several checkpoints that record the same validation
patients are attacked on the same images (paired). No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pneumocxr.config import Preprocess
from pneumocxr.data.cache import PreprocessedCache, decode_record
from pneumocxr.errors import ConfigError
from pneumocxr.evaluation import binary_metrics
from pneumocxr.labels import PNEUMONIA
from pneumocxr.models import load_checkpoint
from pneumocxr.models.pixel_space import PixelSpaceModel
from pneumocxr.workflows.validation import recorded_validation

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chest_xray"
DEFAULT_EPS = (0.5, 1.0, 2.0, 4.0)
ATTACKS = ("fgsm", "pgd")


@dataclass(frozen=True)
class Row:
    """One model under one attack at one ε."""

    model: str
    attack: str  # "clean", "fgsm" or "pgd"
    eps_255: float  # ε in 1/255 pixel units (0 for clean)
    accuracy: float  # at the stored threshold
    accuracy_ratio: float  # accuracy / clean accuracy
    auc: float
    sensitivity: float
    specificity: float
    n: int


@contextmanager
def numpy_seed(seed: int) -> Iterator[None]:
    """ART draws PGD's random start from numpy's global generator: seed it here, restore it after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def art_classifier(wrapper: nn.Module, image_size: int, device: str):
    """ART's view of a [0, 1]-pixel, two-logit model."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=wrapper,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, image_size, image_size),
        nb_classes=2,
        clip_values=(0.0, 1.0),
        preprocessing=None,
        device_type="gpu" if device.startswith("cuda") else "cpu",
    )


def make_attack(name: str, classifier, eps: float, steps: int, batch_size: int):
    """ART's FGSM or PGD (L∞) at ``eps`` in [0, 1] units."""
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

    if name == "fgsm":
        return FastGradientMethod(classifier, norm=np.inf, eps=eps, eps_step=eps, batch_size=batch_size)
    if name == "pgd":
        return ProjectedGradientDescent(
            classifier,
            norm=np.inf,
            eps=eps,
            eps_step=eps / 4,
            max_iter=steps,
            num_random_init=1,
            batch_size=batch_size,
            verbose=False,
        )
    raise ConfigError(f"attack {name!r}; use one of {', '.join(ATTACKS)}")


def logits_of(wrapper: nn.Module, pixels: np.ndarray, batch_size: int, device: str) -> np.ndarray:
    """(N,) PNEUMONIA logits z of (N, 1, S, S) pixels (z = difference of the two columns)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(pixels[start : start + batch_size])).to(device)
            two = wrapper(batch).float()
            out.append((two[:, 1] - two[:, 0]).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def attack_rows(
    model: nn.Module,
    preprocess: Preprocess,
    pixels: np.ndarray,
    labels: np.ndarray,
    *,
    threshold: float = 0.5,
    temperature: float = 1.0,
    eps_255: Sequence[float] = DEFAULT_EPS,
    attacks: Sequence[str] = ATTACKS,
    pgd_steps: int = 10,
    seed: int = 0,
    batch_size: int = 32,
    device: str = "cpu",
    name: str = "model",
) -> list[Row]:
    """The core: clean row, then each attack at each ε, for one binary model (eval mode).

    ``pixels``: (N, 1, S, S) float32 in [0, 1]; ``labels``: (N,) 0/1 (PNEUMONIA = 1).
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if pixels.ndim != 4 or pixels.shape[1] != 1 or len(pixels) != len(labels):
        raise ValueError(f"pixels {pixels.shape} must be (N, 1, S, S) with one label each ({len(labels)})")
    wrapper = PixelSpaceModel(model, preprocess).to(device).eval()
    classifier = art_classifier(wrapper, pixels.shape[-1], device)
    onehot = np.eye(2, dtype=np.float32)[labels]

    def row(attack: str, eps: float, images: np.ndarray, clean_acc: float | None) -> Row:
        z = logits_of(wrapper, images, batch_size, device)
        m = binary_metrics(labels, 1.0 / (1.0 + np.exp(-z / temperature)), threshold)
        ratio = m["accuracy"] / clean_acc if clean_acc else 1.0
        return Row(
            name, attack, eps, m["accuracy"], ratio, m["roc_auc"], m["sensitivity"], m["specificity"], len(z)
        )

    clean = row("clean", 0.0, pixels, None)
    rows = [clean]
    for eps in eps_255:
        for attack in attacks:
            with numpy_seed(seed):
                adversarial = make_attack(attack, classifier, eps / 255.0, pgd_steps, batch_size).generate(
                    x=pixels, y=onehot
                )
            rows.append(row(attack, float(eps), adversarial, clean.accuracy))
    return rows


def stratified_sample(records: Sequence, n: int, seed: int) -> list:
    """About ``n`` records, each class in its share of ``records``; the same seed gives the same images."""
    records = sorted(records, key=lambda r: str(r.path))
    if n <= 0 or n >= len(records):
        return records
    rng = np.random.default_rng(seed)
    labels = np.array([int(r.label) for r in records])
    chosen: list[int] = []
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        take = max(1, round(n * len(where) / len(records)))
        chosen.extend(rng.choice(where, size=min(take, len(where)), replace=False).tolist())
    return [records[i] for i in sorted(chosen)]


def load_pixels(records: Sequence, preprocess: Preprocess, cache_dir: Path | None) -> np.ndarray:
    """(N, 1, S, S) float32 in [0, 1]: the model squares training used (cache or the cache's decoder)."""
    if cache_dir is not None:
        squares = PreprocessedCache(cache_dir, preprocess.image_size, preprocess.resize_mode).load(records)
    else:
        squares = np.stack([decode_record(r, preprocess.image_size, preprocess.resize_mode) for r in records])
    return (np.asarray(squares, dtype=np.float32) / 255.0)[:, None]


def checkpoint_file(path: Path) -> Path:
    """A run folder means its best.pt (as ``evaluate --checkpoint runs/NAME`` does)."""
    return path / "best.pt" if path.is_dir() else path


def model_name(path: Path) -> str:
    return path.parent.name if path.name == "best.pt" else path.stem


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", type=Path, nargs="+", required=True, help="best.pt files or run folders"
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="the dataset the models were trained on"
    )
    parser.add_argument("--images", type=int, default=200, help="about this many, class-stratified (0 = all)")
    parser.add_argument(
        "--eps", default=",".join(f"{e:g}" for e in DEFAULT_EPS), help="ε list in 1/255 units"
    )
    parser.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma list of {ATTACKS}")
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="subsample and PGD random start")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--cache-dir", type=Path, help="a preprocessed-image cache to read (e.g. runs/cache)")
    parser.add_argument("--out", type=Path, help="write adversarial.csv and adversarial.json here")
    return parser.parse_args(argv)


def print_tables(rows: list[Row], names: list[str]) -> None:
    print("| model | attack | ε (/255) | accuracy | ÷ clean | AUC | sensitivity | specificity |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r.model} | {r.attack} | {r.eps_255:g} | {r.accuracy:.3f} | {r.accuracy_ratio:.3f} | "
            f"{r.auc:.3f} | {r.sensitivity:.3f} | {r.specificity:.3f} |"
        )
    print("\nside by side: accuracy (÷ clean) at the stored threshold")
    print("| ε (/255) | attack | " + " | ".join(names) + " |")
    print("| --- | --- |" + " --- |" * len(names))
    keys = sorted({(r.eps_255, r.attack) for r in rows}, key=lambda k: (k[0], k[1] != "clean", k[1]))
    for eps, attack in keys:
        cells = []
        for name in names:
            found = [r for r in rows if (r.model, r.eps_255, r.attack) == (name, eps, attack)]
            cells.append(f"{found[0].accuracy:.3f} ({found[0].accuracy_ratio:.2f})" if found else "–")
        print(f"| {eps:g} | {attack} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    eps_list = [float(e) for e in args.eps.split(",") if e.strip()]
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    if any(e <= 0 or not math.isfinite(e) for e in eps_list) or set(attacks) - set(ATTACKS):
        raise ConfigError(f"--eps {args.eps!r} needs positive values; --attacks takes {', '.join(ATTACKS)}")
    rows: list[Row] = []
    names: list[str] = []
    for given in args.checkpoint:
        path = checkpoint_file(given)
        model, meta = load_checkpoint(path, map_location=device)
        if len(meta.class_names) != 2:
            raise ConfigError(
                f"{path}: a {len(meta.class_names)}-class checkpoint; this bench attacks binary ones"
            )
        records = stratified_sample(recorded_validation(path, args.data).records, args.images, args.seed)
        labels = np.array([int(r.label == PNEUMONIA) for r in records])
        pixels = load_pixels(records, meta.preprocess, args.cache_dir)
        name = model_name(path)
        names.append(name)
        print(
            f"{name}: {meta.model_name} at {meta.preprocess.image_size} px, {len(labels)} validation "
            f"images ({len(labels) - labels.sum()} NORMAL, {labels.sum()} PNEUMONIA), threshold "
            f"{meta.threshold:.3f}, temperature {meta.temperature:.3f}"
        )
        start = time.perf_counter()
        rows += attack_rows(
            model,
            meta.preprocess,
            pixels,
            labels,
            threshold=meta.threshold,
            temperature=meta.temperature,
            eps_255=eps_list,
            attacks=attacks,
            pgd_steps=args.pgd_steps,
            seed=args.seed,
            batch_size=args.batch_size,
            device=device,
            name=name,
        )
        print(f"  attacked in {time.perf_counter() - start:.0f} s on {device}")
    print()
    print_tables(rows, names)
    if args.out:
        write_results(args, rows, eps_list, attacks, device)
    return 0


def write_results(
    args: argparse.Namespace, rows: list[Row], eps: list[float], attacks: list[str], device: str
):
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "adversarial.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    settings = {
        "checkpoints": [str(checkpoint_file(c)) for c in args.checkpoint],
        "data": str(args.data),
        "split": "validation (recorded; chose the checkpoint: clean numbers optimistic)",
        "images": args.images,
        "eps_255": eps,
        "attacks": attacks,
        "norm": "Linf, [0, 1] pixels before normalisation, untargeted, true labels",
        "pgd": {"steps": args.pgd_steps, "step": "eps/4", "random_start": True, "seed": args.seed},
        "binary_head": "two logits [-z/2, z/2] (softmax = [1 - sigmoid(z), sigmoid(z)])",
        "decision": "sigmoid(z / temperature) >= stored threshold",
        "library": f"adversarial-robustness-toolbox {metadata.version('adversarial-robustness-toolbox')}",
        "device": device,
    }
    payload = {"settings": settings, "rows": [asdict(r) for r in rows]}
    (args.out / "adversarial.json").write_text(json.dumps(payload, indent=1, default=float))
    print(f"\nwrote {args.out / 'adversarial.csv'} and {args.out / 'adversarial.json'}")


if __name__ == "__main__":
    raise SystemExit(main())
