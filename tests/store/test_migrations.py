"""The Alembic migrations build exactly ``schema.Base.metadata``, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from pneumocxr.errors import ConfigError
from pneumocxr.store import open_store
from pneumocxr.store.db import database_url, upgrade
from pneumocxr.store.schema import VERSION_TABLE, Base


def _differences(store) -> list:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "compare_server_default": True, "version_table": VERSION_TABLE},
        )
        return compare_metadata(context, Base.metadata)


def _head() -> str:
    """The newest migration's revision (the scripts in store/migrations/versions)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from pneumocxr.store.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


HEAD = _head()


def _revision(store) -> list[str]:
    with store.engine.connect() as connection:
        return [row[0] for row in connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))]


def test_migrations_build_exactly_the_declared_tables(db_url):
    store = open_store(db_url)
    try:
        assert _differences(store) == []  # autogenerate would write an empty migration
        tables = set(inspect(store.engine).get_table_names())
        assert tables == {*Base.metadata.tables, VERSION_TABLE}
    finally:
        store.dispose()


def test_upgrade_is_idempotent_and_keeps_rows(db_url):
    from pneumocxr.store.keys import create_key, list_keys

    store = open_store(db_url)
    try:
        info, _ = create_key(store, "ward 3")
        before = _revision(store)
        upgrade(store.engine)  # a second worker starting, or a restart
        reopened = open_store(db_url)
        try:
            assert _revision(reopened) == before and len(before) == 1
            assert [k.id for k in list_keys(reopened)] == [info.id]
            assert _differences(reopened) == []
        finally:
            reopened.dispose()
    finally:
        store.dispose()


def test_a_database_another_alembic_app_uses_is_shared_not_broken(db_url):
    """Optuna's RDB storage (the tuning study, often in the same PostgreSQL database) keeps its
    revision in ``alembic_version``: the store must neither read it nor overwrite it."""
    engine = create_engine(database_url(db_url))
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        connection.execute(text("INSERT INTO alembic_version VALUES ('v3.2.0.a')"))
    store = open_store(db_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "v3.2.0.a"
        assert _revision(store) == [HEAD]
    finally:
        store.dispose()
        engine.dispose()


def test_an_unknown_revision_is_a_config_error_not_a_traceback(tmp_path):
    path = tmp_path / "newer.db"
    open_store(path).dispose()
    engine = create_engine(database_url(path))
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(ConfigError, match="9999"):
        open_store(path)


def test_sqlite_store_uses_wal_and_full_sync(tmp_path):
    store = open_store(tmp_path / "a.db")
    try:
        with store.engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    finally:
        store.dispose()


@pytest.mark.parametrize("url", ["mysql://x@y/z", "http://example.org/db"])
def test_unsupported_database_urls_are_refused_with_the_fix(url):
    with pytest.raises(ConfigError, match="postgresql://"):
        database_url(url)


def test_a_failed_connection_never_prints_the_password():
    with pytest.raises(ConfigError) as info:
        open_store("postgresql://someone:s3cret-pw@127.0.0.1:1/nothing?connect_timeout=2")
    assert "s3cret-pw" not in str(info.value)
    assert "cannot open the database" in str(info.value)


STARTER = """
import sys, time
from pneumocxr.store import open_store
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all start migrating at the same moment
open_store(sys.argv[1]).dispose()
"""


def test_workers_starting_together_on_postgresql_all_migrate(postgres_url):
    """Several `serve` processes sharing one database start at once: none may fail its first migration."""
    import subprocess
    import sys
    import time

    from tests.store.conftest import subprocess_env

    start_at = str(time.time() + 4)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, postgres_url, start_at],
            env=subprocess_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        errors = [worker.communicate(timeout=60)[1] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert [w.returncode for w in workers] == [0, 0, 0, 0], "\n".join(errors)
    store = open_store(postgres_url)
    try:
        assert _revision(store) == [HEAD]
    finally:
        store.dispose()
