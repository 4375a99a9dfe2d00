"""The PACS jobs table as a queue (SQLite file; the claim race also on a real PostgreSQL): enqueue
once per (image, model), claim exclusively, leases taken over, finishes of a lost claim ignored,
backoff doubling to a cap, failure with a reason after max_attempts — and `pacs jobs` shows it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session
from tests.postgres import postgres_base_url, postgres_schema, with_options

from pneumocxr.cli.main import main
from pneumocxr.pacs.jobs import JobQueue, QueuePolicy
from pneumocxr.store import open_store
from pneumocxr.store.audit import AuditEntry, AuditLog
from pneumocxr.store.schema import PacsJob, PacsState

MODEL = "a" * 64


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "jobs.db")
    else:
        with postgres_schema(postgres_base_url()) as url:
            yield url


@pytest.fixture
def sqlite_db(tmp_path) -> str:
    return str(tmp_path / "jobs.db")


def queue(db: str, worker: str = "w1", model: str = MODEL, **policy) -> JobQueue:
    return JobQueue(open_store(db), model, worker, QueuePolicy(**policy))


def add_jobs(q: JobQueue, n: int, study: str = "1.2.3") -> list[str]:
    sops = [f"1.2.3.{i}" for i in range(1, n + 1)]
    for sop in sops:
        assert q.enqueue(study, "1.2.3.0", sop, "dicomweb")
    return sops


def row(q: JobQueue, job_id: int) -> dict:
    return next(r for r in q.rows() if r["id"] == job_id)


def expire_lease(q: JobQueue, job_id: int) -> None:
    """As if the claim were an hour old (its worker died long ago)."""
    with q.store.session() as session:
        session.execute(
            update(PacsJob).where(PacsJob.id == job_id).values(locked_at=q.now() - timedelta(hours=1))
        )


def make_due(q: JobQueue, job_id: int) -> None:
    with q.store.session() as session:
        session.execute(
            update(PacsJob).where(PacsJob.id == job_id).values(next_attempt_at=q.now() - timedelta(seconds=1))
        )


def entry(request_id: str) -> AuditEntry:
    return AuditEntry(request_id=request_id, route="pacs", status=200, latency_ms=1.0, decision="NORMAL")


def test_enqueue_is_idempotent_per_instance_and_model_and_a_new_model_makes_a_new_job(sqlite_db):
    q = queue(sqlite_db)
    assert q.enqueue("1.2.3", "1.2.3.0", "1.2.3.1", "dicomweb")
    assert not q.enqueue("1.2.3", "1.2.3.0", "1.2.3.1", "dicomweb")  # re-announced: nothing new
    assert not q.enqueue("1.2.3", "1.2.3.0", "1.2.3.1", "cstore")  # re-sent another way: neither
    new_model = queue(sqlite_db, model="b" * 64)
    assert new_model.enqueue("1.2.3", "1.2.3.0", "1.2.3.1", "dicomweb")
    rows = q.rows()
    assert len(rows) == 2 and {r["model_sha256"] for r in rows} == {MODEL, "b" * 64}
    job = q.claim()
    assert job.model_sha256 == MODEL and q.claim() is None  # each worker sees its own model's jobs only


def test_a_done_job_is_never_claimed_again_even_when_re_enqueued(sqlite_db):
    q = queue(sqlite_db)
    add_jobs(q, 1)
    job = q.claim()
    assert q.done(job, decision="NORMAL", probability=0.1, sr_uid="1.9.1", sc_uid="1.9.2")
    assert not q.enqueue("1.2.3", "1.2.3.0", "1.2.3.1", "dicomweb")
    assert q.claim() is None and row(q, job.id)["status"] == "done"


def test_concurrent_claims_never_hand_out_one_job_twice(db_url):
    """Eight workers (own engine each, as separate processes would have) race for 60 jobs."""
    add_jobs(queue(db_url), 60)
    workers = [queue(db_url, worker=f"w{i}") for i in range(8)]
    start = threading.Barrier(len(workers))
    claimed: dict[str, list[int]] = {w.worker_id: [] for w in workers}

    def work(q: JobQueue) -> None:
        start.wait()
        while (job := q.claim()) is not None:
            claimed[q.worker_id].append(job.id)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    every = [job_id for ids in claimed.values() for job_id in ids]
    assert len(every) == len(set(every)) == 60  # each job exactly once, none left
    rows = workers[0].rows()
    assert all(r["status"] == "running" and r["attempts"] == 1 for r in rows)
    assert {r["locked_by"] for r in rows if r["id"] in claimed["w3"]} <= {"w3"}


def test_an_expired_lease_is_taken_over_and_the_old_workers_finish_is_ignored(db_url):
    old, new = queue(db_url, "old", lease_s=60), queue(db_url, "new", lease_s=60)
    add_jobs(old, 1)
    orphan = old.claim()
    assert new.claim() is None  # the lease still holds
    expire_lease(old, orphan.id)
    taken = new.claim()
    assert taken.id == orphan.id and taken.attempts == 2
    assert row(new, taken.id)["locked_by"] == "new"

    # the old worker was only slow, not dead: whatever it reports now changes nothing
    assert not old.done(
        orphan, decision="PNEUMONIA", probability=0.9, sr_uid="1.9.1", sc_uid="1.9.2", audit=entry("old")
    )
    assert not old.failed(orphan, "late")
    old.retry(orphan, "late")
    assert row(new, taken.id)["status"] == "running" and row(new, taken.id)["locked_by"] == "new"
    assert new.done(
        taken, decision="NORMAL", probability=0.2, sr_uid="1.9.1", sc_uid="1.9.2", audit=entry("new")
    )
    final = row(new, taken.id)
    assert (final["status"], final["decision"], final["locked_by"]) == ("done", "NORMAL", None)
    assert [r["request_id"] for r in AuditLog(new.store).rows()] == ["new"]  # one audit row


def test_a_restarted_worker_with_the_same_id_does_not_accept_its_dead_predecessors_finish(sqlite_db):
    """``--worker-id`` is fixed in a service file: the claim is (worker, attempt), not the name alone."""
    before, after = queue(sqlite_db, "ward-a"), queue(sqlite_db, "ward-a")
    add_jobs(before, 1)
    stale = before.claim()
    expire_lease(before, stale.id)
    fresh = after.claim()
    assert fresh.attempts == 2
    assert not before.done(stale, decision="NORMAL", probability=0.1, sr_uid="1.9.1", sc_uid="1.9.2")
    assert row(after, fresh.id)["status"] == "running"
    assert after.done(fresh, decision="NORMAL", probability=0.1, sr_uid="1.9.1", sc_uid="1.9.2")


def test_retry_backoff_doubles_from_its_start_and_stops_at_the_cap(sqlite_db):
    q = queue(sqlite_db, backoff_s=1.0, backoff_cap_s=5.0, max_attempts=10)
    assert [q.backoff(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    add_jobs(q, 1)
    job_id = q.rows()[0]["id"]
    delays = []
    for attempt in range(1, 6):
        job = q.claim()
        assert job.id == job_id and job.attempts == attempt
        assert q.retry(job, "the PACS at http://pacs is unreachable (ConnectionError)")
        r = row(q, job_id)
        assert r["status"] == "pending" and "unreachable" in r["reason"]
        delays.append((r["next_attempt_at"] - r["updated_at"]).total_seconds())
        assert q.claim() is None  # not due before its backoff
        make_due(q, job_id)
    assert delays == pytest.approx([1.0, 2.0, 4.0, 5.0, 5.0], abs=0.05)


def test_max_attempts_fails_the_job_with_its_reason_and_it_is_not_claimed_again(sqlite_db):
    q = queue(sqlite_db, max_attempts=3, backoff_s=0.0)
    add_jobs(q, 1)
    outcomes = [q.retry(q.claim(), "the PACS answered HTTP 503") for _ in range(3)]
    assert outcomes == [True, True, False]
    r = q.rows()[0]
    assert r["status"] == "failed" and r["attempts"] == 3
    assert r["reason"] == "gave up after 3 attempts: the PACS answered HTTP 503"
    assert q.claim() is None


def test_a_film_that_kills_its_worker_every_time_fails_after_max_attempts(sqlite_db):
    """Leases expire (kill -9, OOM, a hang) on every attempt: failed, not handed on forever."""
    q = queue(sqlite_db, max_attempts=2)
    add_jobs(q, 1)
    poison = q.claim()
    expire_lease(q, poison.id)
    again = q.claim()
    assert again.id == poison.id and again.attempts == 2
    expire_lease(q, poison.id)
    assert q.claim() is None
    r = row(q, poison.id)
    assert r["status"] == "failed" and r["attempts"] == 2 and "lease" in r["reason"]


def test_set_state_survives_two_workers_inserting_the_first_value_at_once(db_url, monkeypatch):
    a, b = queue(db_url, "a"), queue(db_url, "b")
    a.set_state("orthanc_changes_seq", "10")
    real_get = Session.get
    # b read "no row" just before a inserted it: its insert collides with a's
    monkeypatch.setattr(
        Session,
        "get",
        lambda self, cls, key, **kw: None if cls is PacsState else real_get(self, cls, key, **kw),
    )
    b.set_state("orthanc_changes_seq", "12")
    monkeypatch.undo()
    assert a.get_state("orthanc_changes_seq") == "12"


def test_leases_hold_between_workers_whose_postgres_sessions_use_different_time_zones():
    """A worker whose session runs in Tokyo time must not see a UTC worker's fresh claim as hours
    old (or the other way round): naive UTC times stored in ``timestamptz`` would be read as local."""
    with postgres_schema(postgres_base_url()) as url:
        tokyo_url = with_options(url, "-ctimezone=Asia/Tokyo")
        honolulu_url = with_options(url, "-ctimezone=Pacific/Honolulu")
        utc, tokyo, honolulu = queue(url, "utc"), queue(tokyo_url, "tokyo"), queue(honolulu_url, "honolulu")
        add_jobs(tokyo, 2)
        live = tokyo.claim()  # a fresh claim, made at Tokyo's "now"
        assert honolulu.enqueue("1.2.4", "1.2.4.0", "1.2.4.1", "dicomweb")  # due at Honolulu's "now"
        assert utc.claim().id == live.id + 1  # the other due job, not Tokyo's live one
        third = utc.claim()  # Honolulu's job is due now, not in ten hours
        assert third is not None and third.sop_instance_uid == "1.2.4.1"
        for q in (utc, tokyo, honolulu):
            q.store.dispose()


def test_pacs_jobs_lists_failed_jobs_with_their_reasons(sqlite_db, capsys):
    q = queue(sqlite_db, max_attempts=1)
    add_jobs(q, 2)
    q.failed(q.claim(), "DICOM pixel data cannot be decoded (truncated)")
    q.retry(q.claim(), "the PACS answered HTTP 503")  # max_attempts 1: failed at once
    assert main(["pacs", "jobs", "--db", sqlite_db, "--status", "failed"]) == 0
    out = capsys.readouterr().out
    assert "failed" in out and "pixel data cannot be decoded" in out
    assert "gave up after 1 attempts: the PACS answered HTTP 503" in out
    assert out.strip().endswith("2 job(s)")
    assert main(["pacs", "jobs", "--db", sqlite_db, "--status", "done"]) == 0
    assert capsys.readouterr().out.strip().endswith("0 job(s)")


def failed_jobs(q: JobQueue, n: int) -> list[int]:
    """``n`` jobs failed for good (max_attempts 1), and one done job after them."""
    add_jobs(q, n + 1)
    ids = []
    for _ in range(n):
        job = q.claim()
        assert not q.retry(job, "the PACS answered HTTP 503")  # max_attempts 1: failed at once
        ids.append(job.id)
    done = q.claim()
    assert q.done(done, decision="NORMAL", probability=0.1, sr_uid="1.9.1", sc_uid="1.9.2")
    return [*ids, done.id]


def test_pacs_jobs_retry_requeues_failed_jobs_by_id_and_a_worker_takes_them_again(db_url, capsys):
    q = queue(db_url, max_attempts=1)
    first, second, done = failed_jobs(q, 2)
    assert main(["pacs", "jobs", "retry", str(first), "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert f"re-queued job {first}  model {MODEL[:12]}  after 1 attempt(s)" in out
    assert "was: gave up after 1 attempts: the PACS answered HTTP 503" in out
    assert out.strip().endswith("1 job(s) re-queued")
    r = row(q, first)
    assert (r["status"], r["attempts"], r["locked_by"]) == ("pending", 0, None)
    assert (
        r["reason"]
        == "re-queued by hand; it had failed: gave up after 1 attempts: the PACS answered HTTP 503"
    )
    assert row(q, second)["status"] == "failed"  # only the one named

    again = q.claim()  # due at once, with a whole set of attempts again
    assert again.id == first and again.attempts == 1 and q.claim() is None
    assert q.done(again, decision="PNEUMONIA", probability=0.9, sr_uid="1.9.3", sc_uid="1.9.4")
    assert row(q, first)["status"] == "done" and row(q, done)["status"] == "done"


def test_pacs_jobs_retry_failed_requeues_every_failed_job(sqlite_db, capsys):
    q = queue(sqlite_db, max_attempts=1)
    first, second, done = failed_jobs(q, 2)
    # --db before the action is kept too
    assert main(["pacs", "jobs", "--db", sqlite_db, "retry", "--failed"]) == 0
    out = capsys.readouterr().out
    assert f"re-queued job {first} " in out and f"re-queued job {second} " in out
    assert f"re-queued job {done} " not in out and out.strip().endswith("2 job(s) re-queued")
    assert [r["status"] for r in q.rows()] == ["pending", "pending", "done"]
    assert main(["pacs", "jobs", "retry", "--failed", "--db", sqlite_db]) == 0  # none left: fine
    assert capsys.readouterr().out.strip() == "0 job(s) re-queued"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["999"], "job 999 does not exist (`pneumocxr pacs jobs` lists them)"),
        (
            ["{first}", "999"],
            "job 999 does not exist (`pneumocxr pacs jobs` lists them)",
        ),  # all or nothing: {first} stays failed
        (["{done}"], "job {done} is done, not failed: only failed jobs can be retried"),
        ([], "pacs jobs retry: give job ids (JOB_ID ...) or --failed, not both and not neither"),
        (
            ["{first}", "--failed"],
            "pacs jobs retry: give job ids (JOB_ID ...) or --failed, not both and not neither",
        ),
    ],
)
def test_pacs_jobs_retry_names_an_unknown_or_unfailed_job_in_one_line_and_changes_nothing(
    sqlite_db, capsys, args, message
):
    q = queue(sqlite_db, max_attempts=1)
    first, _, done = failed_jobs(q, 2)
    before = q.rows()
    ids = {"first": first, "done": done}
    assert main(["pacs", "jobs", "retry", "--db", sqlite_db, *(a.format(**ids) for a in args)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"pneumocxr: error: {message.format(**ids)}"  # one line, no traceback
    assert "re-queued" not in captured.out
    assert q.rows() == before
