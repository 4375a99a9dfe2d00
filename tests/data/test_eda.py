"""``run_eda``: every plot and the numbers behind it, consistent with the data."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pneumocxr.data.discovery import Dataset, discover
from pneumocxr.data.eda import run_eda
from pneumocxr.errors import ConfigError

PLOTS = (
    "dataset_distribution.png",
    "image_sizes.png",
    "intensity_histograms.png",
    "mean_images.png",
    "sample_grid.png",
)
RESULTS = (
    "eda_class_distribution.csv",
    "eda_sublabel_distribution.csv",
    "eda_image_sizes.csv",
    "eda_intensity_histograms.csv",
    "eda_mean_images.npz",
    "eda_sample_grid.csv",
    "eda_summary.json",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def eda(kermany_tree, tmp_path):
    dataset = discover(kermany_tree)
    summary = run_eda(dataset, tmp_path / "out", image_size=32, samples_per_class=3, seed=1, workers=1)
    return dataset, summary, tmp_path / "out"


def test_every_plot_and_data_file_is_written(eda):
    _, summary, out = eda
    for name in PLOTS:
        assert (out / "plots" / name).read_bytes()[:8] == PNG_MAGIC, name
    for name in RESULTS:
        assert (out / "results" / name).stat().st_size > 0, name
    assert sorted(Path(p).name for p in summary.plots) == sorted(PLOTS)
    assert sorted(Path(p).name for p in summary.results) == sorted(RESULTS)


def test_class_distribution_csv_matches_the_dataset(eda):
    dataset, summary, out = eda
    rows = _rows(out / "results" / "eda_class_distribution.csv")
    table: dict[str, dict[str, int]] = {}
    for row in rows:
        table.setdefault(row["split"], {})[row["class"]] = int(row["count"])
    assert table == dataset.counts() == summary.counts
    sub = {
        (r["split"], r["sublabel"]): int(r["count"])
        for r in _rows(out / "results" / "eda_sublabel_distribution.csv")
    }
    assert sub[("train", "bacterial")] + sub[("train", "viral")] == table["train"]["PNEUMONIA"]


def test_image_sizes_come_from_every_header(eda):
    dataset, summary, out = eda
    rows = _rows(out / "results" / "eda_image_sizes.csv")
    assert len(rows) == len(dataset.records)
    assert {(r["width"], r["height"], r["format"]) for r in rows} == {("48", "40", "JPEG")}
    assert summary.sizes["aspect_ratio_median"] == pytest.approx(48 / 40)


def test_intensity_histograms_count_every_pixel_of_every_image(eda):
    dataset, summary, out = eda
    rows = _rows(out / "results" / "eda_intensity_histograms.csv")
    assert len(rows) == 256
    for name in ("NORMAL", "PNEUMONIA"):
        n_images = sum(1 for r in dataset.records if r.label == ("NORMAL", "PNEUMONIA").index(name))
        assert sum(int(r[f"{name}_count"]) for r in rows) == n_images * 32 * 32
        assert sum(float(r[f"{name}_fraction"]) for r in rows) == pytest.approx(1.0, abs=1e-4)
        assert summary.intensity[name]["images"] == n_images
    # the synthetic PNEUMONIA images carry a bright blob: brighter on average
    assert summary.intensity["PNEUMONIA"]["mean"] > summary.intensity["NORMAL"]["mean"]


def test_mean_images_show_the_class_difference(eda):
    _, _, out = eda
    with np.load(out / "results" / "eda_mean_images.npz") as npz:
        normal, pneumonia = npz["NORMAL"], npz["PNEUMONIA"]
        assert int(npz["count_NORMAL"]) == int(npz["count_PNEUMONIA"]) == 36
    assert normal.shape == pneumonia.shape == (32, 32)
    assert normal.min() >= 0.0 and pneumonia.max() <= 1.0
    centre = (slice(10, 22), slice(10, 22))
    assert pneumonia[centre].mean() > normal[centre].mean() + 0.1


def test_sample_grid_is_seeded_and_lists_existing_files(eda, tmp_path):
    dataset, _, out = eda
    rows = _rows(out / "results" / "eda_sample_grid.csv")
    assert [r["class"] for r in rows] == ["NORMAL"] * 3 + ["PNEUMONIA"] * 3
    assert all(Path(r["path"]).is_file() for r in rows)
    again = tmp_path / "again"
    run_eda(dataset, again, image_size=32, samples_per_class=3, seed=1, workers=1, cache_dir=out / "cache")
    assert _rows(again / "results" / "eda_sample_grid.csv") == rows


def test_unreadable_image_is_listed_and_left_out(kermany_tree, tmp_path):
    bad = kermany_tree / "train" / "NORMAL" / "IM-0199-0001.jpeg"
    bad.write_bytes(b"not an image")
    summary = run_eda(discover(kermany_tree), tmp_path / "out", image_size=16, samples_per_class=2, workers=1)
    assert [Path(u["path"]).name for u in summary.unreadable] == [bad.name]
    assert summary.intensity["NORMAL"]["images"] == 36  # 37 files, one unreadable
    saved = json.loads((tmp_path / "out" / "results" / "eda_summary.json").read_text())
    assert saved["unreadable"][0]["reason"]
    assert len(_rows(tmp_path / "out" / "results" / "eda_image_sizes.csv")) == 72


def test_zero_samples_per_class_is_a_config_error(kermany_tree, tmp_path):
    with pytest.raises(ConfigError, match="samples_per_class"):
        run_eda(discover(kermany_tree), tmp_path / "out", samples_per_class=0)


@pytest.mark.realdata
@pytest.mark.slow
def test_real_data_subset_eda(shared_data, tmp_path):
    full = discover(shared_data / "chest_xray")
    subset = replace(full, records=full.records[::20])  # every 20th image: both splits and classes
    assert isinstance(subset, Dataset)
    summary = run_eda(subset, tmp_path / "out", image_size=64, workers=1)
    assert summary.n_images == len(subset.records)
    assert not summary.unreadable
    sizes = _rows(tmp_path / "out" / "results" / "eda_image_sizes.csv")
    assert len(sizes) == len(subset.records)
    assert {r["format"] for r in sizes} == {"JPEG"}
    assert 0.5 < summary.sizes["fraction_224x224"] < 0.9  # 70% of the release is 224×224
    for name in PLOTS:
        assert (tmp_path / "out" / "plots" / name).is_file()
