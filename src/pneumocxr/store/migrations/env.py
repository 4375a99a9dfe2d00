"""Alembic environment: the connection comes from ``store.db.upgrade`` (no alembic.ini needed)."""

from alembic import context

from pneumocxr.store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI always passes one
    raise RuntimeError("run migrations through pneumocxr.store.db.upgrade")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
