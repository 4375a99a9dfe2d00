"""``model_card``: a checkpoint's Markdown model card (``pneumocxr model-card``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ModelCard", "model_card"]

PathLike = str | os.PathLike


@dataclass(frozen=True)
class ModelCard:
    """A model card: ``text`` (Markdown) and where it was written (``path``, None when not
    written). Jupyter renders the Markdown; ``print(card)`` shows the text.

    Example:
        >>> card.path, card.text.splitlines()[0]  # doctest: +SKIP
    """

    text: str
    path: Path | None = None

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        title = next((line.lstrip("# ") for line in self.text.splitlines() if line.startswith("#")), "")
        return f"ModelCard({title!r}, {len(self.text)} characters, path={self.path})"

    def _repr_markdown_(self) -> str:
        return self.text


def _folder(value: Any) -> Any:
    """An ``Evaluation`` or ``StressReport`` given where a folder goes: its output folder."""
    result = getattr(value, "result", None)
    if result is None:
        return value
    files = getattr(result, "files", {})
    if "stress_json" in files:
        return files["stress_json"]
    return getattr(result, "out_dir", value)


def model_card(
    checkpoint: PathLike,
    out_path: PathLike | None = None,
    *,
    evaluations: PathLike | Any | Sequence[PathLike | Any] | None = None,
    stress: PathLike | Any | None = None,
) -> ModelCard:
    """A Markdown model card (Mitchell et al. 2019) from what the checkpoint records — architecture,
    recipe, patient-level split, validation metrics, operating point — plus any evaluations and
    stress results given: intended use, limitations, ethical considerations (``pneumocxr model-card``).

    Args:
        checkpoint: ``best.pt``, its run folder or an ensemble file.
        out_path: the ``.md`` file to write (None: only return the text).
        evaluations: ``evaluate`` results or their output folders (test, external, or the optimistic
            validation: each is labelled by its split); one or a list.
        stress: a ``stress`` result, its output folder or its stress.json (None: the card says not run).

    Returns:
        A ``ModelCard``: ``text`` and ``path``; Jupyter renders the Markdown.

    Raises:
        CheckpointError: a missing or unreadable checkpoint. ConfigError: ``out_path`` cannot be written.

    Example:
        >>> card = pneumocxr.model_card("runs/cpu_fast", "cards/cpu_fast.md",  # doctest: +SKIP
        ...                             evaluations=ev)
        >>> card  # rendered in Jupyter  # doctest: +SKIP
    """
    from pneumocxr.training.model_card import build_model_card, write_model_card

    if evaluations is None:
        folders = None
    elif isinstance(evaluations, (str, os.PathLike)) or hasattr(evaluations, "result"):
        folders = [_folder(evaluations)]
    else:
        folders = [_folder(e) for e in evaluations]
    stress_path = _folder(stress) if stress is not None else None
    if out_path is None:
        return ModelCard(build_model_card(checkpoint, evaluation_dir=folders, stress=stress_path))
    path = write_model_card(checkpoint, out_path, evaluation_dir=folders, stress=stress_path)
    return ModelCard(path.read_text(encoding="utf-8"), path)
