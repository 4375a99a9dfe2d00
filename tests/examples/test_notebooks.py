"""The example notebooks run top to bottom, and are committed without outputs.

Each notebook is executed with nbclient on a kernel of THIS interpreter (so it imports the pneumocxr
under test), in a fresh temporary folder, with a time-out per cell and per test. The quickstart reads
a small patient-level sample of the real data (skipped, saying why, when ../shared/data is absent); the
deploy notebook serves a tiny generated checkpoint, so it runs without the real data too.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import SHARED_DATA, make_kermany_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
NOTEBOOKS = ("01_quickstart.ipynb", "02_deploy.ipynb")
CELL_TIMEOUT_S = 300  # the longest cell (training) takes ~30 s on 2 busy cores
KERNEL = "pneumocxr-under-test"


def test_both_notebooks_are_committed_without_outputs():
    for name in NOTEBOOKS:
        book = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
        for cell in book["cells"]:
            where = f"{name} cell {cell.get('id')}"
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [], f"{where} has outputs: clear them before committing"
                assert cell["execution_count"] is None, f"{where} has an execution count"
            assert "widgets" not in book["metadata"], f"{name} stores widget state"
        parameters = [c for c in book["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(parameters) == 1, f"{name}: one cell tagged 'parameters' is the one a user edits"


def _kernel_spec(folder: Path) -> Path:
    """A kernelspec that starts ipykernel on this interpreter (not whatever 'python3' is on PATH)."""
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}), encoding="utf-8"
    )
    return folder / "kernels"


def run_notebook(name: str, workdir: Path, env: dict[str, str]) -> float:
    """Execute ``examples/NAME`` in ``workdir``; returns its wall time in seconds."""
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[dev]')")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[dev]')")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install -e '.[dev]')")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    book = nbformat.read(EXAMPLES / name, as_version=4)
    specs = KernelSpecManager(kernel_dirs=[str(_kernel_spec(workdir.parent))])
    # IPC sockets in the test's folder: nothing listens on a network port, not even loopback
    manager = KernelManager(
        kernel_name=KERNEL, kernel_spec_manager=specs, transport="ipc", ip=str(workdir.parent / "kernel")
    )
    package_root = str(Path(__import__("pneumocxr").__file__).resolve().parents[1])
    kernel_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        **env,
    }
    kernel_env.pop("MPLBACKEND", None)  # the notebooks draw inline
    client = nbclient.NotebookClient(
        book,
        km=manager,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(workdir)}},
    )
    started = time.monotonic()
    # cleanup_kc: shut the kernel down (gracefully, so its atexit hooks run) even though we made its manager
    client.execute(env=kernel_env, cleanup_kc=True)
    seconds = time.monotonic() - started
    print(f"{name}: {seconds:.0f} s")
    return seconds


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.timeout(600)
def test_quickstart_runs_end_to_end_on_a_small_patient_sample(shared_data, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    env = {"PNEUMOCXR_DATA": str(shared_data / "chest_xray"), "PNEUMOCXR_SAMPLE_IMAGES": "300"}
    run_notebook("01_quickstart.ipynb", workdir, env)
    work = workdir / "pneumocxr-quickstart"
    for made in (
        "runs/cpu_fast/best.pt",
        "runs/custom_cnn/best.pt",
        "evaluation/cpu_fast/metrics.json",
        "evaluation/cpu_fast/plots/gradcam_visualizations.png",
        "comparison/results/comparison.csv",
        "stress/cpu_fast/stress.json",
        "model_cards/cpu_fast.md",
    ):
        assert (work / made).is_file(), f"the quickstart did not write {made}"
    metrics = json.loads((work / "evaluation/cpu_fast/metrics.json").read_text())
    assert "optimistic" in metrics["split"]  # the carved validation split is labelled for what it is


def _tiny_checkpoint(path: Path) -> Path:
    import torch

    from pneumocxr.models import create_model, save_checkpoint

    torch.manual_seed(0)
    kwargs = {"image_size": 32, "in_channels": 1}
    model = create_model("custom_cnn", **kwargs)
    return save_checkpoint(
        path,
        model,
        model_name="custom_cnn",
        model_kwargs=kwargs,
        preprocess=model.spec.preprocess,
        class_names=("NORMAL", "PNEUMONIA"),
        task="binary",
        threshold=0.5,
        temperature=1.0,
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_deploy_exports_serves_answers_and_audits_a_tiny_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.pt")
    real = SHARED_DATA / "chest_xray"
    data = real if (real / "train").is_dir() else make_kermany_tree(tmp_path / "films", splits=("train",))
    env = {"PNEUMOCXR_CHECKPOINT": str(checkpoint), "PNEUMOCXR_DATA": str(data)}
    run_notebook("02_deploy.ipynb", workdir, env)
    work = workdir / "pneumocxr-deploy"
    assert (work / "model.onnx").is_file() and (work / "model.onnx.json").is_file()
    from pneumocxr.store import open_store
    from pneumocxr.store.audit import AuditLog

    rows = list(AuditLog(open_store(str(work / "audit.db"))).rows())
    assert len(rows) == 3, rows  # the two films, then one of them again as a raw body
    log = (work / "serve.log").read_text()
    assert "Shutting down" in log or "Finished server process" in log, log[-2000:]
