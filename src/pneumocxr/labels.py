"""Class names, tasks and sub-labels shared by every layer.

Binary task: index 0 = NORMAL, 1 = PNEUMONIA (the positive class, as in the Kermany release).
The sub-label (bacterial / viral) comes from file names and feeds the three-class task
``normal-bacterial-viral``: index 0 = NORMAL, 1 = BACTERIAL, 2 = VIRAL.
"""

CLASS_NAMES: tuple[str, ...] = ("NORMAL", "PNEUMONIA")
NORMAL = 0
PNEUMONIA = 1
POSITIVE_CLASS = "PNEUMONIA"

SUBLABEL_NORMAL = "normal"
SUBLABEL_BACTERIAL = "bacterial"
SUBLABEL_VIRAL = "viral"
SUBLABEL_UNKNOWN = "unknown"
SUBLABELS: tuple[str, ...] = (SUBLABEL_NORMAL, SUBLABEL_BACTERIAL, SUBLABEL_VIRAL)

SPLITS: tuple[str, ...] = ("train", "val", "test")

# -- tasks: what the labels of a run are. config.DataConfig.task names one of these. --
TASK_BINARY = "binary"
TASK_NORMAL_BACTERIAL_VIRAL = "normal-bacterial-viral"
THREE_CLASS_NAMES: tuple[str, ...] = ("NORMAL", "BACTERIAL", "VIRAL")
# Index i of THREE_CLASS_NAMES is the class of sub-label SUBLABELS[i] (the same order on purpose).
TASK_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    TASK_BINARY: CLASS_NAMES,
    TASK_NORMAL_BACTERIAL_VIRAL: THREE_CLASS_NAMES,
}
TASKS: tuple[str, ...] = tuple(TASK_CLASS_NAMES)


def class_index(name: str) -> int:
    """Index of a class folder name, case-insensitive; ValueError if it is not a class."""
    upper = name.upper()
    if upper not in CLASS_NAMES:
        raise ValueError(f"{name!r} is not one of {CLASS_NAMES}")
    return CLASS_NAMES.index(upper)


def task_class_names(task: str) -> tuple[str, ...]:
    """The class names of ``task`` in index order; ValueError for an unknown task."""
    if task not in TASK_CLASS_NAMES:
        raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)}")
    return TASK_CLASS_NAMES[task]


def task_of_class_names(class_names: tuple[str, ...] | list[str]) -> str:
    """The task whose classes these are ("binary" for any two classes: older checkpoints and
    user-trained binary models may name them differently); "" when none matches."""
    names = tuple(str(c).upper() for c in class_names)
    if len(names) == 2:
        return TASK_BINARY
    for task, known in TASK_CLASS_NAMES.items():
        if names == known:
            return task
    return ""


def sublabel_class(sublabel: str) -> int | None:
    """Three-class index of a sub-label (normal 0, bacterial 1, viral 2); None for "unknown"."""
    return SUBLABELS.index(sublabel) if sublabel in SUBLABELS else None
