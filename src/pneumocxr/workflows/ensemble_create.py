"""``create_ensemble(out, members)``: checkpoints → one ensemble file with its own threshold and
conformal calibration, both chosen on validation images that no member trained on.

Where the validation predictions come from:

- a cross-validation folder (``pneumocxr cv``): its fold models become the members and the pooled
  OUT-OF-FOLD predictions are the validation set (every image the folds split, predicted by the one
  fold model that did not see its patient). That is a stand-in for the ensemble's own predictions,
  which do not exist for training images: the average of k models is usually sharper than one,
  so the threshold transfers approximately and the conformal coverage is, if anything, conservative.
  The patients ``cv`` kept out of every fold (``data.val_fraction`` > 0) are recorded as the
  ensemble's split (``extra["split"]``, ``kind = "cv-holdout"``, the structure training records),
  so ``evaluate --split validation`` judges the ensemble on them: nothing about it was chosen there;
- otherwise (runs trained separately, e.g. different architectures) the members must share their
  validation split (same data, ``data.split_seed``, ``data.val_fraction``): checked through the
  validation-patient hash training records. The ensemble predicts those images itself.

The members' own temperatures calibrate them first; the ensemble adds no temperature. Every threshold
rule (``evaluation.thresholds.RULES``) is computed on those predictions and stored like training
stores them (``extra["operating_point"]["rules"]``, so ``evaluate --threshold-rule`` works on the
ensemble too); the ensemble decides at ``threshold_rule``: by default the rule its members were
trained to use when they agree (``cpu_accurate`` members: ``target_sensitivity``), else ``youden``.
The validation labels and probabilities are stored in the file,
so ``evaluate`` can fit conformal sets at the stored α (or another) without the validation images.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumocxr.config import THRESHOLD_RULES, DataConfig
from pneumocxr.data.cache import PreprocessedCache
from pneumocxr.data.discovery import discover
from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import CheckpointError, ConfigError, DatasetError
from pneumocxr.evaluation import METRIC_NAMES, all_rules, binary_metrics
from pneumocxr.evaluation.conformal import calibrate, check_alpha, prediction_sets, set_summary
from pneumocxr.inference.ensemble import COMBINE_RULE, EnsemblePredictor, TTAModel
from pneumocxr.inference.predictor import DEFAULT_BATCH_SIZE, Predictor, file_sha256
from pneumocxr.labels import PNEUMONIA
from pneumocxr.models import CheckpointMeta
from pneumocxr.models.checkpoint import rebuild_model
from pneumocxr.models.ensemble_file import checkpoint_payload, save_ensemble
from pneumocxr.training.datamodule import split_records
from pneumocxr.workflows.operating_rules import check_rule_name

logger = logging.getLogger(__name__)

CV_FILE = "cv.json"  # written by training.cv (a sibling layer: the file, not the module, is the contract)
OOF_FILE = "oof_predictions.csv"


@dataclass(frozen=True)
class EnsembleCreated:
    """What ``create_ensemble`` wrote and what its operating point does on the validation data."""

    path: Path
    members: tuple[str, ...]
    threshold: dict[str, Any]  # ThresholdChoice.to_dict() + chosen_on
    validation: dict[str, float]  # METRIC_NAMES at the threshold on the validation predictions
    calibration_source: str  # "out-of-fold" or "validation"
    n_calibration: int
    conformal: dict[str, Any]  # set statistics on the calibration data at alpha (in-sample)
    tta: bool
    split: dict[str, Any]  # extra["split"]: for a cv folder with held-out patients, kind "cv-holdout"


def resolve_members(items: Sequence[str | os.PathLike]) -> tuple[list[tuple[str, Path]], Path | None]:
    """(name, checkpoint) per member, and the cross-validation folder when one was given.

    A cv folder (holding cv.json) means its ``fold<i>/best.pt``; a run folder its ``best.pt``; a file itself.
    """
    if not items:
        raise ConfigError("name at least one member: checkpoints, run folders or one cv folder")
    cv_dirs = [Path(i) for i in items if (Path(i) / CV_FILE).is_file()]
    if cv_dirs and len(items) > 1:
        raise ConfigError(
            f"a cross-validation folder ({cv_dirs[0]}) must be the only member argument: its out-of-fold "
            "predictions calibrate its own fold models, not other checkpoints"
        )
    if cv_dirs:
        cv_dir = cv_dirs[0]
        k = int(json.loads((cv_dir / CV_FILE).read_text(encoding="utf-8"))["folds"])
        paths = [cv_dir / f"fold{i}" / "best.pt" for i in range(k)]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing or not (cv_dir / OOF_FILE).is_file():
            raise CheckpointError(
                f"the cross-validation in {cv_dir} is not finished "
                f"({', '.join(missing) or OOF_FILE} missing); re-run the same `pneumocxr cv` to finish it"
            )
        return [(f"{cv_dir.name}/fold{i}", p) for i, p in enumerate(paths)], cv_dir
    members = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            path = path / "best.pt"
        if not path.is_file():
            raise CheckpointError(f"{item}: neither a checkpoint file nor a run folder holding best.pt")
        name = path.parent.name if path.name == "best.pt" and path.parent.name else path.stem
        members.append((name, path))
    names = [n for n, _ in members]
    return [(f"{n}#{i}" if names.count(n) > 1 else n, p) for i, (n, p) in enumerate(members)], None


def create_ensemble(
    out: str | os.PathLike,
    members: Sequence[str | os.PathLike],
    *,
    data_root: str | os.PathLike | None = None,
    alpha: float = 0.05,
    conformal_method: str = "lac",
    class_conditional: bool = False,
    tta: bool = False,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    cache_dir: str | os.PathLike | None = None,
    threshold_rule: str | None = None,
) -> EnsembleCreated:
    """Write the ensemble file ``out`` (module docstring); ``data_root`` overrides where the members'
    validation images are (when the training folder has moved); ``threshold_rule`` None = the
    members' common rule, else youden."""
    alpha = check_alpha(alpha)
    if threshold_rule is not None:
        check_rule_name(threshold_rule)
    resolved, cv_dir = resolve_members(members)
    names = [n for n, _ in resolved]
    payloads = [checkpoint_payload(p) for _, p in resolved]
    classes = {tuple(payload["class_names"]) for payload in payloads}
    if any(len(c) > 2 for c in classes):
        raise ConfigError(
            f"ensemble create: {', '.join(sorted({', '.join(c) for c in classes}))} members: creating an "
            "ensemble chooses a binary threshold and binary conformal sets, which a k-class task does not "
            "have; k-class ensemble files are predicted correctly (mean class probabilities, argmax) but "
            "cannot be created here yet — use the members one by one, or `--mc-dropout` for a spread"
        )
    if cv_dir is not None:
        if tta:
            logger.warning("--tta with a cv folder: the out-of-fold predictions were made without TTA")
        y, p, oof_patients = _oof_calibration(cv_dir, payloads)
        source = "out-of-fold"
        split = _cv_split(cv_dir, payloads, data_root, oof_patients)
    else:
        y, p, split = _validation_calibration(payloads, names, data_root, tta, device, batch_size, cache_dir)
        source = "validation"
    rule = threshold_rule or members_rule(payloads)
    # bootstrap_median resamples images here: the pooled predictions carry no patient per image
    rules = all_rules(y, p)
    choice = rules[rule]
    values = binary_metrics(y, p, choice.threshold)
    validation = {name: float(values[name]) for name in METRIC_NAMES}
    calibration = calibrate(y, p, alpha, method=conformal_method, class_conditional=class_conditional)
    conformal = set_summary(prediction_sets(p, calibration), y)
    chosen_on = f"{source} predictions ({len(y)} images)"
    extra = {
        "combine": COMBINE_RULE,
        "tta": bool(tta),
        # out-of-fold predictions were made without TTA: only the members' own validation can say
        "threshold_chosen_with_tta": bool(tta) and source == "validation",
        "split": split,
        "threshold_choice": {**choice.to_dict(), "threshold_rule": rule, "chosen_on": chosen_on},
        "operating_point": {
            "threshold_rule": rule,
            "rules": {name: c.to_dict() for name, c in rules.items()},
            "chosen_on": chosen_on,
        },
        "members": [
            {
                "name": name,
                "source": str(path),
                "sha256": file_sha256(path),
                "model_name": payload["model_name"],
                "threshold": float(payload.get("threshold", 0.5)),
                "temperature": float(payload.get("temperature", 1.0)),
            }
            for (name, path), payload in zip(resolved, payloads)
        ],
        "conformal": {
            "labels": [int(v) for v in y],
            "probabilities": [float(v) for v in p],
            "alpha": alpha,
            "method": conformal_method,
            "class_conditional": class_conditional,
            "source": source,
            "qhat": calibration.to_dict()["qhat"],
        },
    }
    path = save_ensemble(out, payloads, names, threshold=choice.threshold, metrics=validation, extra=extra)
    return EnsembleCreated(
        path, tuple(names), extra["threshold_choice"], validation, source, len(y), conformal, bool(tta), split
    )


