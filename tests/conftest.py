"""Shared fixtures: where the real data lives, and tiny synthetic datasets."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the project root (CI lays it there); PNEUMOCXR_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get("PNEUMOCXR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (the bench scripts are not a package), registered in
    ``sys.modules`` because a dataclass looks its module up while being defined."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO_ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real Kermany/PneumoniaMNIST data, or a skip that says why."""
    if not (SHARED_DATA / "chest_xray" / "train").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set PNEUMOCXR_SHARED_DATA to its folder)")
    return SHARED_DATA


def make_kermany_tree(
    root: Path,
    splits: tuple[str, ...] = ("train", "val", "test"),
    patients_per_class: int = 6,
    images_per_patient: int = 2,
    size: tuple[int, int] = (48, 40),
    seed: int = 0,
) -> Path:
    """A tiny dataset in the Kermany layout with Kaggle-style file names.

    PNEUMONIA images carry a bright blob (a learnable signal); NORMAL images do not.
    Patients alternate bacterial / viral. Returns ``root``.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    for split_index, split in enumerate(splits):
        for label in ("NORMAL", "PNEUMONIA"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for p in range(patients_per_class):
                pid = 100 * (split_index + 1) + p
                for m in range(images_per_patient):
                    pixels = rng.normal(90, 20, size=(height, width))
                    if label == "PNEUMONIA":
                        cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
                        pixels += 120 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.02 * width * height))
                        kind = "bacteria" if p % 2 == 0 else "virus"
                        name = f"person{pid}_{kind}_{m}.jpeg"
                    else:
                        name = f"IM-{pid:04d}-{m + 1:04d}.jpeg"
                    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
                    image.save(folder / name, quality=95)
    return root


@pytest.fixture
def kermany_tree(tmp_path: Path) -> Path:
    """A fresh tiny Kermany-layout dataset under tmp_path."""
    return make_kermany_tree(tmp_path / "chest_xray")
