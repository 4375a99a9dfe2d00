"""``bench/adversarial.py``: the attack core on a tiny trained model, and the script end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from tests.conftest import load_bench
from torch import nn

from pneumocxr.config import DataConfig, Preprocess
from pneumocxr.models import create_model, save_checkpoint
from pneumocxr.training.datamodule import split_info, split_records


@pytest.fixture(scope="module")
def bench():
    return load_bench("adversarial")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class BlobDetector(nn.Module):
    """A fixed tiny model: logit = 30 · (brightest 3×3 local mean − 0.62), so a blob means PNEUMONIA.

    Known weights instead of a training loop: the test is about the attacks, not about learning.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = nn.functional.avg_pool2d(x, 3, stride=1)  # (N, 1, S-2, S-2)
        return 30.0 * (local.amax(dim=(2, 3)) - 0.62)  # (N, 1)


@pytest.fixture(scope="module")
def tiny_model():
    """(model, preprocess, pixels (16, 1, 16, 16) in [0, 1], labels): every second image has a blob."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 16, 16, generator=generator) * 0.2 + 0.3
    y = torch.arange(16) % 2
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    for i in range(1, 16, 2):
        cx, cy = torch.randint(4, 12, (2,), generator=generator)
        x[i, 0] += 0.4 * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 6.0)
    preprocess = Preprocess(image_size=16, channels=1, mean=(0.0,), std=(1.0,))
    return BlobDetector().eval(), preprocess, x.clamp(0, 1).numpy(), y.numpy()


def test_accuracy_falls_as_eps_grows_for_a_tiny_model(bench, tiny_model):
    model, preprocess, pixels, labels = tiny_model
    eps = (8.0, 24.0, 32.0, 40.0, 48.0)  # the blob margin is ~0.1-0.2: accuracy falls over this range
    rows = bench.attack_rows(
        model, preprocess, pixels, labels, eps_255=eps, pgd_steps=5, batch_size=8, name="tiny"
    )
    assert [(r.attack, r.eps_255) for r in rows] == [("clean", 0.0)] + [
        (attack, e) for e in eps for attack in ("fgsm", "pgd")
    ]
    clean = rows[0]
    assert clean.accuracy == 1.0 and clean.accuracy_ratio == 1.0 and clean.n == 16
    mean_by_eps = [np.mean([r.accuracy for r in rows if r.eps_255 == e]) for e in eps]
    assert all(b <= a + 1e-9 for a, b in zip([clean.accuracy, *mean_by_eps], mean_by_eps))  # non-increasing
    assert mean_by_eps[0] == clean.accuracy and mean_by_eps[-1] < 0.5  # harmless at 8/255, not at 48
    for r in rows[1:]:
        assert r.accuracy_ratio == pytest.approx(r.accuracy / clean.accuracy)
        assert 0.0 <= r.auc <= 1.0


def test_pgd_is_seeded_and_leaves_the_global_generator_alone(bench, tiny_model):
    model, preprocess, pixels, labels = tiny_model
    state = np.random.get_state()[1].copy()
    kwargs = {"eps_255": (8.0,), "attacks": ("pgd",), "pgd_steps": 2, "seed": 3}
    first = bench.attack_rows(model, preprocess, pixels, labels, **kwargs)
    second = bench.attack_rows(model, preprocess, pixels, labels, **kwargs)
    assert first == second
    assert np.array_equal(np.random.get_state()[1], state)


def test_stratified_sample_keeps_class_shares_and_is_seeded(bench, kermany_tree):
    from pneumocxr.data.discovery import discover

    records = discover(kermany_tree).in_split("train")  # 12 NORMAL, 12 PNEUMONIA
    sample = bench.stratified_sample(records, 10, seed=1)
    assert sum(int(r.label) for r in sample) == 5 and len(sample) == 10
    assert sample == bench.stratified_sample(list(reversed(records)), 10, seed=1)
    assert bench.stratified_sample(records, 0, seed=1) == sorted(records, key=lambda r: str(r.path))


def test_script_writes_side_by_side_tables_csv_and_json(bench, kermany_tree, tmp_path, capsys):
    data = DataConfig(root=str(kermany_tree), val_fraction=0.5)
    train, val = split_records(data)
    checkpoints = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = create_model("custom_cnn", image_size=16)
        path = tmp_path / f"run{seed}" / "best.pt"
        save_checkpoint(
            path,
            model,
            model_name="custom_cnn",
            model_kwargs={"image_size": 16},
            preprocess=model.spec.preprocess,
            class_names=["NORMAL", "PNEUMONIA"],
            threshold=0.4,
            extra={"split": split_info(data, 0, train, val).as_dict()},
        )
        checkpoints.append(str(path.parent))  # a run folder works like --checkpoint runs/NAME
    out = tmp_path / "out"
    argv = ["--checkpoint", *checkpoints, "--data", str(kermany_tree), "--images", "6"]
    assert bench.main([*argv, "--eps", "2,8", "--pgd-steps", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "side by side" in printed and "| run0 | run1 |" in printed
    with (out / "adversarial.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * (1 + 2 * 2)  # per model: clean + 2 attacks × 2 ε
    assert {r["model"] for r in rows} == {"run0", "run1"}
    assert all(int(r["n"]) == 6 for r in rows)
    payload = json.loads((out / "adversarial.json").read_text())
    assert payload["settings"]["eps_255"] == [2.0, 8.0]
    assert "[-z/2, z/2]" in payload["settings"]["binary_head"]
    assert len(payload["rows"]) == len(rows)
