"""The audit log: one committed row per answer, exported as CSV or JSON lines, ``--since`` in UTC."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from pneumocxr.errors import ConfigError
from pneumocxr.store import open_store
from pneumocxr.store.audit import EXPORT_COLUMNS, AuditEntry, AuditError, AuditLog, parse_since


@pytest.fixture
def log(db_url):
    store = open_store(db_url)
    yield AuditLog(store)
    store.dispose()


def entry(request_id: str, **fields) -> AuditEntry:
    base = {
        "route": "/v1/predict",
        "status": 200,
        "latency_ms": 12.5,
        "key_id": "kabc",
        "input_sha256": "0" * 64,
        "input_bytes": 1234,
        "input_format": "JPEG",
        "model_sha256": "f" * 64,
        "model_name": "custom_cnn",
        "decision": "PNEUMONIA",
        "probabilities": {"NORMAL": 0.25, "PNEUMONIA": 0.75},
        "threshold": 0.4,
        "warnings": ("age_out_of_range",),
    }
    return AuditEntry(request_id=request_id, **{**base, **fields})


def export(log: AuditLog, fmt: str, since=None) -> tuple[int, str]:
    out = io.StringIO()
    count = log.export(out, since=since, fmt=fmt)
    return count, out.getvalue()


def test_rows_round_trip_through_csv_and_jsonl(log):
    log.record(entry("r1"))
    log.record(entry("r2", status=422, error_code="unsupported_image", decision=None, probabilities=None))
    count, text_csv = export(log, "csv")
    rows = list(csv.DictReader(io.StringIO(text_csv)))
    assert count == 2 and [r["request_id"] for r in rows] == ["r1", "r2"]
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert json.loads(rows[0]["probabilities"]) == {"NORMAL": 0.25, "PNEUMONIA": 0.75}
    assert rows[1]["status"] == "422" and rows[1]["error_code"] == "unsupported_image"
    count, text_jsonl = export(log, "jsonl")
    lines = [json.loads(line) for line in text_jsonl.splitlines()]
    assert count == 2 and [line["request_id"] for line in lines] == ["r1", "r2"]
    assert lines[0]["key_id"] == "kabc" and json.loads(lines[0]["warnings"]) == ["age_out_of_range"]
    for line in lines:  # every time is UTC with its offset, whatever the database hands back
        assert datetime.fromisoformat(line["created_at"]).utcoffset() == timedelta(0)


def test_since_is_an_inclusive_utc_bound_whatever_offset_it_is_written_in(log):
    log.record(entry("old"))
    time.sleep(0.05)
    cut = datetime.now(timezone.utc)
    time.sleep(0.05)
    log.record(entry("new"))
    for since in (
        cut,
        cut.astimezone(timezone(timedelta(hours=5, minutes=30))),  # the same moment, written in IST
        cut.astimezone(timezone(timedelta(hours=-8))),
        parse_since(cut.replace(tzinfo=None).isoformat()),  # naive text = UTC
    ):
        count, text_jsonl = export(log, "jsonl", since)
        assert count == 1 and json.loads(text_jsonl)["request_id"] == "new", since
    assert export(log, "csv", cut - timedelta(hours=1))[0] == 2
    assert export(log, "csv", cut + timedelta(hours=1))[0] == 0
    # a moment east of UTC written naively would be hours off: naive text is read as UTC, not local time
    assert (
        export(log, "csv", parse_since((cut + timedelta(hours=2)).replace(tzinfo=None).isoformat()))[0] == 0
    )


def test_a_request_id_is_recorded_once(log):
    log.record(entry("same"))
    with pytest.raises(AuditError):
        log.record(entry("same"))
    assert export(log, "csv")[0] == 1


def test_a_failed_write_is_an_audit_error_that_names_no_input(log):
    with log.store.engine.begin() as connection:
        connection.execute(text("DROP TABLE audit_log"))
    with pytest.raises(AuditError, match="could not be written") as info:
        log.record(entry("lost"))
    assert "0000000000" not in str(info.value)


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "12/01/2026"])
def test_since_must_be_iso(value):
    with pytest.raises(ConfigError, match="ISO"):
        parse_since(value)


def test_export_format_must_be_known(log):
    with pytest.raises(ConfigError, match="csv or jsonl"):
        log.export(io.StringIO(), fmt="xml")
