"""``open_store(url)``: an engine on SQLite (WAL) or PostgreSQL, migrated to the newest schema.

SQLite settings, and why: WAL lets readers (``audit export``, metrics) run beside the writer;
``synchronous=FULL`` makes every committed audit row survive a crash of the process *and* of the
machine (a kill -9 of the server loses no answered request's row); ``busy_timeout`` lets several
worker threads share the file. For more than one machine use PostgreSQL (``--db postgresql://…``).
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from pneumocxr.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_DB = "output/serve/audit.db"
MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x70_6E_63_78  # PostgreSQL advisory-lock key ("pncx") held while migrating
_MIGRATING = threading.Lock()  # Alembic's command API keeps global state: one migration per process


def database_url(value: str | os.PathLike | None) -> str:
    """A SQLAlchemy URL from ``--db``: a URL as given, a path → ``sqlite:///path``, None → the default."""
    text = str(value) if value else DEFAULT_DB
    if "://" in text:
        if not text.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ConfigError(f"--db {text!r}: use a file path, sqlite:///PATH or postgresql://USER@HOST/DB")
        if text.startswith("postgresql://"):  # psycopg 3, the driver the postgres extra installs
            text = "postgresql+psycopg://" + text[len("postgresql://") :]
        return text
    path = Path(text).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


class Store:
    """An engine and its session factory; ``session()`` is one transaction (commit or roll back)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self):
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(url: str | os.PathLike | None = None, *, migrate: bool = True) -> Store:
    """Connect (creating a SQLite file if needed) and bring the schema to the newest migration."""
    from alembic.util import CommandError

    resolved = database_url(url)
    shown = make_url(resolved).render_as_string(hide_password=True)  # never print a password
    try:
        engine = _engine(resolved)
        if migrate:
            upgrade(engine)
    except SQLAlchemyError as exc:
        raise ConfigError(f"cannot open the database {shown} ({type(exc).__name__}: {exc})") from None
    except CommandError as exc:  # e.g. a revision this version does not know (a newer pneumocxr wrote it)
        raise ConfigError(
            f"cannot migrate the database {shown} ({exc}); did a newer pneumocxr write it?"
        ) from None
    return Store(engine)


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record):  # every new SQLite connection
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade(engine: Engine) -> None:
    """Run the Alembic migrations up to head (idempotent). Safe when several workers start at once on
    PostgreSQL: a transaction-scoped advisory lock makes them migrate one after the other (without it
    two first starts both run CREATE TABLE and one fails), and the version table is updated in the
    migration's transaction."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _MIGRATING, engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    logger.debug("database %s at the newest schema", engine.url.render_as_string(hide_password=True))
