"""The audit log: one row per request that reached the model, and its export.

``AuditLog.record`` commits the row before the caller answers; if it raises, the caller must fail
the request (``AuditError``): there are no unaudited answers.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from pneumocxr.errors import ConfigError, PneumoCXRError
from pneumocxr.store.db import Store
from pneumocxr.store.schema import AuditRecord

logger = logging.getLogger(__name__)

EXPORT_COLUMNS = (
    "created_at",
    "request_id",
    "key_id",
    "route",
    "status",
    "error_code",
    "input_sha256",
    "input_bytes",
    "input_format",
    "model_sha256",
    "model_name",
    "decision",
    "probabilities",
    "threshold",
    "warnings",
    "latency_ms",
)


class AuditError(PneumoCXRError):
    """The audit row could not be written; the request it belongs to must fail."""


@dataclass(frozen=True)
class AuditEntry:
    """What one request leaves in the log (see ``schema.AuditRecord``)."""

    request_id: str
    route: str
    status: int
    latency_ms: float
    key_id: str | None = None
    error_code: str | None = None
    input_sha256: str | None = None
    input_bytes: int | None = None
    input_format: str | None = None
    model_sha256: str | None = None
    model_name: str | None = None
    decision: str | None = None
    probabilities: Mapping[str, float] | None = None
    threshold: float | None = None
    warnings: tuple[str, ...] = ()


def prediction_fields(result: Any) -> dict[str, Any]:
    """The audit fields a prediction fills (``inference.PredictionResult``, read by attribute): the
    input's sha256, size and format, the model's sha256 and name, the decision, probabilities,
    threshold and scope-warning codes — the same for the HTTP service and the PACS worker."""
    return {
        "input_sha256": result.input.sha256,
        "input_bytes": result.input.size_bytes,
        "input_format": result.input.format,
        "model_sha256": result.model.sha256,
        "model_name": result.model.name,
        "decision": result.label,
        "probabilities": result.probabilities,
        "threshold": result.threshold,
        "warnings": tuple(w.code for w in result.warnings),
    }


class AuditLog:
    def __init__(self, store: Store):
        self.store = store

    def record(self, entry: AuditEntry) -> None:
        """Commit one row (raises AuditError: the caller fails the request)."""
        row = audit_record(entry)
        try:
            with self.store.session() as session:
                session.add(row)
        except SQLAlchemyError as exc:
            logger.error("audit write failed for request %s: %s", entry.request_id, type(exc).__name__)
            raise AuditError(f"the audit log could not be written ({type(exc).__name__})") from None

    def rows(self, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """Rows in time order (``since``: inclusive lower bound)."""
        query = select(AuditRecord).order_by(AuditRecord.created_at, AuditRecord.id)
        if since is not None:
            if self.store.engine.dialect.name == "sqlite":  # SQLite stores UTC without an offset
                since = since.astimezone(timezone.utc).replace(tzinfo=None)
            query = query.where(AuditRecord.created_at >= since)
        with self.store.session() as session:
            for record in session.scalars(query):
                yield {column: getattr(record, column) for column in EXPORT_COLUMNS}

    def export(self, out: TextIO, *, since: datetime | None = None, fmt: str = "csv") -> int:
        """Write rows as CSV or JSON lines to ``out``; returns how many."""
        if fmt not in ("csv", "jsonl"):
            raise ConfigError(f"--format {fmt!r}: use csv or jsonl")
        count = 0
        writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS) if fmt == "csv" else None
        if writer is not None:
            writer.writeheader()
        for row in self.rows(since):
            moment = row["created_at"]  # UTC; SQLite hands it back without the offset
            row["created_at"] = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat()
            if writer is not None:
                writer.writerow(row)
            else:
                out.write(json.dumps(row) + "\n")
            count += 1
        return count


def audit_record(entry: AuditEntry) -> AuditRecord:
    """The row of ``entry``, for callers that commit it with other changes in one transaction (the
    PACS worker writes a job's audit row with the job's ``done``)."""
    return AuditRecord(
        created_at=datetime.now(timezone.utc),
        request_id=entry.request_id,
        key_id=entry.key_id,
        route=entry.route,
        status=entry.status,
        error_code=entry.error_code,
        input_sha256=entry.input_sha256,
        input_bytes=entry.input_bytes,
        input_format=entry.input_format,
        model_sha256=entry.model_sha256,
        model_name=entry.model_name,
        decision=entry.decision,
        probabilities=json.dumps(dict(entry.probabilities)) if entry.probabilities is not None else None,
        threshold=entry.threshold,
        warnings=json.dumps(list(entry.warnings)),
        latency_ms=entry.latency_ms,
    )


def parse_since(text: str | None) -> datetime | None:
    """``--since`` as an ISO date or date-time (naive = UTC)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: use an ISO date or time, e.g. 2026-12-01 or 2026-12-01T08:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
