"""``run_cv(config, out_dir, folds=k)``: patient-grouped, class-stratified k-fold cross-validation.

Why: one validation split of a few hundred images gives one noisy number. k folds give k numbers
(mean ± std says how much a result depends on which patients were held out) and an out-of-fold
(OOF) prediction for EVERY training image, made by the one model that never saw that patient. The
OOF predictions are the honest validation set of a k-fold ensemble (``pneumocxr ensemble create``
chooses its threshold and conformal calibration on them).

Each fold is an ordinary ``train()`` run with ``data.folds = k`` and ``data.fold = i``
(``data.splits.patient_kfold`` over the train folder, after ``train.limit_train_images``), so
everything a run does (threshold, temperature, best.pt) happens per fold. Output folder::

    out_dir/cv.json                  k, the resolved config, then the summary and ``holdout_split``: the
                                     patients kept out of every fold (training's ``SplitInfo`` structure,
                                     kind "cv-holdout"; null with data.val_fraction=0), which
                                     ``pneumocxr ensemble create`` records as the fold ensemble's split
    out_dir/fold<i>/                 a complete run folder (best.pt, history.csv …)
    out_dir/fold<i>/oof_predictions.csv, fold_result.json   written when the fold is finished
    out_dir/oof_predictions.csv      every training image exactly once, sorted by path
    out_dir/cv_metrics.{csv,md}      per-fold metrics and mean ± std (sample std, ddof = 1); the .md and
                                     cv.json ``threshold_rules`` add each rule's spread over folds (cv_rules)
    out_dir/cache/                   preprocessed pixels, shared by the folds (unless data.cache_dir is set)

Resumable: re-running the same command skips folds with a ``fold_result.json`` and continues an
interrupted fold from its ``last.ckpt``; a different config for the same folder is refused.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pneumocxr.config import RunConfig, to_dict
from pneumocxr.data.cache import PreprocessedCache
from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.evaluation import METRIC_NAMES, binary_metrics, choose_threshold
from pneumocxr.inference import Predictor
from pneumocxr.models import load_checkpoint
from pneumocxr.training.cv_rules import spread_markdown, threshold_rule_spread
from pneumocxr.training.datamodule import split_info, split_records
from pneumocxr.training.hardware import resolve_accelerator
from pneumocxr.training.train import train

logger = logging.getLogger(__name__)

CV_FILE = "cv.json"
OOF_FILE = "oof_predictions.csv"
FOLD_RESULT = "fold_result.json"
OOF_COLUMNS = (
    "path",
    "patient_id",
    "label",
    "sublabel",
    "fold",
    "logit",
    "probability",
    "calibrated_probability",
    "prediction",
    "threshold",
    "temperature",
)
SUMMARY_METRICS = ("roc_auc", "accuracy", "sensitivity", "specificity", "f1", "pr_auc", "brier", "ece")


@dataclass(frozen=True)
class FoldResult:
    """One finished fold: its model and how it does on its own (out-of-fold) validation patients."""

    fold: int
    out_dir: Path
    checkpoint: Path  # out_dir/best.pt
    n_images: int  # validation (out-of-fold) images
    threshold: float  # the fold model's own threshold (on its calibrated probability)
    temperature: float
    metrics: dict[str, float]  # METRIC_NAMES on the OOF images at ``threshold``
    best_epoch: int
    reused: bool = False  # finished by an earlier invocation and skipped now


@dataclass(frozen=True)
class CVResult:
    """What ``run_cv`` produced."""

    out_dir: Path
    k: int
    folds: tuple[FoldResult, ...]
    summary: dict[str, dict[str, float]]  # metric → {"mean", "std"} over folds
    pooled: dict[str, Any]  # all OOF predictions together, at a threshold chosen on them (Youden)
    files: dict[str, Path]


def fold_dir(out_dir: str | Path, fold: int) -> Path:
    return Path(out_dir) / f"fold{fold}"


def fold_config(config: RunConfig, k: int, fold: int) -> RunConfig:
    """The run config of fold ``fold``: validation = that fold."""
    return replace(config, data=replace(config.data, folds=k, fold=fold))


def _share_cache(config: RunConfig, out_dir: Path, run_dir: Path) -> Path:
    """The pixel cache the fold reads: ``data.cache_dir`` if set, else ``out_dir/cache`` shared by all
    folds through a relative ``fold<i>/cache`` link (so the folder can move; the config stays as given)."""
    if config.data.cache_dir:
        return Path(config.data.cache_dir).expanduser()
    shared, link = out_dir / "cache", run_dir / "cache"
    shared.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(Path("..") / "cache", target_is_directory=True)
        except OSError:  # no symlinks here (e.g. Windows without privileges): each fold decodes its own
            logger.info("cannot link %s to %s: fold %s fills its own cache", link, shared, run_dir.name)
    return link


def run_cv(config: RunConfig, out_dir: str | Path, *, folds: int = 5, progress: bool = True) -> CVResult:
    """Train ``folds`` models, one per patient-level fold, and summarise them (module docstring)."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"--folds {folds!r}: use 2 or more (5 is usual)")
    if config.data.folds not in (0, folds):
        raise ConfigError(
            f"data.folds={config.data.folds} in the config but --folds {folds}; drop data.folds from the "
            "config (cv sets it per fold)"
        )
    if config.data.task != "binary":  # -- the k-class task: out-of-fold summaries are binary for now --
        raise ConfigError(
            f"pneumocxr cv: data.task={config.data.task!r} is not supported yet (the out-of-fold predictions "
            "and fold summaries are binary); train the three-class task with `pneumocxr train --task "
            f"{config.data.task}`, or cross-validate the binary task"
        )
    out_dir = Path(out_dir)
    config = replace(config, data=replace(config.data, folds=0, fold=0))  # the shared part of every fold
    _check_cv_dir(config, out_dir, folds)
    results = []
    for fold in range(folds):
        result = _run_fold(fold_config(config, folds, fold), out_dir, folds, fold, progress)
        if result is None:  # a DDP rank other than 0: rank 0 writes and summarises
            continue
        results.append(result)
        logger.info(
            "fold %d of %d: AUC %.4f on %d OOF images",
            fold,
            folds,
            result.metrics["roc_auc"],
            result.n_images,
        )
    if len(results) < folds:
        return CVResult(out_dir, folds, tuple(results), {}, {}, {})
    return _summarise(config, out_dir, tuple(results))


