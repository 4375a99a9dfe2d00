"""The tables (SQLAlchemy 2 declarative). Changes go through an Alembic migration in ``migrations/``:
``tests/store/test_migrations.py`` checks that the migrations build exactly these tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Alembic's revision table for these migrations (not the default ``alembic_version``: see migrations/env.py)
VERSION_TABLE = "pneumocxr_alembic_version"


class Base(DeclarativeBase):
    pass


class AuditRecord(Base):
    """One request that reached the model: written before its answer leaves (no unaudited answers).

    No patient identifiers: the input is known by its sha256, size and format only."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[str | None] = mapped_column(String(64), index=True)  # None: --no-auth
    route: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)  # HTTP status of the answer
    error_code: Mapped[str | None] = mapped_column(String(64))  # machine-readable, when status >= 400
    input_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    input_bytes: Mapped[int | None] = mapped_column(Integer)
    input_format: Mapped[str | None] = mapped_column(String(16))
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    model_name: Mapped[str | None] = mapped_column(String(128))
    decision: Mapped[str | None] = mapped_column(String(64))
    probabilities: Mapped[str | None] = mapped_column(Text)  # JSON {class: calibrated probability}
    threshold: Mapped[float | None] = mapped_column(Float)
    warnings: Mapped[str | None] = mapped_column(Text)  # JSON list of scope-warning codes
    latency_ms: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    """An API key: only its sha256 is stored; the secret is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public id, e.g. "k3f9a1c2d"
    name: Mapped[str] = mapped_column(String(128))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
