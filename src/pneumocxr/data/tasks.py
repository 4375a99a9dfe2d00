"""Records labelled for a task: the class folders (binary) or the file names' sub-labels (three classes).

Discovery labels every record by its class folder (0 NORMAL, 1 PNEUMONIA) and parses a sub-label
from its file name (``labels.SUBLABELS`` or ``unknown``). For the ``normal-bacterial-viral`` task
the record's ``label`` becomes the three-class index (0 NORMAL, 1 BACTERIAL, 2 VIRAL); everything
else (path, patient, split, sub-label) stays. The binary task returns the records unchanged, so
binary runs see exactly what they saw before tasks existed.

Why a PNEUMONIA image whose cause is unknown is an error and not silently dropped: leaving images
out changes the data a model is trained or judged on without anyone deciding so, and guessing a
cause poisons the labels. Every image of the Kermany train split names its cause
(``personN_bacteria_M`` / ``personN_virus_M``; measured: 2530 bacterial, 1345 viral, 0 unknown), so
the error only fires on data named otherwise, and it says which files and how to fix them.

The labels of a record set then feed the same patient-level splitter as the binary task, so the
carved validation split is stratified on the three-class label (``data.splits`` stratifies on the
record label; a patient with both bacterial and viral films, which the Kaggle names allow, is
stratified as BACTERIAL and stays whole).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from pneumocxr.data.records import ImageRecord
from pneumocxr.errors import DatasetError
from pneumocxr.labels import (
    TASK_BINARY,
    TASK_NORMAL_BACTERIAL_VIRAL,
    TASKS,
    sublabel_class,
)

SHOWN_FILES = 5  # unknown-cause files named in the error message


def label_for_task(records: Sequence[ImageRecord], task: str, *, where: str = "") -> list[ImageRecord]:
    """``records`` with ``label`` set to the class index of ``task`` (see the module docstring).

    DatasetError naming the files (the first few and the count) when any image has no known
    sub-label for a three-class task. ``where`` names the data in that message (e.g. a folder).
    """
    if task == TASK_BINARY:
        return list(records)
    if task != TASK_NORMAL_BACTERIAL_VIRAL:
        raise DatasetError(f"task {task!r} is not known; use one of {', '.join(TASKS)}")
    unknown = [r for r in records if sublabel_class(r.sublabel) is None]
    if unknown:
        shown = ", ".join(r.display_name for r in unknown[:SHOWN_FILES])
        more = f" and {len(unknown) - SHOWN_FILES} more" if len(unknown) > SHOWN_FILES else ""
        place = f" in {where}" if where else ""
        raise DatasetError(
            f"{len(unknown)} of {len(records)} images{place} have no bacterial/viral sub-label in their "
            f"file name ({shown}{more}); the {task} task needs it: name PNEUMONIA files "
            "personN_bacteria_M / personN_virus_M (or Mendeley's BACTERIA-… / VIRUS-…), remove those "
            "images, or use the binary task"
        )
    return [replace(r, label=sublabel_class(r.sublabel)) for r in records]


__all__ = ["label_for_task"]
