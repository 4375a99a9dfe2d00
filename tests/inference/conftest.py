"""Tiny checkpoints (custom_cnn at 32 px) and datasets for the inference tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pneumocxr.labels import task_class_names
from pneumocxr.models import create_model, save_checkpoint

IMAGE_SIZE = 32


def write_checkpoint(
    path: Path,
    *,
    seed: int = 0,
    threshold: float = 0.5,
    temperature: float = 1.0,
    in_channels: int = 1,
    extra: dict | None = None,
    task: str = "binary",
    prepare: Callable[[torch.nn.Module], None] | None = None,
) -> Path:
    """An untrained but deterministic custom_cnn checkpoint; its logits differ between images.

    ``task``: labels.TASKS; a k-class task gets k logits and its own class names (one helper for the
    binary and the three-class tests of inference and explain). ``prepare(model)``: changes the
    freshly built model in place before it is saved (e.g. test_onnx's spread logits).
    """
    torch.manual_seed(seed)
    kwargs = {"image_size": IMAGE_SIZE, "in_channels": in_channels}
    if task != "binary":
        kwargs["num_classes"] = len(task_class_names(task))
    model = create_model("custom_cnn", **kwargs)
    if prepare is not None:
        prepare(model)
    return save_checkpoint(
        path,
        model,
        model_name="custom_cnn",
        model_kwargs=kwargs,
        preprocess=model.spec.preprocess,
        class_names=task_class_names(task),
        task=task,
        threshold=threshold,
        temperature=temperature,
        extra=extra,
    )


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one intra-op thread is faster and does not fight other jobs for the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
