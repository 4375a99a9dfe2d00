"""A real PostgreSQL for the tests (PACS queue, audit store, serving): each test its own schema.

Needs ``PNEUMOCXR_TEST_POSTGRES_URL`` (``eval "$(scripts/ci_postgres.sh)"``); the tests skip without
it. The schema goes in the URL (``options=-csearch_path=…``), so worker subprocesses given the URL
with ``--db`` see the same empty tables, and it is dropped with everything in it afterwards: tests
never see each other's rows nor the other tables of the shared database (Optuna's, the audit's).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest


def postgres_base_url() -> str:
    url = os.environ.get("PNEUMOCXR_TEST_POSTGRES_URL")
    if not url:
        pytest.skip(
            'PNEUMOCXR_TEST_POSTGRES_URL is not set: run `eval "$(scripts/ci_postgres.sh)"` (as root) '
            "to install and start a local PostgreSQL server for this test"
        )
    return url


@contextmanager
def postgres_schema(base: str, prefix: str = "pcx_test") -> Iterator[str]:
    """A URL whose connections use a fresh, empty schema (dropped on exit)."""
    from sqlalchemy import create_engine, text

    from pneumocxr.store.db import database_url

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(database_url(base))
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield with_options(base, f"-csearch_path={schema}")
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def with_options(url: str, options: str) -> str:
    """``url`` with libpq ``options`` (server settings for every connection) added."""
    if "options=" in url:
        head, _, tail = url.partition("options=")
        return f"{head}options={quote(options)}%20{tail}"
    return f"{url}{'&' if '?' in url else '?'}options={quote(options)}"
