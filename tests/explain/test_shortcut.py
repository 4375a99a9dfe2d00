"""The shortcut check: occlusions touch only what they name, lung energy is a share, a model that
reads only the border is flagged and one that ignores it is not, and the CLI's errors are one line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pneumocxr.cli.main import main
from pneumocxr.config import Preprocess
from pneumocxr.data.records import ImageRecord
from pneumocxr.explain.shortcut import (
    band_mask,
    corner_mask,
    detect_marks,
    lung_energy,
    lung_mask,
    occlude_border,
    occlude_marks,
)
from pneumocxr.explain.shortcut_check import (
    ShortcutSettings,
    file_records,
    run_shortcut_check,
    sample_records,
    shortcut_check,
)
from pneumocxr.models import CheckpointMeta

SIZE = 32  # toy models' input side


def film(size: int = 224, seed: int = 0) -> np.ndarray:
    """(size, size) uint8: dark air in the outer 20 %, a textured grey body inside, bright frame."""
    rng = np.random.default_rng(seed)
    square = np.full((size, size), 20, np.uint8)
    inner = slice(size // 5, size - size // 5)
    square[inner, inner] = 120 + rng.integers(0, 40, (len(range(size)[inner]),) * 2, dtype=np.uint8)
    return square


def with_letter(square: np.ndarray, top: int = 30, left: int = 8) -> np.ndarray:
    """An "R"-ish bright mark (12 × 8 px, 2-px strokes) burned in at (top, left)."""
    out = square.copy()
    out[top : top + 12, left : left + 2] = 250  # stem
    out[top : top + 2, left : left + 8] = 250  # top bar
    out[top + 5 : top + 7, left : left + 8] = 250  # middle bar
    out[top : top + 7, left + 6 : left + 8] = 250  # bowl
    out[top + 7 : top + 12, left + 5 : left + 7] = 250  # leg
    return out


@pytest.mark.parametrize("fill", ["inpaint", "median", "reflect"])
@pytest.mark.parametrize("box", [None, (40, 0, 144, 224)])  # whole square; a letterboxed film
def test_border_occlusion_changes_only_the_band(fill, box):
    square = film()
    square[:, :4] = 255  # a bright frame: the band must change
    band = band_mask(square.shape, 0.08, box)
    out = occlude_border(square, 0.08, fill, box)
    assert out.dtype == np.uint8 and out.shape == square.shape
    np.testing.assert_array_equal(out[~band], square[~band])
    assert (out[band] != square[band]).any()
    if box is not None:  # the band lies on the film, not on the padding
        assert not band[:40].any() and band[40].all() and band[40 + 143].all()
        assert band[100, :18].all() and not band[100, 18:206].any()


def test_band_and_corner_masks_have_the_stated_size():
    band = band_mask((100, 100), 0.1)
    assert band.sum() == 100 * 100 - 80 * 80
    corners = corner_mask((100, 100), 0.15)
    assert corners.sum() == 4 * 15 * 15 and corners[0, 0] and corners[99, 99] and not corners[50, 50]


def test_detected_marks_are_the_letters_in_the_ring_and_nothing_else():
    clean = film()
    clean[100:140, 110:112] = 250  # a thin bright line in the middle: not a mark (interior)
    clean[0:60, 170:224] = 230  # a big bright shoulder in the ring: not a mark (too large)
    lettered = with_letter(clean)
    mask = detect_marks(lettered)
    letter = lettered != clean
    assert mask[letter].all()  # the whole letter is covered …
    assert mask.sum() < 400 and not mask[100:140, 100:120].any() and not mask[0:60, 170:224].any()
    out, used = occlude_marks(lettered)
    np.testing.assert_array_equal(used, mask)
    np.testing.assert_array_equal(out[~mask], lettered[~mask])  # … and only what is covered changes
    assert out[letter].max() < 120  # filled from the dark air around it
    unchanged, none = occlude_marks(clean)
    assert not none.any() and np.array_equal(unchanged, clean)


def test_corner_mode_fills_exactly_the_four_corner_squares():
    square = with_letter(film())
    out, mask = occlude_marks(square, "corners", fill="median", corner=0.15)
    np.testing.assert_array_equal(mask, corner_mask(square.shape, 0.15))
    np.testing.assert_array_equal(out[~mask], square[~mask])


def test_lung_energy_is_a_share_and_one_for_a_map_inside_the_box():
    lungs = lung_mask((50, 50))
    rng = np.random.default_rng(0)
    maps = rng.random((5, 50, 50)).astype(np.float32)
    share = lung_energy(maps, lungs)
    assert ((share >= 0) & (share <= 1)).all()
    inside = np.where(lungs, maps[0], 0.0)[None]
    assert lung_energy(inside, lungs)[0] == pytest.approx(1.0)
    assert lung_energy(np.ones((1, 50, 50)), lungs)[0] == pytest.approx(lungs.mean())
    assert np.isnan(lung_energy(np.zeros((1, 50, 50)), lungs)[0])  # no evidence: undefined
    box = lung_mask((100, 200), lung=(0.2, 0.8, 0.2, 0.85))
    rows, cols = np.nonzero(box)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (20, 85, 40, 160)


class Masked(nn.Module):
    """Multiplies its input by a fixed (S, S) region: activations outside it are zero."""

    def __init__(self, region: np.ndarray):
        super().__init__()
        self.register_buffer("region", torch.from_numpy(region.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.region


class RegionModel(nn.Module):
    """logit = gain · (mean(bright) − mean(dark) − (2·offset − 1)) over a fixed region only, with
    bright = x and dark = 1 − x there (so = 2·gain·(mean of x over the region − offset)).

    ``features`` (bright/dark channels, zero outside the region) is the layer Grad-CAM explains, so
    the maps of both classes lie inside the region: the model reads nothing else.
    """

    def __init__(self, region: np.ndarray, gain: float = 20.0, offset: float = 0.3):
        super().__init__()
        conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            conv.bias.copy_(torch.tensor([0.0, 1.0]))
        self.features = nn.Sequential(conv, nn.ReLU(), Masked(region))
        self.area = float(region.sum())
        self.gain, self.offset = gain, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = self.features(x).sum((2, 3)) / self.area  # (N, 2)
        return self.gain * (means[:, :1] - means[:, 1:] - (2 * self.offset - 1))  # (N, 1)


def toy_meta() -> CheckpointMeta:
    preprocess = Preprocess(image_size=SIZE, channels=1, mean=(0.0,), std=(1.0,), resize_mode="squash")
    return CheckpointMeta(
        path="toy", model_name="toy", model_kwargs={}, preprocess=preprocess,
        class_names=("NORMAL", "PNEUMONIA"), threshold=0.5, temperature=1.0,
    )  # fmt: skip


@pytest.fixture
def toy_records(tmp_path) -> list[ImageRecord]:
    """8 films per class at 32 px; their bright frame varies, so a border reader varies."""
    for label in ("NORMAL", "PNEUMONIA"):
        for i in range(8):
            square = film(SIZE, seed=i)
            square[:, :2] = 60 + 25 * i  # the frame: 60 … 235
            (tmp_path / label).mkdir(exist_ok=True)
            Image.fromarray(square).save(tmp_path / label / f"{label.lower()}{i}.png")
    return file_records([tmp_path])


def test_a_model_reading_only_the_border_is_flagged(toy_records):
    model = RegionModel(band_mask((SIZE, SIZE), 0.08), offset=0.15).eval()
    result = shortcut_check(model, toy_meta(), toy_records, ShortcutSettings(), layer="features")
    assert result.flagged_border and "FLAG" in result.verdict
    assert [g for g in result.groups] == ["NORMAL", "PNEUMONIA", "all"]
    rows = result.images
    assert len(rows) == 16 and {r.label for r in rows} == {"NORMAL", "PNEUMONIA"}
    normal = [r for r in rows if r.label == "NORMAL"]
    delta = np.array([r.p_border - r.p_clean for r in normal])
    stats = result.groups["NORMAL"]["border"]
    assert stats.n == 8 and stats.mean_abs == pytest.approx(np.abs(delta).mean())
    assert stats.p95_abs == pytest.approx(np.percentile(np.abs(delta), 95))
    flips = sum((r.p_clean >= 0.5) != (r.p_border >= 0.5) for r in normal)
    assert stats.flips == flips and stats.flip_share == pytest.approx(flips / 8)
    assert stats.mean_abs > 0.03
    # its maps lie on the border, not on the lungs
    assert max(r.lung_energy_clean for r in rows) == pytest.approx(0.0, abs=1e-6)


def test_a_model_ignoring_the_border_is_not_flagged(toy_records):
    model = RegionModel(lung_mask((SIZE, SIZE)), offset=0.5).eval()
    result = shortcut_check(model, toy_meta(), toy_records, ShortcutSettings(), layer="features")
    assert not result.flagged_border and not result.flagged_text and "no flag" in result.verdict
    for row in result.images:
        assert row.p_border == pytest.approx(row.p_clean, abs=1e-6)
        for p in (row.p_border_inpaint, row.p_border_median, row.p_border_reflect):
            assert p == pytest.approx(row.p_clean, abs=1e-6)
        assert row.lung_energy_clean == pytest.approx(1.0) and row.lung_energy_border == pytest.approx(1.0)
    assert result.groups["all"]["border"].mean_abs < 1e-6 and result.groups["all"]["border"].flips == 0


def test_sample_is_balanced_reproducible_and_all_when_few(toy_records):
    chosen = sample_records(toy_records, 6, seed=1)
    assert sum(r.label == 0 for r in chosen) == 3 and chosen == sample_records(toy_records, 6, seed=1)
    assert sample_records(toy_records, 100) == sorted(toy_records, key=lambda r: str(r.path))
    lopsided = [r for r in toy_records if r.label == 1] + [r for r in toy_records if r.label == 0][:2]
    assert sum(r.label == 0 for r in sample_records(lopsided, 8)) == 2  # the rest from PNEUMONIA


def test_run_writes_json_csv_markdown_and_figure(tmp_path, make_checkpoint, make_png):
    checkpoint = make_checkpoint(tmp_path / "tiny.pt")
    for i in range(3):
        make_png(tmp_path / "data" / "NORMAL" / f"n{i}.png", 40, 50, seed=i)
        make_png(tmp_path / "data" / "PNEUMONIA" / f"p{i}.png", 50, 40, seed=10 + i)
    out = tmp_path / "out"
    result = run_shortcut_check(checkpoint, file_records([tmp_path / "data"]), out, max_images=4, examples=2)
    assert set(result.files) == {"json", "csv", "md", "figure"} and all(
        p.is_file() for p in result.files.values()
    )
    with result.files["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and list(rows[0])[:7] == [
        "path", "label", "p_clean", "p_border", "p_text", "lung_energy_clean", "lung_energy_border",
    ]  # fmt: skip
    summary = json.loads(result.files["json"].read_text())
    assert summary["threshold"] == 0.4 and summary["temperature"] == 1.5 and summary["images"] == 4
    assert set(summary["groups"]) == {"NORMAL", "PNEUMONIA", "all"}
    assert summary["verdict"] == result.verdict and "|" in result.files["md"].read_text()


def _cli(*argv: str) -> int:
    return main(["shortcut", *argv])


def test_cli_errors_are_one_line_with_exit_2(tmp_path, make_checkpoint, make_png, kermany_tree, capsys):
    checkpoint = str(make_checkpoint(tmp_path / "tiny.pt"))
    image = str(make_png(tmp_path / "NORMAL" / "a.png", 40, 40))
    out = str(tmp_path / "out")
    cases = [
        ("--checkpoint", checkpoint, "--out", out),  # neither images nor --data
        ("--checkpoint", checkpoint, image, "--data", str(kermany_tree), "--out", out),  # both
        ("--checkpoint", checkpoint, image, "--band", "0.7", "--out", out),
        ("--checkpoint", str(tmp_path / "missing.pt"), image, "--out", out),
        ("--checkpoint", checkpoint, "--data", str(kermany_tree), "--out", out),  # records no split
        ("--checkpoint", checkpoint, "--data", str(kermany_tree), "--split", "nope", "--out", out),
        ("--checkpoint", checkpoint, str(tmp_path / "no_such.png"), "--out", out),
    ]
    for argv in cases:
        assert _cli(*argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("pneumocxr: error:") and "\n" not in err, (argv, err)


def test_cli_on_a_dataset_split_prints_the_table(tmp_path, make_checkpoint, kermany_tree, capsys):
    checkpoint = make_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    argv = ["--checkpoint", str(checkpoint), "--data", str(kermany_tree), "--split", "train"]
    assert _cli(*argv, "--images", "4", "--examples", "0", "--device", "cpu", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "border band" in printed and "custom_cnn:" in printed
    assert (out / "shortcut.csv").is_file() and not (out / "shortcut_examples.png").exists()


@pytest.mark.realdata
@pytest.mark.slow
def test_real_films_give_shares_in_range_and_find_side_markers(shared_data, make_checkpoint, tmp_path):
    from pneumocxr.data.cache import decode_record
    from pneumocxr.data.discovery import discover

    val = discover(shared_data / "chest_xray").in_split("val")  # the 16 official val films
    found = sum(detect_marks(decode_record(r, 224)).any() for r in val)
    assert found >= 4  # most Kermany films carry an "R" marker; the detector finds a fair share
    checkpoint = make_checkpoint(tmp_path / "c.pt", image_size=64)
    out = tmp_path / "out"
    argv = ["--checkpoint", str(checkpoint), "--data", str(shared_data / "chest_xray"), "--split", "val"]
    assert _cli(*argv, "--images", "6", "--examples", "2", "--device", "cpu", "--out", str(out)) == 0
    with (out / "shortcut.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {r["label"] for r in rows} == {"NORMAL", "PNEUMONIA"}
    for row in rows:
        for key in ("p_clean", "p_border", "p_text", "lung_energy_clean", "lung_energy_border"):
            assert row[key] == "" or 0.0 <= float(row[key]) <= 1.0


def test_cli_choices_mirror_the_library():
    from pneumocxr.cli import shortcut_cmd
    from pneumocxr.explain import METHODS
    from pneumocxr.explain.shortcut import BORDER_FILLS, TEXT_MODES

    assert (shortcut_cmd.FILLS, shortcut_cmd.TEXT_MODES, shortcut_cmd.METHODS) == (
        BORDER_FILLS,
        TEXT_MODES,
        METHODS,
    )
