"""``run_stress``: a checkpoint on its validation split re-rendered under acquisition shifts.

Why: the carved validation split scores AUC ~0.997, yet on the withheld Kermany test split the
specificity at the stored threshold collapses (~0.6): test NORMAL films differ (older children whose
chest fills the frame, burned-in text, rotation). This suite re-renders the SAME validation images
under each shift of ``data.stress_shifts`` at severities 1..3 (plus 0, clean) and reports AUC,
sensitivity and specificity at the checkpoint's stored threshold with the 95 % CIs ``evaluate``
uses (patient bootstrap for AUC, Wilson for proportions), the median P(PNEUMONIA) of each class,
and the worst case. A shift that moves NORMAL films across the threshold shows up here first.

The images take ``evaluate``'s path with one step inserted: each is decoded once as
``data.cache.decode_record`` decodes it (``load_pixels`` at JPEG draft scale >= the model input),
the shift is applied to that float image, then the same ``resize_square`` + uint8 quantisation
and ``Predictor.predict_arrays``. Shifting before the model's resize is the realistic choice (a
film arrives compressed/annotated/cropped at its own resolution and the model's resize then acts
on the artefacts), it costs ~1-5 ms per image, and severity 0 yields exactly the pixels (and so the
numbers) ``evaluate`` computes for those images. Decoded images are held in memory (float32, a
few hundred KB each) and reused by every shift.

Cost: one forward pass per image per condition (1 + ~3 per shift). The default is a seeded,
class-stratified, patient-grouped subsample of ``DEFAULT_STRESS_IMAGES`` images (the splitter
training uses), which on 2 CPU cores with EfficientNet-Lite0 at 224 px takes ~5 minutes.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumocxr.data.discovery import Dataset, discover
from pneumocxr.data.records import ImageRecord
from pneumocxr.data.sources import load_pixels
from pneumocxr.data.splits import patient_split
from pneumocxr.data.stress_shifts import Shift, apply_shift, in_training_augmentation, resolve_shifts
from pneumocxr.errors import ConfigError
from pneumocxr.evaluation import DEFAULT_N_BOOT, metrics_with_ci
from pneumocxr.imaging import resize_square
from pneumocxr.inference import load_predictor
from pneumocxr.inference.predictor import DEFAULT_BATCH_SIZE, Predictor, file_sha256
from pneumocxr.labels import PNEUMONIA
from pneumocxr.workflows.evaluate import model_label, records_of_split
from pneumocxr.workflows.evaluation_files import CONFIDENCE
from pneumocxr.workflows.provenance import inference_settings, inference_suffix
from pneumocxr.workflows.validation import VALIDATION, recorded_validation

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_STRESS_IMAGES", "METRICS", "StressResult", "run_stress", "stress_sample"]

DEFAULT_STRESS_IMAGES = 300  # ~5 min for 17 shifts on 2 CPU cores (Lite0, 224 px); 0/None = every image
METRICS = {"auc": "roc_auc", "sensitivity": "sensitivity", "specificity": "specificity"}  # column → metric
CLEAN = "none"  # the shift name of the clean reference row


@dataclass(frozen=True, kw_only=True)
class StressResult:
    """What ``run_stress`` measured: one row per condition (the clean reference, then shift × severity)."""

    model: str
    checkpoint: Path
    checkpoint_sha256: str
    data: str
    split: str
    threshold: float  # the checkpoint's, applied to the calibrated probability
    seed: int
    n_images: int
    n_patients: int
    class_counts: dict[str, int]
    shifts: tuple[Shift, ...]
    augmentation: dict[str, Any] | None  # training AugmentParams fields, when known
    rows: list[dict[str, Any]]  # the table of stress.csv
    seconds: float
    inference: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def clean(self) -> dict[str, Any]:
        return self.rows[0]

    def worst(self, *, exclude: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
        """metric column → the shifted condition where it is lowest (shifts in ``exclude`` left out)."""
        shifted = [r for r in self.rows[1:] if r["shift"] not in exclude]
        out: dict[str, dict[str, Any]] = {}
        for column in METRICS:
            defined = [r for r in shifted if np.isfinite(r[column])]
            if not defined:
                continue
            row = min(defined, key=lambda r: r[column])
            keys = ("shift", "severity", "severity_name", "level", "in_training_augmentation")
            out[column] = {
                **{k: row[k] for k in keys},
                "value": row[column],
                "low": row[f"{column}_lo"],
                "high": row[f"{column}_hi"],
                "change_from_clean": row[f"{column}_change"],
            }
        return out


def run_stress(
    checkpoint: str | os.PathLike,
    data_root: str | os.PathLike | Dataset,
    *,
    shifts: str | Sequence[str] | None = None,
    seed: int = 0,
    n_images: int | None = DEFAULT_STRESS_IMAGES,
    split: str = VALIDATION,
    out_dir: str | os.PathLike | None = None,
    augmentation: Mapping[str, Any] | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    predictor: Predictor | None = None,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> StressResult:
    """Measure ``checkpoint`` on ``split`` of ``data_root`` under every shift (module docstring).

    ``split="validation"``: the split the checkpoint records (``recorded_validation``); any other
    name is a split of the dataset (or the label of an already rebuilt ``Dataset``). ``shifts``:
    names (list or comma-separated; None = all of ``data.stress_shifts.SHIFTS``). ``seed`` fixes
    the subsample, every shifted image and the bootstrap. ``n_images``: 0/None = all images.
    ``augmentation``: the training ``AugmentParams`` fields (``dataclasses.asdict``), which fill
    ``in_training_augmentation``; None leaves it unknown. ``out_dir``: write stress.csv/.json/.md/.png.
    """
    started = time.perf_counter()
    chosen = resolve_shifts(shifts)  # a bad name fails before any image is read
    checkpoint = Path(checkpoint)
    records, dataset, split_label = _records(checkpoint, data_root, split)
    records = stress_sample(records, n_images, seed)
    predictor = predictor or load_predictor(checkpoint, device=device, batch_size=batch_size)
    if predictor.num_classes != 2:
        raise ConfigError(
            f"{checkpoint}: the stress suite measures binary (NORMAL/PNEUMONIA) checkpoints; this one has "
            f"classes {', '.join(predictor.class_names)}: evaluate it without --stress"
        )
    settings = inference_settings(predictor)
    model = model_label(checkpoint) + inference_suffix(settings)
    rows = _measure(
        predictor, records, dataset, chosen, model, seed=seed, n_boot=n_boot, augmentation=augmentation
    )
    y = np.array([r.label for r in records], dtype=np.int64)
    result = StressResult(
        model=model,
        checkpoint=checkpoint,
        checkpoint_sha256=file_sha256(checkpoint),
        data=str(Path(dataset.root).resolve()),
        split=split_label,
        threshold=float(predictor.threshold),
        seed=int(seed),
        n_images=len(records),
        n_patients=len({r.patient_id for r in records}),
        class_counts={"NORMAL": int((y == 0).sum()), "PNEUMONIA": int((y == PNEUMONIA).sum())},
        shifts=chosen,
        augmentation=dict(augmentation) if augmentation is not None else None,
        rows=rows,
        seconds=time.perf_counter() - started,
        inference=settings,
    )
    if out_dir is not None:
        from pneumocxr.workflows.stress_files import write_stress_files

        result.files.update(write_stress_files(result, Path(out_dir), n_boot=n_boot))
    return result


def stress_sample(records: Sequence[ImageRecord], n_images: int | None, seed: int) -> list[ImageRecord]:
    """About ``n_images`` of ``records``: whole patients, each class in its share, drawn by ``seed``
    with the splitter training uses (``data.splits.patient_split``). All of them when n is 0/None
    or at least their number; sorted by path."""
    if n_images is not None and (isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 0):
        raise ConfigError(f"stress images={n_images!r}; use a whole number >= 0 (0 = every image)")
    if not n_images or n_images >= len(records):
        return list(records)
    _, sample = patient_split(records, val_fraction=n_images / len(records), seed=seed)
    return sample


def _measure(
    predictor: Predictor,
    records: Sequence[ImageRecord],
    dataset: Dataset,
    shifts: Sequence[Shift],
    model: str,
    *,
    seed: int,
    n_boot: int,
    augmentation: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    """The rows: every image decoded once, then per condition (clean first) rendered, scored, measured.

    An ensemble whose members take different input sizes gets ONE shifted film per image and
    condition (rendered at the largest member input's grain), resized to each member's input."""
    inputs = model_inputs(predictor)
    reference = max(size for size, _ in inputs)
    logger.info("stress: decoding %d images once", len(records))
    images = [load_pixels(r, min_size=reference) for r in records]
    keys = [_image_key(r, dataset) for r in records]
    y = np.array([r.label for r in records], dtype=np.int64)
    patients = [r.patient_id for r in records]
    conditions = [(None, 0)] + [(s, k) for s in shifts for k in s.severities]
    rows: list[dict[str, Any]] = []
    for index, (shift, severity) in enumerate(conditions, start=1):
        shifted = _shifted(images, keys, shift, severity, seed, reference)
        if len(inputs) == 1:
            batch = predictor.predict_arrays(_model_pixels(shifted, *inputs[0]))
        else:
            batch = predictor.predict_per_input({key: _model_pixels(shifted, *key) for key in inputs})
        p = batch.calibrated_probability
        ci = metrics_with_ci(
            y, p, patients, predictor.threshold, n_boot=n_boot, seed=seed, confidence=CONFIDENCE
        )
        clean = rows[0] if rows else None
        rows.append({"model": model, **_row(shift, severity, y, p, ci, augmentation, clean)})
        logger.info("stress %d/%d: %s", index, len(conditions), _describe(rows[-1]))
    return rows


def model_inputs(predictor: Any) -> list[tuple[int, str]]:
    """(input size, resize mode) of each distinct member input: one for a single model."""
    groups = getattr(predictor, "groups", None)
    if groups:
        return list(groups)
    return [(predictor.preprocess.image_size, predictor.preprocess.resize_mode)]


def _records(
    checkpoint: Path, data_root: str | os.PathLike | Dataset, split: str
) -> tuple[list[ImageRecord], Dataset, str]:
    """(records, dataset, split label): the recorded validation split or a named split."""
    if split == VALIDATION:
        dataset = recorded_validation(checkpoint, data_root)
        split = dataset.splits()[0]
    else:
        dataset = data_root if isinstance(data_root, Dataset) else discover(data_root)
    return records_of_split(dataset, split), dataset, split


def _image_key(record: ImageRecord, dataset: Dataset) -> int:
    """A stable number per image (its path under the dataset root), so an image's shifted pixels do
    not depend on the subsample or on where the dataset lives."""
    try:
        name = Path(record.path).resolve().relative_to(Path(dataset.root).resolve()).as_posix()
    except ValueError:
        name = Path(record.path).name
    return zlib.crc32(f"{name}[{record.member or ''}]".encode())


def _shifted(
    images: Sequence[np.ndarray],
    keys: Sequence[int],
    shift: Shift | None,
    severity: int,
    seed: int,
    reference_size: int,
) -> list[np.ndarray]:
    """Every decoded float image under ``shift`` at ``severity`` (None: the images themselves), at
    its own resolution; ``reference_size`` is the model input whose pixels the shift's grain means."""
    if shift is None:
        return list(images)
    tag = zlib.crc32(shift.name.encode())
    out = []
    for image, key in zip(images, keys):
        image_seed = int(np.random.SeedSequence([seed, tag, severity, key]).generate_state(1)[0])
        out.append(apply_shift(image, shift, severity, seed=image_seed, reference_size=reference_size))
    return out


def _model_pixels(images: Sequence[np.ndarray], size: int, mode: str) -> np.ndarray:
    """(N, S, S) uint8 model pixels: exactly data.cache.decode_record's last two steps, so the clean
    condition gives evaluate's pixels."""
    out = np.empty((len(images), size, size), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = np.clip(np.rint(resize_square(image, size, mode=mode) * 255.0), 0, 255).astype(np.uint8)
    return out


def _row(
    shift: Shift | None,
    severity: int,
    y: np.ndarray,
    p: np.ndarray,
    ci: Any,
    augmentation: Mapping[str, Any] | None,
    clean: dict[str, Any] | None,
) -> dict[str, Any]:
    """One stress.csv row: the condition, its metrics with CIs, change from clean, median probabilities."""
    covered = in_training_augmentation(shift, augmentation) if shift is not None else None
    row: dict[str, Any] = {
        "shift": shift.name if shift is not None else CLEAN,
        "severity": severity,
        "severity_name": shift.severity_name(severity) if shift is not None else "clean",
        "level": shift.level(severity) if shift is not None else None,
        "in_training_augmentation": covered,
        "n": int(ci.info["n"]),
        "n_patients": int(ci.info["n_patients"]),
        "threshold": float(ci.info["threshold"]),
    }
    for column, metric in METRICS.items():
        estimate = ci.estimates[metric]
        row.update({column: estimate.value, f"{column}_lo": estimate.low, f"{column}_hi": estimate.high})
        row[f"{column}_change"] = estimate.value - (clean[column] if clean else estimate.value)
    row["median_p_normal"] = _median(p[y == 0])
    row["median_p_pneumonia"] = _median(p[y == PNEUMONIA])
    row["predicted_pneumonia"] = float(np.mean(p >= ci.info["threshold"])) if len(p) else float("nan")
    row.update({k: int(ci.info[k]) for k in ("tp", "fp", "tn", "fn")})
    return row


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def _describe(row: Mapping[str, Any]) -> str:
    name = row["shift"] if row["shift"] == CLEAN else f"{row['shift']} {row['severity_name']}"
    return (
        f"{name}: AUC {row['auc']:.3f}, sensitivity {row['sensitivity']:.3f}, "
        f"specificity {row['specificity']:.3f}"
    )
