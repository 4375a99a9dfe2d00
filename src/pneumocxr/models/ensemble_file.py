"""The ensemble file: several self-describing checkpoints in one, still plain data.

Why a file format of its own, here in ``models``: ``inference`` (predict, evaluate, compare) and
``explain`` must both open an ensemble like a single checkpoint, and ``models`` is the layer both may
import. The members' checkpoint payloads are EMBEDDED (not referenced by path): an ensemble keeps
working when the run folders are moved or deleted, and its sha256 identifies every weight in it.
Each member's source path and sha256 are recorded too, for provenance.

Layout (``torch.load(path, weights_only=True)``: dicts, lists, strings, numbers, tensors only)::

    format "pneumocxr.ensemble", format_version 1
    members        [checkpoint payload, …]   each exactly what ``save_checkpoint`` writes
    member_names   ["fold0", …]
    class_names, threshold (on the MEAN of the members' calibrated probabilities), temperature 1.0
    metrics, config, extra (combine rule, operating point, conformal calibration data, split, tta …)
    versions, created

Each member is rebuilt by ``models.checkpoint.rebuild_model``, the loader a single checkpoint uses.
How members are combined lives in ``inference.ensemble`` (the mean of calibrated probabilities).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pneumocxr.errors import CheckpointError
from pneumocxr.models.checkpoint import FORMAT as CHECKPOINT_FORMAT
from pneumocxr.models.checkpoint import (
    CheckpointMeta,
    decision_problem,
    meta_from_payload,
    payload_record,
    read_payload,
    rebuild_model,
    write_atomic,
)
from pneumocxr.models.registry import PneumoModel

logger = logging.getLogger(__name__)

ENSEMBLE_FORMAT = "pneumocxr.ensemble"
ENSEMBLE_VERSION = 1
ENSEMBLE_MODEL_NAME = "ensemble"  # CheckpointMeta.model_name of an ensemble


def read_file(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """The raw dict of a checkpoint or ensemble file, read as data only (``weights_only=True``)."""
    data = read_payload(path, mmap=mmap)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a pneumocxr checkpoint or ensemble")
    return data


def is_ensemble_file(path: str | os.PathLike) -> bool:
    """True for an ensemble file. Cheap: the tensors are memory-mapped, not read."""
    try:
        return read_file(path, mmap=True).get("format") == ENSEMBLE_FORMAT
    except (CheckpointError, RuntimeError):
        return False  # let the ordinary loader report what is wrong with the file


def checkpoint_payload(path: str | os.PathLike) -> dict[str, Any]:
    """A single checkpoint's raw payload (to embed in an ensemble); refuses ensembles and other files."""
    data = read_file(path)
    if data.get("format") == ENSEMBLE_FORMAT:
        raise CheckpointError(
            f"{path} is itself an ensemble; list its member checkpoints instead of nesting ensembles"
        )
    if data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a pneumocxr checkpoint")
    rebuild_model(data, str(path))  # the weights must fit the model: fail now, not at use
    return data


def save_ensemble(
    path: str | os.PathLike,
    members: Sequence[dict[str, Any]],
    member_names: Sequence[str],
    *,
    threshold: float,
    metrics: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write an ensemble of checkpoint payloads atomically (temp file + ``os.replace``)."""
    if not members or len(members) != len(member_names):
        raise CheckpointError(
            f"an ensemble needs one name per member; got {len(members)} and {len(member_names)}"
        )
    classes = {tuple(m["class_names"]) for m in members}
    if len(classes) != 1:
        raise CheckpointError(f"members predict different classes {sorted(classes)}; combine only one task")
    problem = decision_problem(threshold, 1.0)
    if problem:  # the same rule as on load: what load_ensemble would refuse is never written
        raise CheckpointError(f"cannot save ensemble {path}: {problem}")
    payload = {
        "format": ENSEMBLE_FORMAT,
        "format_version": ENSEMBLE_VERSION,
        "members": list(members),
        "member_names": [str(n) for n in member_names],
        "class_names": list(next(iter(classes))),
        "threshold": float(threshold),
        "temperature": 1.0,  # the members' temperatures are applied before averaging
        **payload_record(metrics, config, extra),
    }
    path = write_atomic(path, payload)
    logger.info("saved ensemble %s (%d members)", path, len(members))
    return path


def load_ensemble(path: str | os.PathLike) -> tuple[list[tuple[PneumoModel, CheckpointMeta]], CheckpointMeta]:
    """(members as (model, meta), the ensemble's own meta) from an ensemble file, as data only.

    The ensemble meta's ``preprocess`` is the first member's (each member keeps its own);
    ``model_name`` is ``"ensemble"``; ``model_kwargs`` lists the member names and architectures.
    """
    path = Path(path)
    data = read_file(path)
    if data.get("format") != ENSEMBLE_FORMAT:
        raise CheckpointError(f"{path}: not a pneumocxr ensemble (load it with load_checkpoint)")
    if int(data.get("format_version", 0)) > ENSEMBLE_VERSION:
        raise CheckpointError(
            f"{path}: ensemble format {data['format_version']} is newer than this pneumocxr understands "
            f"({ENSEMBLE_VERSION}); upgrade pneumocxr"
        )
    missing = [k for k in ("class_names", "threshold") if k not in data]
    if missing:
        raise CheckpointError(f"{path}: ensemble lacks {', '.join(missing)}; it is incomplete")
    names = list(data.get("member_names", []))
    payloads = list(data.get("members", []))
    if not payloads or len(names) != len(payloads):
        raise CheckpointError(f"{path}: ensemble has no members or mismatched member names; it is incomplete")
    members = [rebuild_model(p, f"{path}#{name}") for p, name in zip(payloads, names)]
    meta = meta_from_payload(
        data,
        str(path),
        model_name=ENSEMBLE_MODEL_NAME,
        model_kwargs={"members": names, "architectures": [m.model_name for _, m in members]},
        preprocess=members[0][1].preprocess,
    )
    return members, meta


__all__ = [
    "ENSEMBLE_FORMAT",
    "ENSEMBLE_MODEL_NAME",
    "checkpoint_payload",
    "is_ensemble_file",
    "load_ensemble",
    "read_file",
    "save_ensemble",
]
