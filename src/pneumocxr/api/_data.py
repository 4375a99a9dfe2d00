"""Datasets: ``discover``, ``patient_sample``, ``check_dataset`` (``pneumocxr data check``) and
``eda`` (``pneumocxr data eda``)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pneumocxr.api._display import Figures, render_table, to_frame
from pneumocxr.data.discovery import Dataset
from pneumocxr.data.discovery import discover as _discover
from pneumocxr.data.splits import patient_split
from pneumocxr.errors import ConfigError, DatasetError
from pneumocxr.labels import CLASS_NAMES

if TYPE_CHECKING:  # the check (imagehash) and EDA (matplotlib) modules load when those calls run
    from pneumocxr.data.check import CheckReport
    from pneumocxr.data.eda import EdaSummary

__all__ = ["DataCheck", "EdaResult", "check_dataset", "discover", "eda", "patient_sample"]

DataLike = str | os.PathLike | Dataset


def discover(root: str | os.PathLike) -> Dataset:
    """Find the labelled images of a dataset: the folder, CSV manifest or .npz every command reads.

    Args:
        root: a Kermany-layout folder (``train/NORMAL``, ``train/PNEUMONIA``, optional ``val/``,
            ``test/``), a CSV manifest (``path,label[,patient_id][,split]``) or a MedMNIST ``.npz``.

    Returns:
        The ``Dataset``: ``records`` (one ``ImageRecord`` per image, with its patient id),
        ``splits()`` and ``counts()`` (split → class → images).

    Raises:
        DatasetError: nothing usable at ``root`` (the message names the supported layouts).

    Example:
        >>> data = pneumocxr.discover("data/chest_xray")  # doctest: +SKIP
        >>> data.counts()["train"]  # doctest: +SKIP
        {'NORMAL': 1341, 'PNEUMONIA': 3875}
    """
    return _discover(root)


def _dataset(data: DataLike) -> Dataset:
    return data if isinstance(data, Dataset) else _discover(data)


def patient_sample(
    data: DataLike, n_images: int, manifest: str | os.PathLike, *, split: str = "train", seed: int = 0
) -> Dataset:
    """A smaller copy of a dataset for a quick run: about ``n_images`` images of ``split``, whole
    patients at a time and each class in its share, written as a CSV manifest every command reads.

    The images stay where they are: the manifest lists their paths (``path,label,patient_id,split``).
    Patients are drawn with the splitter training uses for its validation split, so no patient is
    cut in two.

    Args:
        data: a dataset path or a ``Dataset`` from ``discover``.
        n_images: how many images to keep, about (whole patients); ``0`` keeps every image of ``split``.
        manifest: the CSV file to write (its folder is created).
        split: the split to sample (default ``train``); the sample is ``train`` in the manifest.
        seed: which patients are drawn (same seed, same sample).

    Returns:
        The sample as a ``Dataset`` read back from ``manifest``; pass ``manifest`` (or
        ``dataset.root``) wherever a data path goes, e.g. ``{"data.root": str(manifest)}`` in ``train``.

    Raises:
        DatasetError: ``data`` has no such split, or cannot be read.
        ConfigError: ``n_images`` is negative.

    Example:
        >>> small = pneumocxr.patient_sample("data/chest_xray", 300, "work/sample.csv")  # doctest: +SKIP
        >>> small.counts()  # doctest: +SKIP
        {'train': {'NORMAL': 78, 'PNEUMONIA': 222}}
    """
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 0:
        raise ConfigError(f"n_images={n_images!r}; use a whole number >= 0 (0 = every image)")
    dataset = _dataset(data)
    records = dataset.in_split(split)
    if not records:
        present = ", ".join(dataset.splits()) or "none"
        raise DatasetError(f"{dataset.root}: no {split!r} split to sample (splits present: {present})")
    if any(r.member for r in records):
        raise DatasetError(
            f"{dataset.root}: an array archive cannot be listed in a manifest; sample a folder"
        )
    if n_images and n_images < len(records):
        _, records = patient_split(records, val_fraction=n_images / len(records), seed=seed)
    path = Path(manifest)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "label", "patient_id", "split"))
        writer.writerows(
            (str(r.path.resolve()), CLASS_NAMES[r.label], r.patient_id, "train") for r in records
        )
    return _discover(path)


@dataclass(frozen=True)
class DataCheck:
    """What ``check_dataset`` found: ``ok`` (every image decoded), the counts (``rows``,
    ``to_frame()``), and ``report``, the full ``CheckReport`` (``report.to_dict()`` is the JSON of
    ``pneumocxr data check --json``). ``print()`` it for the command's summary.

    Example:
        >>> check.ok, len(check.report.leaking_groups)  # doctest: +SKIP
    """

    report: CheckReport

    @property
    def ok(self) -> bool:
        """True when every image decoded (duplicates are reported, not failures)."""
        return self.report.ok

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Images per split and class, one row per split (with bacterial/viral counts)."""
        return [
            {"split": split, **per_class, **self.report.sublabel_counts.get(split, {})}
            for split, per_class in self.report.counts.items()
        ]

    def to_frame(self) -> Any:
        """``rows`` as a pandas DataFrame indexed by split (needs pandas)."""
        return to_frame(self.rows, index="split")

    def __str__(self) -> str:
        from pneumocxr.data.check import format_report

        return format_report(self.report, full="report.to_dict()")

    def __repr__(self) -> str:
        r = self.report
        return (
            f"DataCheck({r.root!r}: {r.n_images} images, {len(r.unreadable)} unreadable, "
            f"{len(r.leaking_groups)} duplicate groups across splits)"
        )

    def _repr_html_(self) -> str:
        r = self.report
        columns = list(self.rows[0]) if self.rows else ["split"]
        notes = [
            f"unreadable files: {len(r.unreadable)}",
            f"exact duplicate groups: {len(r.exact_groups)}; near duplicate groups: {len(r.near_groups)}",
            f"duplicate groups across splits (leakage): {len(r.leaking_groups)}; "
            f"with conflicting labels: {len(r.label_conflicts)}",
            f"patient ids in more than one split: {len(r.shared_patients)} (information only)",
        ]
        rows = [[row.get(c, 0) for c in columns] for row in self.rows]
        caption = f"{r.root} ({r.layout} layout): {r.n_images:,} images, checked in {r.seconds:.1f} s"
        return render_table(caption=caption, columns=columns, rows=rows, notes=notes)


