"""Alembic environment: the connection comes from ``store.db.upgrade`` (no alembic.ini needed).

The version table has its own name: the audit database may be one that another Alembic-managed
application already uses (Optuna's RDB storage keeps its revision in the default
``alembic_version``), and sharing that table makes each side fail on the other's revision.
"""

from alembic import context

from pneumocxr.store.schema import VERSION_TABLE, Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI always passes one
    raise RuntimeError("run migrations through pneumocxr.store.db.upgrade")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,
    version_table=VERSION_TABLE,
)
with context.begin_transaction():
    context.run_migrations()
