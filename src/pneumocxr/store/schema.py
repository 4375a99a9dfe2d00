"""The tables (SQLAlchemy 2 declarative). Changes go through an Alembic migration in ``migrations/``:
``tests/store/test_migrations.py`` checks that the migrations build exactly these tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Integer, String, Text, UniqueConstraint
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


class PacsJob(Base):
    """One source image for one model: the unit the PACS worker does exactly once.

    Unique on (SOP instance, model sha256): a re-sent or re-announced image finds its row and adds
    nothing; a new model version is a new row, and so a new result."""

    __tablename__ = "pacs_jobs"
    __table_args__ = (
        UniqueConstraint("sop_instance_uid", "model_sha256", name="uq_pacs_jobs_instance_model"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    model_sha256: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))  # "dicomweb" | "cstore"
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending|running|done|skipped|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    locked_by: Mapped[str | None] = mapped_column(String(64))
    locked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str | None] = mapped_column(Text)  # why skipped / failed (never patient data)
    decision: Mapped[str | None] = mapped_column(String(64))
    probability: Mapped[float | None] = mapped_column(Float)
    sr_instance_uid: Mapped[str | None] = mapped_column(String(64))
    sc_instance_uid: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PacsState(Base):
    """Small persistent facts of the watcher, e.g. the last Orthanc /changes sequence number seen."""

    __tablename__ = "pacs_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
