"""Storage the service and the PACS bridge share: the audit log and API keys (SQLAlchemy 2 + Alembic).

SQLite (WAL) by default, PostgreSQL by URL. Several ``pneumocxr serve`` processes on several machines
can share one PostgreSQL database: the workers hold no state of their own, so they scale behind any
load balancer. Only ``serving`` and ``pacs`` use this package (import-linter layers).
"""

from pneumocxr.store.db import Store, open_store

__all__ = ["Store", "open_store"]
