"""The documentation site builds with warnings as errors, and the API reference names every public name.

``mkdocs build --strict`` fails on a broken link or anchor, a page missing from the nav, a docstring
that contradicts its signature (griffe) or a cross-reference that resolves nowhere.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pneumocxr
import pneumocxr.inference

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ("pneumocxr", "inference", "workflows", "data", "evaluation", "explain", "serving", "pacs")
GUIDES = ("datasets", "recipes", "evaluation", "explanations", "serving", "pacs", "cluster")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocstrings", reason="the docs extra (in dev) installs mkdocs + mkdocstrings")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def anchors(page: Path) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', page.read_text(encoding="utf-8")))


def test_the_site_builds_strict_with_every_guide_and_reference_page(site):
    for name in GUIDES:
        assert (site / "guides" / f"{name}.html").is_file(), name
    for name in REFERENCE:
        assert (site / "reference" / f"{name}.html").is_file(), name
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "Dataset citation and licence" in home  # the home page is the README
    assert "CC BY 4.0" in (site / "license.html").read_text(encoding="utf-8")


def test_the_reference_documents_the_prediction_core(site):
    found = anchors(site / "reference" / "inference.html")
    for name in pneumocxr.inference.__all__:
        assert f"pneumocxr.inference.{name}" in found, name


def test_every_name_of_the_top_level_namespace_is_in_the_reference(site):
    """A lazily imported name (PEP 562 ``__getattr__``) is invisible to static analysis: list it in
    ``__all__`` and import it under ``if TYPE_CHECKING:`` so the reference renders it."""
    found = anchors(site / "reference" / "pneumocxr.html")
    public = [name for name in getattr(pneumocxr, "__all__", ()) if not name.startswith("_")]
    missing = [name for name in public if f"pneumocxr.{name}" not in found]
    assert missing == []
