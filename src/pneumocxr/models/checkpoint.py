"""Self-describing checkpoints: a checkpoint is data, never code.

One file holds everything needed to rebuild and use a model: registry name + kwargs, the
state_dict, the Preprocess (as a dict), the task and its class names, decision threshold,
temperature, metrics, config and library versions. Only tensors, dicts, lists, str, int, float,
bool and None go in, so it loads with ``torch.load(path, weights_only=True)`` — no pickled
classes, nothing to execute. Writes are atomic (temp file + ``os.replace``): a crash mid-save
leaves the previous checkpoint intact, which is what ``--resume`` relies on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pneumocxr.config import Preprocess, from_dict, to_dict
from pneumocxr.errors import CheckpointError, ConfigError
from pneumocxr.labels import TASKS, task_of_class_names
from pneumocxr.models.registry import PneumoModel, create_model, num_logits

logger = logging.getLogger(__name__)

FORMAT = "pneumocxr.checkpoint"
FORMAT_VERSION = 1
_REQUIRED = ("model_name", "model_kwargs", "state_dict", "preprocess", "class_names")


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything in a checkpoint except the weights."""

    path: str  # the file it was read from
    model_name: str  # registry name
    model_kwargs: dict[str, Any]  # kwargs for create_model
    preprocess: Preprocess  # how to turn pixels into this model's input
    class_names: tuple[str, ...]  # index → class name; binary: the logit is for class_names[1]
    threshold: float = 0.5  # decision threshold on the (calibrated) positive probability
    temperature: float = 1.0  # logits are divided by this before the sigmoid/softmax
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""  # UTC time of writing, ISO 8601
    # "binary" or "normal-bacterial-viral" (labels.TASKS); checkpoints written before tasks existed
    # are binary. A k-class checkpoint decides by argmax: ``threshold`` does not apply to it.
    task: str = "binary"


def library_versions() -> dict[str, str]:
    """Versions that matter for reproducing a checkpoint (read from metadata, nothing imported).

    pneumocxr's own is ``pneumocxr.__version__``: the version ``--version``, the model card and the
    HTTP API (``GET /v1/model``) report, so a checkpoint and the service that loads it compare equal.
    """
    from pneumocxr._version import __version__

    versions = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "timm"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    versions["pneumocxr"] = __version__
    return versions


def _plain(value: Any, where: str) -> Any:
    """``value`` as types ``weights_only=True`` accepts, or a CheckpointError naming the key."""
    if value is None:
        return None
    for kind in (bool, int, float, str):  # exact builtins: np.float64 is a float subclass, and unpicklable
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalars
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(to_dict(value), where)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise CheckpointError(
        f"cannot store {where} of type {type(value).__name__} in a checkpoint; "
        "use numbers, strings, lists, dicts or tensors"
    )


