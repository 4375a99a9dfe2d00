"""The unit every data function passes around: one labelled image and where it came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image. ``path`` is the file on disk; for an array archive (MedMNIST .npz)
    it is the archive and ``member`` names the array and row, e.g. ``"train_images[12]"``."""

    path: Path
    label: int  # index into labels.CLASS_NAMES (0 NORMAL, 1 PNEUMONIA)
    split: str  # "train" | "val" | "test" as found on disk (the carved validation split is separate)
    patient_id: str  # groups images of one patient within a release folder
    sublabel: str  # labels.SUBLABELS or "unknown"
    member: str | None = None  # row inside an array archive; None for ordinary image files

    @property
    def display_name(self) -> str:
        """What to print for this image in messages and tables."""
        return f"{self.path}[{self.member}]" if self.member else str(self.path)