def _oof_calibration(
    cv_dir: Path, payloads: list[dict[str, Any]]
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Labels and calibrated probabilities of the pooled out-of-fold predictions, checked against the
    fold checkpoints (a fold retrained since would have another temperature/threshold), and the
    images per patient id they cover."""
    path = cv_dir / OOF_FILE
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        y = np.array([int(r["label"]) for r in rows], dtype=np.int64)
        p = np.array([float(r["calibrated_probability"]) for r in rows])
        folds = np.array([int(r["fold"]) for r in rows])
        temperatures = np.array([float(r["temperature"]) for r in rows])
        patients: dict[str, int] = {}
        for r in rows:
            patients[r["patient_id"]] = patients.get(r["patient_id"], 0) + 1
    except (OSError, KeyError, ValueError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read the out-of-fold predictions ({exc})") from None
    for fold, payload in enumerate(payloads):
        mask = folds == fold
        if not mask.any() or not np.all(temperatures[mask] == float(payload.get("temperature", 1.0))):
            raise CheckpointError(
                f"{path} does not match {cv_dir}/fold{fold}/best.pt (no rows, or another temperature): the "
                "fold was retrained after its predictions were written; re-run `pneumocxr cv` in a new folder"
            )
    return y, p, patients


def _cv_split(
    cv_dir: Path, payloads: list[dict[str, Any]], data_root: str | os.PathLike | None, oof: dict[str, int]
) -> dict[str, Any]:
    """``extra["split"]`` of a fold ensemble: the patients the cross-validation held out of every fold.

    Read from ``cv.json["holdout_split"]`` (what ``training.cv`` recorded; no data needed) and
    checked against the folds and the out-of-fold predictions. A cv folder from before that was
    recorded, or ``data_root`` given (the data moved: it must still be the data the folds split), is
    rebuilt from the data (``_rebuilt_holdout``) and CHECKED against the out-of-fold predictions, and
    against the recorded patients where there are some. Folds that record no split, or a cv with
    ``data.val_fraction=0``, hold nothing out: kind "out-of-fold".
    """
    recorded = [(p.get("extra") or {}).get("split") or {} for p in payloads]
    settings = {
        (s.get("source"), s.get("split_seed"), s.get("val_fraction"), s.get("limit_train_images"))
        for s in recorded
    }
    source, seed, fraction, limit = next(iter(settings))
    base = {"cv_dir": str(cv_dir), "n_oof_images": sum(oof.values())}
    if len(settings) > 1:
        raise CheckpointError(
            f"the folds in {cv_dir} record different data settings (data.root/split_seed/val_fraction/"
            "limit_train_images): they are not one cross-validation; re-run `pneumocxr cv` in a new folder"
        )
    if source is None or not fraction:
        why = (
            "its folds record no training split"
            if source is None
            else "the cross-validation folded every training image (data.val_fraction=0)"
        )
        logger.info("%s: no patients held out of the folds: %s", cv_dir, why)
        return {"kind": "out-of-fold", "source": source, "no_holdout": why, **base}
    if any(s.get("task", "binary") != "binary" for s in recorded):
        raise CheckpointError(f"{cv_dir}: only a binary-task cross-validation can become an ensemble")
    held = _recorded_holdout(cv_dir, (source, seed, fraction, limit), oof)
    if held is not None and data_root is None:
        return {**held, **base}
    rebuilt = _rebuilt_holdout(cv_dir, Path(data_root or source).expanduser(), seed, fraction, limit, oof)
    if held is not None and held["val_patients_sha256"] != rebuilt["val_patients_sha256"]:
        raise DatasetError(
            f"{cv_dir}: the patients held out of the folds rebuilt from {data_root} are not the ones "
            f"{CV_FILE} records; pass --data with the folder the cross-validation was trained on"
        )
    return {**(held or rebuilt), "source": rebuilt["source"], **base}


def _rebuilt_holdout(
    cv_dir: Path, root: Path, seed: int, fraction: float, limit: int, oof: dict[str, int]
) -> dict[str, Any]:
    """The held-out split rebuilt from ``root`` by ``training.datamodule.split_records`` (what the
    folds were carved from), CHECKED: the rest must be exactly the patients and image counts of the
    out-of-fold predictions."""
    # the very function training carves its split with (limit first, then val_fraction): an
    # ordinary run's validation split is exactly what cross-validation held out of every fold
    data = DataConfig(root=str(root), val_fraction=fraction, split_seed=seed)
    development, held_out = split_records(data, limit)
    rebuilt: dict[str, int] = {}
    for r in development:
        rebuilt[r.patient_id] = rebuilt.get(r.patient_id, 0) + 1
    if rebuilt != oof:
        raise DatasetError(
            f"{cv_dir}: the folds' images rebuilt from {root} ({len(rebuilt)} patients, {len(development)} "
            f"images) are not the {len(oof)} patients / {sum(oof.values())} images of its out-of-fold "
            "predictions, so the held-out patients cannot be told apart: pass --data with the folder the "
            "cross-validation was trained on (it changed or moved since)"
        )
    patients = sorted({f"{r.split}/{r.patient_id}" for r in held_out})
    logger.info("%s held %d images of %d patients out of every fold", cv_dir, len(held_out), len(patients))
    return {
        "kind": "cv-holdout",
        "source": str(root.resolve()),
        "split_seed": seed,
        "val_fraction": fraction,
        "limit_train_images": limit,
        "train_counts": _class_counts(development),  # what the folds trained and validated on
        "val_counts": _class_counts(held_out),
        "val_patients": patients,
        "val_patients_sha256": hashlib.sha256("\n".join(patients).encode()).hexdigest(),
    }


def _recorded_holdout(cv_dir: Path, settings: tuple, oof: dict[str, int]) -> dict[str, Any] | None:
    """``cv.json["holdout_split"]``, checked: it records the folds' split settings, its patients hash
    to its sha256, none of them is in the out-of-fold predictions, and its ``train_counts`` are their
    images. None for a cv folder from before it was recorded (the caller rebuilds the split)."""
    try:
        held = json.loads((cv_dir / CV_FILE).read_text(encoding="utf-8")).get("holdout_split")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(held, dict):
        return None
    patients = list(held.get("val_patients", []))
    keys = ("source", "split_seed", "val_fraction", "limit_train_images")
    problems = []
    if tuple(held.get(k) for k in keys) != settings:
        problems.append(f"it records other split settings than the folds ({', '.join(keys)})")
    if hashlib.sha256("\n".join(patients).encode()).hexdigest() != held.get("val_patients_sha256"):
        problems.append("its held-out patients do not match their sha256")
    if any(p.split("/", 1)[-1] in oof for p in patients):
        problems.append("some of its held-out patients are in the out-of-fold predictions")
    folded = sum(held.get("train_counts", []))
    if folded != sum(oof.values()):
        problems.append(f"its folds had {folded} images, the OOF predictions {sum(oof.values())}")
    if problems:
        raise DatasetError(
            f"{cv_dir / CV_FILE}: holdout_split does not describe this cross-validation: "
            f"{'; '.join(problems)}; the folder changed after `pneumocxr cv` wrote it: re-run it in a new one"
        )
    logger.info("%s: %d patients held out of every fold (from %s)", cv_dir, len(patients), CV_FILE)
    return {**held, "kind": "cv-holdout"}


def members_rule(payloads: Sequence[dict[str, Any]]) -> str:
    """The threshold rule every member's training used (``train.threshold_rule``), else youden."""
    used = set()
    for payload in payloads:
        operating = (payload.get("extra") or {}).get("operating_point") or {}
        used.add(operating.get("threshold_rule") if isinstance(operating, dict) else None)
    rule = used.pop() if len(used) == 1 else None
    return rule if rule in THRESHOLD_RULES else "youden"


def _class_counts(records: Sequence[ImageRecord]) -> list[int]:
    n_pos = sum(1 for r in records if r.label == PNEUMONIA)
    return [len(records) - n_pos, n_pos]


def _validation_calibration(
    payloads: list[dict[str, Any]],
    names: list[str],
    data_root: str | os.PathLike | None,
    tta: bool,
    device: str,
    batch_size: int,
    cache_dir: str | os.PathLike | None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """The members' shared validation images, predicted by the ensemble itself."""
    splits = [p.get("extra", {}).get("split") for p in payloads]
    missing = [n for n, s in zip(names, splits) if not isinstance(s, dict) or not s.get("val_patients")]
    if missing:
        raise CheckpointError(
            f"{', '.join(missing)} record(s) no validation split, so the ensemble's threshold cannot be "
            "chosen on images they did not train on; use checkpoints `pneumocxr train` wrote, or a cv folder"
        )
    hashes = {s["val_patients_sha256"] for s in splits}
    if len(hashes) > 1:
        raise CheckpointError(
            f"the members were validated on different patients ({', '.join(names)}), so some member trained "
            "on images another one validates on; train them with the same data.root, data.split_seed and "
            "data.val_fraction, or combine the folds of one `pneumocxr cv` folder"
        )
    split = splits[0]
    root = Path(data_root) if data_root is not None else Path(split["source"])
    wanted = set(split["val_patients"])
    records = [r for r in discover(root).in_split("train") if f"{r.split}/{r.patient_id}" in wanted]
    if len(records) != sum(split["val_counts"]):
        raise DatasetError(
            f"{root}: found {len(records)} images of the recorded validation patients, the members recorded "
            f"{sum(split['val_counts'])}; pass --data with the folder they were trained on"
        )
    members = [rebuild_model(p, n) for p, n in zip(payloads, names)]
    predictors = [
        Predictor(TTAModel(model) if tta else model, meta, device=device, batch_size=batch_size)
        for model, meta in members
    ]
    first = members[0][1]
    meta = CheckpointMeta(
        path="(ensemble being created)",
        model_name="ensemble",
        model_kwargs={"members": names},
        preprocess=first.preprocess,
        class_names=first.class_names,
    )
    cache = None
    if cache_dir is not None:
        cache = PreprocessedCache(cache_dir, first.preprocess.image_size, first.preprocess.resize_mode)
    batch = EnsemblePredictor(predictors, meta, tta=tta).predict_records(records, cache=cache)
    y = np.array([r.label for r in records], dtype=np.int64)
    # the members' own record (patients, counts, hash): `evaluate --split validation` rebuilds it
    info = {
        **split,
        "kind": "validation",
        "source": str(root.expanduser().resolve()),
        "n_images": len(records),
    }
    return y, batch.calibrated_probability, info