def _check_cv_dir(config: RunConfig, out_dir: Path, k: int) -> None:
    """Write ``cv.json`` or, resuming, insist that it describes the same cross-validation."""
    path = out_dir / CV_FILE
    now = {"folds": k, "config": to_dict(config)}
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        before = {"folds": saved.get("folds"), "config": saved.get("config")}
        if before != now:
            changed = _changed_keys(before, now)
            raise ConfigError(
                f"{out_dir} holds a cross-validation with different settings ({', '.join(changed)}); "
                "re-run with the same --config/--set/--folds to resume it, or choose a new --out"
            )
        logger.info("resuming the cross-validation in %s", out_dir)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(now, indent=1) + "\n", encoding="utf-8")


def _changed_keys(before: dict, now: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(before) | set(now))
    changed = []
    for key in keys:
        a, b = before.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


def _run_fold(config: RunConfig, out_dir: Path, k: int, fold: int, progress: bool) -> FoldResult | None:
    """Train (or resume, or skip) one fold and write its OOF predictions (None on DDP ranks > 0)."""
    run_dir = fold_dir(out_dir, fold)
    done = run_dir / FOLD_RESULT
    if done.is_file():
        logger.info("fold %d already finished (%s): skipping it", fold, done)
        return _read_fold_result(done)
    resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
    cache_dir = _share_cache(config, out_dir, run_dir)
    logger.info("fold %d of %d: %s", fold, k, "resuming" if resume else "training")
    result = train(config, run_dir, resume=resume, progress=progress)
    if result.global_rank != 0:  # DDP: rank 0 writes the fold's files
        return None
    _, val = split_records(config.data, config.train.limit_train_images)
    meta_split = result.split.get("val_patients_sha256")
    if meta_split != split_info(config.data, config.train.limit_train_images, [], val).val_patients_sha256:
        raise DatasetError(
            f"{run_dir}: the validation patients recorded in best.pt differ from fold {fold} of the data "
            f"now at {config.data.root}; the dataset changed: start the cross-validation in a new --out"
        )
    rows, metrics, meta = _oof_predictions(result.best_checkpoint, val, config, fold, cache_dir)
    _write_rows(run_dir / OOF_FILE, rows)
    fold_result = FoldResult(
        fold=fold,
        out_dir=run_dir,
        checkpoint=result.best_checkpoint,
        n_images=len(val),
        threshold=meta.threshold,
        temperature=meta.temperature,
        metrics=metrics,
        best_epoch=result.best_epoch,
    )
    payload = {**fold_result.__dict__, "out_dir": str(run_dir), "checkpoint": str(result.best_checkpoint)}
    done.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")  # NaN stays NaN
    return fold_result