def check_dataset(
    data: DataLike, *, near_threshold: int | None = None, workers: int | None = None
) -> DataCheck:
    """Count the images, find the unreadable ones, duplicates and patients shared between splits
    (``pneumocxr data check``).

    Args:
        data: a dataset path (folder, CSV manifest, .npz) or a ``Dataset``.
        near_threshold: the largest Hamming distance between 256-bit perceptual hashes still called
            a near duplicate (None: the command's default, 24).
        workers: decoding processes (None = one per CPU).

    Returns:
        A ``DataCheck``: ``ok``, ``rows``/``to_frame()`` (counts), ``report`` (everything);
        ``print()`` it for the CLI's summary; Jupyter shows a table. An image that cannot be
        decoded is listed in the report, not raised.

    Raises:
        DatasetError: nothing usable at ``data``.
        ConfigError: a bad ``near_threshold``.

    Example:
        >>> check = pneumocxr.check_dataset("data/chest_xray")  # doctest: +SKIP
        >>> check.ok, check.report.leaking_groups  # doctest: +SKIP
        (True, [])
    """
    from pneumocxr.data.check import check_dataset as _check_dataset
    from pneumocxr.data.duplicates import DEFAULT_NEAR_THRESHOLD

    threshold = DEFAULT_NEAR_THRESHOLD if near_threshold is None else near_threshold
    return DataCheck(_check_dataset(_dataset(data), near_threshold=threshold, workers=workers))


@dataclass(frozen=True)
class EdaResult:
    """What ``eda`` measured (``summary``, as ``results/eda_summary.json``: counts, sizes, intensity
    statistics, files written) and drew (``figures``: name → matplotlib Figure).

    Example:
        >>> result.figures["dataset_distribution"]  # doctest: +SKIP
    """

    summary: EdaSummary
    out_dir: Path

    @property
    def figures(self) -> Figures:
        """name → Figure: dataset_distribution, image_sizes, intensity_histograms, mean_images,
        sample_grid (those that were drawn)."""
        return Figures({Path(p).stem: p for p in self.summary.plots})

    def __str__(self) -> str:
        from pneumocxr.data.eda import format_summary

        return format_summary(self.summary)

    def __repr__(self) -> str:
        return f"EdaResult({self.summary.n_images} images, figures: {', '.join(self.figures)})"

    def _repr_html_(self) -> str:
        s = self.summary
        columns = ["split", *CLASS_NAMES]
        rows = [[split, *(c.get(name, 0) for name in CLASS_NAMES)] for split, c in s.counts.items()]
        notes = [
            f"{name}: mean intensity {v['mean']:.3f} (std {v['std']:.3f})" for name, v in s.intensity.items()
        ]
        notes.append(f"figures: {', '.join(self.figures)} (result.figures[name]); data in {self.out_dir}")
        caption = f"EDA of {s.n_images:,} images from {s.root} ({s.seconds:.1f} s)"
        return render_table(caption=caption, columns=columns, rows=rows, notes=notes)


def eda(
    data: DataLike,
    out_dir: str | os.PathLike,
    *,
    image_size: int | None = None,
    samples_per_class: int = 4,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> EdaResult:
    """Explore a dataset (``pneumocxr data eda``): class balance, image sizes, intensity histograms,
    mean image per class and a sample grid — PNGs under ``out_dir/plots``, the numbers behind each
    under ``out_dir/results``.

    Args:
        data: a dataset path or a ``Dataset``.
        out_dir: output folder.
        image_size: square size for the intensity statistics and mean images (None: 224, the
            command's default); the decoded-image cache it fills (``cache_dir``, default
            ``out_dir/cache``) is reused by training at that size.
        samples_per_class: images per class in the sample grid (chosen by ``seed``).
        workers: decoding processes (None = one per CPU).

    Returns:
        An ``EdaResult``: ``summary`` (counts, sizes, intensities, files) and ``figures``
        (name → matplotlib Figure).

    Raises:
        DatasetError: nothing usable at ``data``. ConfigError: an unwritable ``out_dir`` or bad setting.

    Example:
        >>> result = pneumocxr.eda("data/chest_xray", "out/eda")  # doctest: +SKIP
        >>> result.figures["class_distribution"]  # doctest: +SKIP
    """
    from pneumocxr.data.eda import DEFAULT_IMAGE_SIZE, run_eda

    out = Path(out_dir)
    summary = run_eda(
        _dataset(data),
        out,
        image_size=DEFAULT_IMAGE_SIZE if image_size is None else image_size,
        samples_per_class=samples_per_class,
        seed=seed,
        cache_dir=cache_dir,
        workers=workers,
    )
    return EdaResult(summary, out)