def payload_record(
    metrics: dict[str, Any] | None, config: dict[str, Any] | None, extra: dict[str, Any] | None
) -> dict[str, Any]:
    """The part of a checkpoint or ensemble payload that records how it came about: metrics, config,
    extra (as plain data), library versions and the UTC time of writing."""
    return {
        "metrics": _plain(metrics or {}, "metrics"),
        "config": _plain(config or {}, "config"),
        "extra": _plain(extra or {}, "extra"),
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _check_consistent(model: nn.Module, model_name: str, model_kwargs: dict, class_names: list) -> None:
    spec = getattr(model, "spec", None)
    if spec is None:
        raise CheckpointError("save_checkpoint needs a model built by pneumocxr.models.create_model")
    if spec.name != model_name or {**spec.default_kwargs, **model_kwargs} != spec.kwargs:
        raise CheckpointError(
            f"model_name={model_name!r}, model_kwargs={model_kwargs} do not describe the model being saved "
            f"({spec.name} with {spec.kwargs}); the checkpoint could not be rebuilt"
        )
    built_for = num_logits(spec.kwargs.get("num_classes", 2))
    if len(class_names) < 2 or num_logits(len(class_names)) != built_for:
        raise CheckpointError(f"class_names={class_names} do not match a model with {built_for} output(s)")


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    model_name: str,
    model_kwargs: dict[str, Any],
    preprocess: Preprocess,
    class_names: Sequence[str],
    threshold: float = 0.5,
    temperature: float = 1.0,
    metrics: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    task: str | None = None,
) -> Path:
    """Write a self-describing checkpoint atomically; returns its path.

    ``task``: labels.TASKS; None = the task whose classes ``class_names`` are.
    """
    problem = class_names_problem(class_names) or decision_problem(threshold, temperature)
    if problem:  # what load_checkpoint would refuse is never written
        raise CheckpointError(f"cannot save {path}: {problem}")
    class_names = [str(c) for c in class_names]
    _check_consistent(model, model_name, dict(model_kwargs), class_names)
    task = _task(task, class_names)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "model_kwargs": _plain(dict(model_kwargs), "model_kwargs"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "preprocess": _plain(to_dict(preprocess), "preprocess"),
        "class_names": class_names,
        "task": task,
        "threshold": float(threshold),
        "temperature": float(temperature),
        **payload_record(metrics, config, extra),
    }
    path = write_atomic(path, payload)
    logger.info("saved checkpoint %s (%s)", path, model_name)
    return path