def _read_fold_result(path: Path) -> FoldResult:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(out_dir=Path(data["out_dir"]), checkpoint=Path(data["checkpoint"]), reused=True)
    return FoldResult(**data)


def _oof_predictions(
    checkpoint: Path, records: list[ImageRecord], config: RunConfig, fold: int, cache_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, float], Any]:
    """Predict the fold's validation images with its best.pt through ``Predictor`` (the core that
    ``evaluate`` uses): calibrated probability = sigmoid(logit / T), decision at the stored threshold."""
    model, meta = load_checkpoint(checkpoint)
    device = "cuda" if resolve_accelerator(config.train.accelerator) == "cuda" else "cpu"
    pre = meta.preprocess
    pixels = PreprocessedCache(cache_dir, pre.image_size, pre.resize_mode).load(records)  # (N, S, S)
    batch = Predictor(model, meta, device=device).predict_arrays(pixels)  # what `evaluate` computes
    z, calibrated = batch.logits, batch.calibrated_probability
    y = np.array([r.label for r in records], dtype=np.int64)
    values = binary_metrics(y, calibrated, meta.threshold)
    metrics = {name: float(values[name]) for name in METRIC_NAMES}
    rows = [
        {
            "path": r.display_name,
            "patient_id": r.patient_id,
            "label": r.label,
            "sublabel": r.sublabel,
            "fold": fold,
            "logit": float(z[i]),
            "probability": float(batch.probability[i]),
            "calibrated_probability": float(calibrated[i]),
            "prediction": int(batch.prediction[i]),
            "threshold": meta.threshold,
            "temperature": meta.temperature,
        }
        for i, r in enumerate(records)
    ]
    return rows, metrics, meta


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """CSV with ``repr`` floats (exact round trip), written atomically enough: temp file + rename."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else list(OOF_COLUMNS))
        writer.writeheader()
        writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    tmp.replace(path)
    return path


def read_oof(path: str | Path) -> dict[str, list[str]]:
    """Columns of an OOF predictions CSV (strings); DatasetError if it is not one."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = set(OOF_COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(
                    f"{path}: not an OOF predictions file (missing {', '.join(sorted(missing))})"
                )
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read the OOF predictions ({exc})") from None
    return {c: [row[c] for row in rows] for c in OOF_COLUMNS}


