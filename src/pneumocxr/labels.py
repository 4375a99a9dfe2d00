"""Class names and sub-labels shared by every layer.

Binary task: index 0 = NORMAL, 1 = PNEUMONIA (the positive class, as in the Kermany release).
The sub-label (bacterial / viral) comes from file names and feeds the three-class task.
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


def class_index(name: str) -> int:
    """Index of a class folder name, case-insensitive; ValueError if it is not a class."""
    upper = name.upper()
    if upper not in CLASS_NAMES:
        raise ValueError(f"{name!r} is not one of {CLASS_NAMES}")
    return CLASS_NAMES.index(upper)
