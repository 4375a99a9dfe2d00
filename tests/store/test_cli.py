"""``pneumocxr serve keys create|list|revoke`` and ``pneumocxr audit export`` through ``main([...])``."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from pneumocxr.cli.main import main
from pneumocxr.store import open_store
from pneumocxr.store.audit import AuditEntry, AuditLog
from pneumocxr.store.keys import verify_key


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def created_token(out: str) -> str:
    return out.strip().splitlines()[-1]


def test_keys_create_list_revoke(db_url, capsys):
    code, out, _ = run(capsys, "serve", "keys", "create", "ward 3", "--db", db_url)
    assert code == 0 and "not shown again" in out
    token = created_token(out)
    key_id = token.split("_")[1]
    store = open_store(db_url)
    try:
        assert verify_key(store, token) == key_id
        code, out, _ = run(capsys, "serve", "keys", "list", "--db", db_url)
        assert code == 0 and key_id in out and "ward 3" in out and "active" in out
        assert token.split("_", 2)[2] not in out  # the secret is never listed
        code, out, _ = run(capsys, "serve", "keys", "revoke", key_id, "--db", db_url)
        assert code == 0 and f"revoked {key_id}" in out
        assert verify_key(store, token) is None
        code, out, _ = run(capsys, "serve", "keys", "list", "--db", db_url)
        assert "revoked 20" in out and "UTC" in out
    finally:
        store.dispose()


def test_db_given_before_keys_is_the_database_used(tmp_path, capsys, monkeypatch):
    """`serve --db X keys create` used to write the key into the default database silently."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "chosen.db"
    code, out, _ = run(capsys, "serve", "--db", str(db), "keys", "create", "ward")
    assert code == 0
    store = open_store(db)
    try:
        assert verify_key(store, created_token(out)) is not None
    finally:
        store.dispose()
    assert not (tmp_path / "output").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("serve", "keys", "create"), "say who or what will use the key"),
        (("serve", "keys", "revoke"), "keys list"),
        (("serve", "keys", "revoke", "k0123456789ab"), "no API key 'k0123456789ab'"),
        (("audit", "export", "--since", "last tuesday"), "ISO date"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, *argv, "--db", str(tmp_path / "a.db"))
    assert code == 2 and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_an_unreachable_database_is_one_line_without_the_password(capsys):
    url = "postgresql://someone:s3cret-pw@127.0.0.1:1/none?connect_timeout=2"
    code, _, err = run(capsys, "audit", "export", "--db", url)
    assert code == 2 and "cannot open the database" in err and "s3cret-pw" not in err


def test_no_alembic_chatter_on_stderr(tmp_path, capsys):
    code, _, err = run(capsys, "serve", "keys", "list", "--db", str(tmp_path / "a.db"))
    assert code == 0 and "alembic" not in err


def _fill(db_url: str) -> datetime:
    """Two rows an hour apart (times set directly); returns a moment between them."""
    store = open_store(db_url)
    log = AuditLog(store)
    log.record(AuditEntry("early", "/v1/predict", 200, 10.0, probabilities={"NORMAL": 0.9, "PNEUMONIA": 0.1}))
    log.record(AuditEntry("late", "/v1/predict", 422, 3.0, error_code="unsupported_image"))
    from sqlalchemy import update

    from pneumocxr.store.schema import AuditRecord

    now = datetime.now(timezone.utc)
    with store.session() as session:
        session.execute(
            update(AuditRecord)
            .where(AuditRecord.request_id == "early")
            .values(created_at=now - timedelta(hours=1))
        )
    store.dispose()
    return now - timedelta(minutes=30)


def test_audit_export_csv_to_a_file_and_jsonl_to_stdout_with_since(db_url, tmp_path, capsys):
    cut = _fill(db_url)
    out_file = tmp_path / "exports" / "audit.csv"
    code, _, err = run(capsys, "audit", "export", "--db", db_url, "--out", str(out_file))
    assert code == 0 and "2 audit rows" in err
    rows = list(csv.DictReader(out_file.open(newline="", encoding="utf-8")))
    assert [r["request_id"] for r in rows] == ["early", "late"]
    # --since written with an offset (here +02:00) is the same moment in UTC
    since = cut.astimezone(timezone(timedelta(hours=2))).isoformat()
    code, out, err = run(capsys, "audit", "export", "--db", db_url, "--format", "jsonl", "--since", since)
    lines = [json.loads(line) for line in io.StringIO(out)]
    assert code == 0 and [line["request_id"] for line in lines] == ["late"] and "1 audit rows" in err
    # naive --since is UTC: half an hour before now (UTC) selects only the late row on any machine
    naive = cut.replace(tzinfo=None).isoformat(timespec="seconds")
    code, out, _ = run(capsys, "audit", "export", "--db", db_url, "--format", "jsonl", "--since", naive)
    assert [json.loads(line)["request_id"] for line in io.StringIO(out)] == ["late"]
