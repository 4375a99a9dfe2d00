"""The audit/keys database on SQLite (a file in tmp_path) and on a real PostgreSQL server.

PostgreSQL tests need ``PNEUMOCXR_TEST_POSTGRES_URL`` (``eval "$(scripts/ci_postgres.sh)"``) and skip
without it. Each test gets its own schema (``search_path`` in the URL), dropped afterwards, so tests
never see each other's rows nor the other tables of the shared CI database (Optuna's, for one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.postgres import postgres_base_url, postgres_schema

REPO_ROOT = Path(__file__).resolve().parents[2]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: this checkout's src first, one CPU thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL database (an empty schema of it), or a skip that says how to get one."""
    with postgres_schema(postgres_base_url(), "pcx_servetest") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """The same test on a SQLite file and on the real PostgreSQL server."""
    if request.param == "sqlite":
        yield str(tmp_path / "audit.db")
    else:
        with postgres_schema(postgres_base_url(), "pcx_servetest") as url:
            yield url