def write_atomic(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, then ``os.replace``: all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def read_payload(path: str | os.PathLike, *, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """The object in a .pt file, read as data only (``weights_only=True``); not yet checked."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; pass the .pt file a training run wrote")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated zip, bad pickle, refused (non-data) object
        raise CheckpointError(
            f"{path}: not a readable checkpoint, corrupt or truncated? ({type(exc).__name__}: {_reason(exc)})"
        ) from None


def _reason(exc: Exception) -> str:
    """One line of why torch.load failed: its weights-only refusal is a page of advice (to load
    with weights_only=False: never for a checkpoint) around one useful line."""
    text = str(exc).split("WeightsUnpickler error:")[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else "no detail"


def _read(path: Path, map_location: Any) -> dict[str, Any]:
    data = read_payload(path, map_location=map_location)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a pneumocxr checkpoint; for a plain state_dict use --set model.weights={path}"
        )
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {data['format_version']} is newer than this pneumocxr "
            f"understands ({FORMAT_VERSION}); upgrade pneumocxr"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}; it is incomplete")
    return data


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> tuple[PneumoModel, CheckpointMeta]:
    """Rebuild the model (eval mode) and its metadata from a checkpoint, reading it as data only."""
    path = Path(path)
    return rebuild_model(_read(path, map_location), str(path))


def rebuild_model(data: Mapping[str, Any], where: str) -> tuple[PneumoModel, CheckpointMeta]:
    """The model (eval mode) and meta of one checkpoint payload, from a file or embedded in an ensemble.

    ``where`` names the payload in errors and becomes ``meta.path``. Every way in (a file, an
    ensemble member) goes through here, so the checks and the meta fields cannot drift apart.
    """
    try:
        model = create_model(data["model_name"], **data["model_kwargs"])
        preprocess = from_dict(Preprocess, data["preprocess"], "preprocess")
        state_dict = data["state_dict"]
    except KeyError as exc:
        raise CheckpointError(f"{where}: checkpoint lacks {exc}; it is incomplete") from None
    except ConfigError as exc:  # unknown model name or option, bad preprocess
        raise CheckpointError(f"{where}: {exc}") from None
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).strip().splitlines()[:3])
        raise CheckpointError(f"{where}: weights do not fit model {data['model_name']} ({first})") from None
    model.eval()
    outputs = num_logits(model.spec.kwargs.get("num_classes", 2))
    classes = data.get("class_names")
    if isinstance(classes, (list, tuple)) and num_logits(max(1, len(classes))) != outputs:
        raise CheckpointError(
            f"{where}: class_names={list(classes)!r} do not match model {data['model_name']} with {outputs} "
            "output(s); the checkpoint is damaged or was edited: re-export or retrain it"
        )
    meta = meta_from_payload(
        data,
        where,
        model_name=data["model_name"],
        model_kwargs=dict(data["model_kwargs"]),
        preprocess=preprocess,
    )
    return model, meta


def meta_from_payload(
    data: Mapping[str, Any],
    where: str,
    *,
    model_name: str,
    model_kwargs: dict[str, Any],
    preprocess: Preprocess,
) -> CheckpointMeta:
    """The CheckpointMeta of a checkpoint or ensemble payload; the caller says what the model is."""
    class_names = _class_names(data, where)
    threshold, temperature = _decision_values(data, where)
    return CheckpointMeta(
        path=where,
        model_name=model_name,
        model_kwargs=model_kwargs,
        preprocess=preprocess,
        class_names=class_names,
        threshold=threshold,
        temperature=temperature,
        metrics=dict(data.get("metrics", {})),
        config=dict(data.get("config", {})),
        extra=dict(data.get("extra", {})),
        versions=dict(data.get("versions", {})),
        created=str(data.get("created", "")),
        task=str(data.get("task") or task_of_class_names(list(class_names)) or "custom"),
    )


_DAMAGED = "the checkpoint is damaged or was edited: re-export or retrain it"


def class_names_problem(class_names: Any) -> str:
    """What is wrong with ``class_names`` (empty when nothing): at least two distinct non-empty strings.

    An empty or repeated name makes a prediction unreadable ("" = PNEUMONIA?) and breaks every
    per-class table and the name → index lookups downstream.
    """
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
        return f"class_names={class_names!r} is not a list of class names"
    names = list(class_names)
    if len(names) < 2:
        return f"class_names={names!r}: need at least two classes"
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        return f"class_names={names!r}: {bad[0]!r} is not a non-empty string"
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        return f"class_names={names!r}: {', '.join(map(repr, repeated))} appears more than once"
    return ""


def _class_names(data: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """The payload's class names, or a CheckpointError naming ``where`` and the bad value."""
    problem = class_names_problem(data.get("class_names"))
    if problem:
        raise CheckpointError(f"{where}: {problem}; {_DAMAGED}")
    return tuple(data["class_names"])


def decision_problem(threshold: float, temperature: float) -> str:
    """What is wrong with a (threshold, temperature) pair (empty when nothing).

    A threshold outside (0, 1) or a temperature that is not a positive number would turn every
    prediction into one class, or into NaN, without a word.
    """
    if not (math.isfinite(threshold) and 0.0 < threshold < 1.0):
        return (
            f"threshold={threshold!r} is not a probability strictly between 0 and 1 (it would call every "
            "image one class)"
        )
    if not (math.isfinite(temperature) and temperature > 0):
        return f"temperature={temperature!r} must be a positive finite number (1.0 = uncalibrated)"
    return ""


def _decision_values(data: Mapping[str, Any], where: str) -> tuple[float, float]:
    """(threshold, temperature) of a payload (0.5 and 1.0 when absent), or a CheckpointError naming
    ``where`` and the value (``decision_problem``)."""
    try:
        threshold = float(data.get("threshold", 0.5))
        temperature = float(data.get("temperature", 1.0))
    except (TypeError, ValueError):
        raise CheckpointError(
            f"{where}: threshold={data.get('threshold')!r}, temperature={data.get('temperature')!r} are "
            "not numbers; the checkpoint is damaged: re-export or retrain it"
        ) from None
    problem = decision_problem(threshold, temperature)
    if problem:
        raise CheckpointError(f"{where}: {problem}; {_DAMAGED}")
    return threshold, temperature


def _task(task: str | None, class_names: list[str]) -> str:
    """The task to record: as given (checked against the classes), else inferred from them."""
    inferred = task_of_class_names(class_names)
    if task is None:
        return inferred or "custom"
    if task not in TASKS or inferred != task:
        raise CheckpointError(
            f"task={task!r} does not fit class_names={class_names}; use one of {', '.join(TASKS)} "
            "with its own classes (labels.TASK_CLASS_NAMES)"
        )
    return task
