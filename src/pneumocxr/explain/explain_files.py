"""``explain_images``: the one library call behind ``pneumocxr explain`` — a checkpoint or an
ensemble file, dispatched to ``images`` (one model) or ``ensemble`` (members' maps averaged)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from pneumocxr.data.image_files import collect_inputs
from pneumocxr.explain.cam import check_method
from pneumocxr.explain.ensemble import explain_ensemble_images
from pneumocxr.explain.images import ExplainRun, explain_each, explain_file
from pneumocxr.models import load_checkpoint
from pneumocxr.models.ensemble_file import is_ensemble_file

__all__ = ["explain_images"]


def explain_images(
    checkpoint: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    method: str = "gradcam",
    target: str = "predicted",
    device: str | torch.device = "cpu",
) -> ExplainRun:
    """Explain every image in ``inputs`` (files or folders) with the model in ``checkpoint``.

    An image that cannot be decoded is reported in ``failures`` and the others are still explained.
    """
    check_method(method)
    files = collect_inputs(inputs)
    # -- ensembles (models/ensemble_file.py): members' maps for the ensemble's decision, averaged --
    if is_ensemble_file(checkpoint):
        return explain_ensemble_images(
            checkpoint, files, out_dir, method=method, target=target, device=device
        )
    model, meta = load_checkpoint(checkpoint, map_location=device)
    model.to(device)
    return explain_each(
        files, out_dir, lambda path, stem: explain_file(model, meta, path, stem, method=method, target=target)
    )
