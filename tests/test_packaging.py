"""``python -m build`` makes an sdist and a wheel that install into a clean environment and run.

The wheel is built from the sdist (what ``python -m build`` does), so a file missing from either shows
up here. The fresh venv gets pneumocxr from the wheel only (``--no-deps``, no index) and finds its
dependencies in the running environment's site-packages, appended after its own (a path line in a
``.pth`` file): installing torch again would take minutes and the network. It runs from a temporary
folder with PYTHONPATH cleared, so the source tree is never what answers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "src" / "pneumocxr"
# What the sdist is built from: everything pyproject.toml, MANIFEST.in and the license files name.
SOURCES = ("pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "NOTICE", "CHANGELOG.md", "mkdocs.yml")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def project_version() -> str:
    """``[project] version`` of pyproject.toml (tomllib is 3.11+; the project supports 3.10)."""
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return re.search(r'^version = "([^"]+)"$', text, re.MULTILINE).group(1)


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel, built from a copy of the project (the working tree stays untouched)."""
    pytest.importorskip("build", reason="the dev extra installs `build`")
    root = tmp_path_factory.mktemp("project")
    for name in SOURCES:
        shutil.copy2(REPO_ROOT / name, root / name)
    shutil.copytree(REPO_ROOT / "src", root / "src", ignore=SKIP)
    shutil.copytree(REPO_ROOT / "docs", root / "docs", ignore=SKIP)
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend (setuptools >= 77) comes from this environment, not the network.
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(root)])
    version = project_version()
    return {
        "sdist": out / f"pneumocxr-{version}.tar.gz",
        "wheel": out / f"pneumocxr-{version}-py3-none-any.whl",
    }


def test_the_wheel_carries_every_file_of_the_package_and_the_licences(dist):
    names = set(zipfile.ZipFile(dist["wheel"]).namelist())
    source_files = {
        "pneumocxr/" + path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert source_files - names == set()
    # The package data by kind, so a lost glob in pyproject.toml names itself.
    for expected in (
        "pneumocxr/configs/cpu_accurate.yaml",
        "pneumocxr/evaluation/report.html.j2",
        "pneumocxr/evaluation/model_card.md.j2",
        "pneumocxr/serving/static/index.html",
        "pneumocxr/serving/static/app.js",
        "pneumocxr/serving/static/app.css",
        "pneumocxr/store/migrations/script.py.mako",
        "pneumocxr/store/migrations/env.py",
        "pneumocxr/store/migrations/versions/0001_audit_log_and_api_keys.py",
        "pneumocxr/py.typed",
    ):
        assert expected in names, expected
    info = f"pneumocxr-{project_version()}.dist-info"
    assert {f"{info}/licenses/LICENSE", f"{info}/licenses/NOTICE"} <= names
    metadata = zipfile.ZipFile(dist["wheel"]).read(f"{info}/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    assert (
        "pneumocxr = pneumocxr.cli.main:main"
        in zipfile.ZipFile(dist["wheel"]).read(f"{info}/entry_points.txt").decode()
    )


def test_the_sdist_carries_the_licences_changelog_and_docs(dist):
    prefix = f"pneumocxr-{project_version()}/"
    with tarfile.open(dist["sdist"]) as sdist:
        names = {name.removeprefix(prefix) for name in sdist.getnames()}
    assert {"LICENSE", "NOTICE", "CHANGELOG.md", "README.md", "mkdocs.yml", "docs/RESULTS.md"} <= names
    assert "src/pneumocxr/serving/static/app.js" in names


def test_the_installed_wheel_runs_its_console_script_outside_the_source_tree(dist, tmp_path):
    env_dir = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    python = env_dir / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--force-reinstall", str(dist["wheel"])])  # fmt: skip
    site_packages = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    )
    # Dependencies from this environment, AFTER the venv's own site-packages (a bare path line: the
    # .pth files over there, such as an editable install of the source tree, are not processed).
    (site_packages / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()

    where = run([str(python), "-c", "import pneumocxr; print(pneumocxr.__file__)"], cwd=workdir, env=env)
    assert Path(where.stdout.strip()).is_relative_to(site_packages)
    script = env_dir / "bin" / "pneumocxr"
    version = run([str(script), "--version"], cwd=workdir, env=env)
    assert version.stdout.strip() == f"pneumocxr {project_version()}"
    models = run([str(script), "models", "list"], cwd=workdir, env=env)
    assert "efficientnet_lite0" in models.stdout and "custom_cnn" in models.stdout
