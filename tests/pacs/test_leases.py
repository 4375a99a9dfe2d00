"""Lease renewal (heartbeat) while a job runs — SQLite and a real PostgreSQL, deterministic.

The queues share a fake clock that the tests move forward: a lease "expires" because the clock was
advanced past it, never because the test slept. The only waits are for the heartbeat thread to have
renewed once after a move (it beats every 20 ms), each bounded at a few seconds.

- a renewal restarts the lease, so a job slower than its lease is not taken over;
- the heartbeat thread renews while the job runs; a job finished by its worker is not a "loss";
- a renewal that finds the job taken over says so, and the worker then sends nothing, records
  nothing, and leaves the film to the new owner; after ``max_hold_s`` renewals stop (a hung job).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from pydicom.dataset import Dataset
from tests.pacs.conftest import film_dataset
from tests.pacs.test_jobs import MODEL, add_jobs, db_url, expire_lease, row  # noqa: F401 (fixture)
from tests.pacs.test_robustness import FakePacs

from pneumocxr.inference import InputSummary, ModelIdentity, PredictionResult
from pneumocxr.pacs.jobs import Job, JobQueue, LeaseHeartbeat, QueuePolicy
from pneumocxr.pacs.worker import Analysis, DicomWebRetriever, PacsWorker
from pneumocxr.store import open_store

LEASE = 60.0
BEAT = 0.02  # the heartbeat thread's interval in these tests (seconds of real time)


class FakeClock:
    """An aware UTC "now" that moves only when told to (shared by every queue of a test)."""

    def __init__(self):
        self.moment = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_queue(db_url, clock):  # noqa: F811 (the fixture imported above)
    stores = {}

    def make(worker: str, **policy) -> JobQueue:
        policy = {"lease_s": LEASE, "heartbeat_s": BEAT, **policy}
        store = stores.setdefault(worker, open_store(db_url))
        return JobQueue(store, MODEL, worker, QueuePolicy(**policy), clock=clock)

    yield make
    for store in stores.values():
        store.dispose()


def renewed_after_now(q: JobQueue, job_id: int) -> Callable[[], bool]:
    """True once the job's lease was (re)started at the clock's current time."""
    target = q.now()
    return lambda: row(q, job_id)["locked_at"] == target


def test_a_renewal_restarts_the_lease_and_a_taken_over_job_cannot_be_renewed(make_queue, clock):
    a, b = make_queue("a", heartbeat_s=3600), make_queue("b")
    add_jobs(a, 1)
    job = a.claim()
    clock.advance(0.75 * LEASE)
    assert a.renew(job)
    clock.advance(0.75 * LEASE)  # 1.5 leases since the claim, 0.75 since the renewal
    assert b.claim() is None
    clock.advance(0.5 * LEASE)  # the renewal has expired too: b takes over
    taken = b.claim()
    assert taken.id == job.id and taken.attempts == 2
    assert not a.renew(job)  # a's claim is gone ...
    assert row(a, job.id)["locked_by"] == "b"  # ... and its failed renewal changed nothing
    assert b.renew(taken)


def test_the_heartbeat_keeps_a_slow_job_from_being_taken_over(make_queue, clock):
    a, b = make_queue("a"), make_queue("b")
    add_jobs(a, 1)
    job = a.claim()
    with LeaseHeartbeat(a, job) as lease:
        for _ in range(4):  # four times 0.75 of a lease: three leases in all
            clock.advance(0.75 * LEASE)
            wait_for(renewed_after_now(a, job.id), "the heartbeat to renew the lease")
            assert b.claim() is None
    assert not lease.lost and lease.renewals >= 4
    assert a.done(job, decision="NORMAL", probability=0.1, sr_uid="1.9.1", sc_uid="1.9.2")
    assert row(a, job.id)["status"] == "done" and row(a, job.id)["attempts"] == 1


def test_the_heartbeat_says_when_the_job_was_taken_over_and_stops(make_queue, caplog):
    a, b = make_queue("a"), make_queue("b")
    add_jobs(a, 1)
    job = a.claim()
    expire_lease(a, job.id)  # a stalled (GC pause, suspended VM) past its lease ...
    assert b.claim().id == job.id  # ... and b took the job
    with caplog.at_level(logging.WARNING), LeaseHeartbeat(a, job) as lease:
        wait_for(lambda: lease.lost, "the heartbeat to notice")
        assert not lease.holds()
    assert f"job {job.id}: lease lost — taken over by another worker" in caplog.text
    assert row(a, job.id)["locked_by"] == "b" and row(a, job.id)["status"] == "running"


def test_a_job_its_worker_finished_is_not_reported_lost(make_queue, caplog):
    a = make_queue("a")
    add_jobs(a, 1)
    job = a.claim()
    with caplog.at_level(logging.WARNING), LeaseHeartbeat(a, job) as lease:
        assert a.done(job, decision="NORMAL", probability=0.1, sr_uid="1.9.1", sc_uid="1.9.2")
        wait_for(lambda: not lease._thread.is_alive(), "the heartbeat to find the job finished")
    assert not lease.lost and "lease lost" not in caplog.text


def test_renewals_stop_after_max_hold_so_a_hung_job_can_be_taken_over(make_queue, clock, caplog):
    a, b = make_queue("a", max_hold_s=0.1), make_queue("b")
    add_jobs(a, 1)
    job = a.claim()
    with caplog.at_level(logging.WARNING), LeaseHeartbeat(a, job) as lease:
        wait_for(lambda: not lease._thread.is_alive(), "the heartbeat to give up")
        clock.advance(1.5 * LEASE)
        assert b.claim().id == job.id
    assert (
        f"job {job.id}: still running after 0.1 s: its lease is no longer renewed (presumed hung)"
        in caplog.text
    )


# ----------------------------------------------------------------------------- the worker


def prediction(p: float = 0.8) -> PredictionResult:
    names = ("NORMAL", "PNEUMONIA")
    probabilities = {names[0]: 1 - p, names[1]: p}
    return PredictionResult(
        label=names[int(p >= 0.5)],
        decision=int(p >= 0.5),
        class_names=names,
        probabilities=probabilities,
        raw_probabilities=probabilities,
        threshold=0.5,
        threshold_rule="youden",
        model=ModelIdentity("m", MODEL, None, "binary"),
        input=InputSummary("DICOM", 64, 64, None, "1" * 64),
    )


class CountingRetriever(DicomWebRetriever):
    def __init__(self, pacs):
        super().__init__(pacs)
        self.released: list[int] = []

    def release(self, job: Job) -> None:
        self.released.append(job.id)


def worker_on(
    q: JobQueue, analyze: Callable[[Dataset], Analysis]
) -> tuple[PacsWorker, FakePacs, CountingRetriever]:
    pacs = FakePacs(film_dataset(np.full((64, 64), 90, np.uint8)))
    retriever = CountingRetriever(pacs)
    return PacsWorker(pacs, q, analyze, retrievers={"dicomweb": retriever}), pacs, retriever


def test_a_job_slower_than_its_lease_is_done_once_by_its_worker(make_queue, clock):
    a, b = make_queue("a"), make_queue("b")

    def slow(ds: Dataset) -> Analysis:  # three leases of scoring, the heartbeat renewing meanwhile
        job_id = a.rows()[0]["id"]
        for _ in range(4):
            clock.advance(0.75 * LEASE)
            wait_for(renewed_after_now(a, job_id), "the heartbeat to renew the lease")
            assert b.claim() is None
        return Analysis(prediction(), np.zeros((64, 64)), None)

    worker, pacs, retriever = worker_on(a, slow)
    assert worker.discover() == 1
    assert worker.process_one()
    (r,) = a.rows()
    assert (r["status"], r["attempts"], r["decision"]) == ("done", 1, "PNEUMONIA")
    assert len(pacs.stored) == 2 and retriever.released == [r["id"]]


def test_a_worker_whose_job_was_taken_over_sends_and_records_nothing(make_queue, caplog):
    """The check before the write-back (a's heartbeat thread never beats here: no race with b)."""
    a, b = make_queue("a", heartbeat_s=3600), make_queue("b")
    taken: list[Job] = []

    def stalled(ds: Dataset) -> Analysis:  # a stalled past its lease, and b took the job meanwhile
        job_id = a.rows()[0]["id"]
        expire_lease(a, job_id)
        taken.append(b.claim())
        return Analysis(prediction(), np.zeros((64, 64)), None)

    worker, pacs, retriever = worker_on(a, stalled)
    worker.discover()
    with caplog.at_level(logging.INFO):
        assert worker.process_one()
    (r,) = a.rows()
    assert taken[0].id == r["id"] and taken[0].attempts == 2
    assert (r["status"], r["locked_by"], r["decision"]) == ("running", "b", None)  # b's, untouched
    assert pacs.stored == [] and retriever.released == []  # no SR/SC; the film left for b
    assert f"job {r['id']}: lease lost — taken over by another worker" in caplog.text
    assert f"job {r['id']}: SR and SC not sent" in caplog.text
    assert b.done(taken[0], decision="NORMAL", probability=0.2, sr_uid="1.9.1", sc_uid="1.9.2")