def _summarise(config: RunConfig, out_dir: Path, folds: tuple[FoldResult, ...]) -> CVResult:
    """Pool the OOF predictions (checking each training image appears once) and write the tables."""
    rows: list[dict[str, Any]] = []
    for result in folds:
        columns = read_oof(result.out_dir / OOF_FILE)
        rows += [dict(zip(OOF_COLUMNS, values)) for values in zip(*(columns[c] for c in OOF_COLUMNS))]
    rows.sort(key=lambda r: r["path"])
    every_fold = replace(config.data, folds=len(folds), fold=0)  # fold 0's train + val = all images
    train, val = split_records(every_fold, config.train.limit_train_images)
    expected = sorted(r.display_name for r in (*train, *val))
    if [r["path"] for r in rows] != expected:
        raise DatasetError(
            f"the out-of-fold predictions in {out_dir} do not cover each of the {len(expected)} training "
            f"images exactly once ({len(rows)} rows); the data changed during the run: use a new --out"
        )
    files = {"oof_csv": _write_rows(out_dir / OOF_FILE, rows)}
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["calibrated_probability"]) for r in rows])
    choice = choose_threshold(y, p, method="youden")
    pooled_values = binary_metrics(y, p, choice.threshold)
    pooled = {
        "threshold": choice.to_dict(),
        "metrics": {name: float(pooled_values[name]) for name in METRIC_NAMES},
        "n_images": len(rows),
        "note": "each fold's calibrated probabilities pooled; threshold chosen on them (Youden)",
    }
    summary = {
        name: {
            "mean": float(np.mean([f.metrics[name] for f in folds])),
            "std": float(np.std([f.metrics[name] for f in folds], ddof=1)),
        }
        for name in METRIC_NAMES
    }
    files.update(_write_tables(out_dir, folds, summary, pooled))
    rule_spread = threshold_rule_spread(rows, seed=config.train.seed)  # training/cv_rules.py
    with files["metrics_md"].open("a", encoding="utf-8") as fh:
        fh.write("\n".join(spread_markdown(rule_spread)) + "\n")
    cv_json = out_dir / CV_FILE
    saved = json.loads(cv_json.read_text(encoding="utf-8"))
    saved.update(
        summary=summary,
        pooled=pooled,
        fold_runs=[{"fold": f.fold, "checkpoint": str(f.checkpoint), "n_images": f.n_images} for f in folds],
        holdout_split=holdout_split(config, [*train, *val]),
        threshold_rules=rule_spread,
    )
    cv_json.write_text(json.dumps(saved, indent=1) + "\n", encoding="utf-8")
    files["cv_json"] = cv_json
    return CVResult(out_dir, len(folds), folds, summary, pooled, files)


def holdout_split(config: RunConfig, development: list[ImageRecord]) -> dict[str, Any] | None:
    """The patients ``datamodule.cv_holdout_split`` kept out of every fold, as training records its
    split (``SplitInfo.as_dict()``: ``val_*`` = held out, ``train_*`` = what the folds split) with
    ``kind = "cv-holdout"``; None when ``data.val_fraction = 0`` held nothing out."""
    data, limit = config.data, config.train.limit_train_images
    if not data.val_fraction:
        return None
    # with val_fraction=0 the folds split every image: the ones ``development`` lacks were held out
    train, val = split_records(replace(data, folds=2, fold=0, val_fraction=0.0), limit)
    folded = {r.display_name for r in development}
    held_out = [r for r in (*train, *val) if r.display_name not in folded]
    return {"kind": "cv-holdout", **split_info(data, limit, development, held_out).as_dict()}


def _write_tables(
    out_dir: Path, folds: tuple[FoldResult, ...], summary: dict[str, dict[str, float]], pooled: dict[str, Any]
) -> dict[str, Path]:
    """cv_metrics.csv (fold rows, then mean and std) and cv_metrics.md (mean ± std and pooled OOF)."""
    table = []
    for f in folds:
        table.append({"fold": f.fold, "n_images": f.n_images, "threshold": f.threshold, **f.metrics})
    table.append({"fold": "mean", **{k: v["mean"] for k, v in summary.items()}})
    table.append({"fold": "std", **{k: v["std"] for k, v in summary.items()}})
    csv_path = _write_rows(out_dir / "cv_metrics.csv", table)
    head = ["fold", "images", "threshold", *SUMMARY_METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in folds:
        cells = [str(f.fold), str(f.n_images), f"{f.threshold:.3f}"] + [
            f"{f.metrics[m]:.4f}" for m in SUMMARY_METRICS
        ]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["mean ± std", str(sum(f.n_images for f in folds)), ""]
    cells += [f"{summary[m]['mean']:.4f} ± {summary[m]['std']:.4f}" for m in SUMMARY_METRICS]
    lines.append("| " + " | ".join(cells) + " |")
    cells = ["pooled OOF", str(pooled["n_images"]), f"{pooled['threshold']['threshold']:.3f}"]
    cells += [f"{pooled['metrics'][m]:.4f}" for m in SUMMARY_METRICS]
    lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per fold: the fold model on its own validation patients, at its own threshold (calibrated "
        "probability). Mean ± sample std (ddof = 1) over folds. Pooled OOF: all folds' predictions "
        "together at a threshold chosen on them (what a k-fold ensemble is calibrated on).",
    ]
    md_path = out_dir / "cv_metrics.md"
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"metrics_csv": csv_path, "metrics_md": md_path}
