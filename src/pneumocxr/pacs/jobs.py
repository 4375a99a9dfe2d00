"""The PACS jobs table as a queue: enqueue once, claim safely, finish exactly once.

- **Once per (SOP instance, model)**: the unique key makes a re-announced or re-sent image a no-op.
- **Claim** is an optimistic conditional UPDATE (``WHERE id = … AND status = … AND attempts = …``,
  the attempt count serving as the row's version): of several workers on one PostgreSQL table (or
  threads on one SQLite file) exactly one gets each job — no row locks held, no ``SKIP LOCKED``
  needed, the same code on both databases.
- **Leases**: a claimed job carries ``locked_at``; a worker killed mid-job leaves it ``running``, and
  once the lease has expired any worker may claim it again. While a job is processed its worker
  renews the lease (``LeaseHeartbeat``: every third of the lease, for at most ``max_hold_s``), so a
  job slower than the lease is not taken over while its worker is alive; a worker that finds its
  claim gone (``renew`` False) sends nothing for the job. Re-doing it is safe: its outputs have
  deterministic UIDs, so the PACS keeps one SR and one SC whatever happens. A job whose lease
  expired on every one of its ``max_attempts`` (a film that kills or hangs the worker) is ``failed``,
  not handed to the next worker to kill it too.
- **Finishing** is conditional on the claim (status ``running``, this worker, this attempt): a worker
  whose lease was taken over finishes nothing, and writes no audit row — the job is done once.
  ``done`` writes the job's audit row in the same transaction, so a kill -9 cannot leave a done job
  unaudited nor an audited job pending.
- **Retries** for transient failures (PACS down or slow) with exponential backoff and a cap; after
  ``max_attempts`` the job is ``failed`` with its reason. An unreadable film fails at once.
- **Re-queued by hand**: ``requeue`` puts failed jobs back (``pneumocxr pacs jobs retry``) with
  their attempts reset.
- **Times** are UTC: naive on SQLite (compared as text), aware on PostgreSQL (so ``timestamptz``
  columns hold the right instant whatever the server's ``TimeZone``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from pneumocxr.errors import ConfigError
from pneumocxr.store import Store
from pneumocxr.store.audit import AuditEntry, audit_record
from pneumocxr.store.schema import PacsJob, PacsState

logger = logging.getLogger(__name__)

STATUSES = ("pending", "running", "done", "skipped", "failed")
FINAL = frozenset({"done", "skipped", "failed"})  # nothing more will happen to these jobs


def now(aware: bool = False) -> datetime:
    """UTC now; naive unless ``aware`` (SQLite stores and compares timestamps without an offset)."""
    moment = datetime.now(timezone.utc)
    return moment if aware else moment.replace(tzinfo=None)


@dataclass(frozen=True)
class Job:
    id: int
    study_instance_uid: str
    series_instance_uid: str | None
    sop_instance_uid: str
    model_sha256: str
    source: str
    attempts: int


@dataclass(frozen=True)
class QueuePolicy:
    lease_s: float = 300.0  # a running job older than this is presumed dead and may be claimed again
    max_attempts: int = 5  # claims (transient failures, expired leases) before a job is failed for good
    backoff_s: float = 2.0  # first retry delay; doubles per attempt
    backoff_cap_s: float = 300.0
    heartbeat_s: float | None = None  # seconds between lease renewals while a job runs; None: lease_s / 3
    max_hold_s: float = 3600.0  # renewals stop after this long: a job still running is presumed hung

    @property
    def renew_every_s(self) -> float:
        return self.heartbeat_s if self.heartbeat_s is not None else self.lease_s / 3


Clock = Callable[[], datetime]  # an aware UTC datetime (tests pass a fake one)


class JobQueue:
    def __init__(
        self,
        store: Store,
        model_sha256: str,
        worker_id: str,
        policy: QueuePolicy = QueuePolicy(),
        *,
        clock: Clock | None = None,
    ):
        self.store, self.model_sha256, self.worker_id, self.policy = store, model_sha256, worker_id, policy
        self._aware = store.engine.dialect.name != "sqlite"
        self._clock = clock

    def now(self) -> datetime:
        if self._clock is None:
            return now(self._aware)
        moment = self._clock().astimezone(timezone.utc)
        return moment if self._aware else moment.replace(tzinfo=None)

    def enqueue(self, study: str, series: str | None, sop: str, source: str) -> bool:
        """Add a job for ``sop`` with this model; False when it already exists (any status)."""
        moment = self.now()
        row = PacsJob(
            sop_instance_uid=sop,
            model_sha256=self.model_sha256,
            study_instance_uid=study,
            series_instance_uid=series,
            source=source,
            status="pending",
            attempts=0,
            next_attempt_at=moment,
            created_at=moment,
            updated_at=moment,
        )
        try:
            with self.store.session() as session:
                session.add(row)
        except IntegrityError:
            return False
        return True

    def claim(self, sources: Collection[str] | None = None) -> Job | None:
        """The next due job, now ``running`` for this worker (None when there is none).

        ``sources``: only jobs from these sources ("dicomweb", "cstore") — a C-STORE listener and a
        DICOMweb watcher can share one table, each taking only the jobs it can fetch the image of."""
        moment = self.now()
        expired = moment - timedelta(seconds=self.policy.lease_s)
        self._fail_exhausted_leases(moment, expired)
        claimable = and_(
            PacsJob.model_sha256 == self.model_sha256,
            or_(
                and_(PacsJob.status == "pending", PacsJob.next_attempt_at <= moment),
                and_(PacsJob.status == "running", PacsJob.locked_at < expired),
            ),
        )
        if sources is not None:
            claimable = and_(claimable, PacsJob.source.in_(list(sources)))
        with self.store.session() as session:
            candidates = session.execute(
                select(PacsJob.id, PacsJob.status, PacsJob.attempts)
                .where(claimable)
                .order_by(PacsJob.id)
                .limit(8)
            ).all()
        for job_id, status, attempts in candidates:
            # attempts is the row's version: every claim increments it, so "same status, same
            # attempts" means nobody claimed it since we looked (not even claimed, retried and
            # put back pending with a backoff in between)
            with self.store.session() as session:
                taken = session.execute(
                    update(PacsJob)
                    .where(PacsJob.id == job_id, PacsJob.status == status, PacsJob.attempts == attempts)
                    .values(
                        status="running",
                        locked_by=self.worker_id,
                        locked_at=moment,
                        attempts=PacsJob.attempts + 1,
                        updated_at=moment,
                    )
                ).rowcount
            if taken == 1:
                if status == "running":
                    logger.warning("job %d: lease expired (worker died?); taken over", job_id)
                return self._job(job_id)
        return None

    def renew(self, job: Job) -> bool:
        """Extend this worker's lease on ``job`` to a full lease from now; False when the claim is
        gone (the lease expired and another worker — or this one, restarted — took the job over, or
        it was finished): then the caller must write nothing for the job."""
        moment = self.now()
        with self.store.session() as session:
            renewed = session.execute(
                update(PacsJob).where(*self._claim_holds(job)).values(locked_at=moment, updated_at=moment)
            ).rowcount
        return renewed == 1

    def done(
        self,
        job: Job,
        *,
        decision: str,
        probability: float,
        sr_uid: str,
        sc_uid: str | None,
        audit: AuditEntry | None = None,
    ) -> bool:
        """Mark ``job`` done (and write ``audit`` in the same transaction); False when this worker no
        longer holds the claim (its lease was taken over): then nothing is written."""
        return self._finish(
            job,
            "done",
            audit=audit,
            decision=decision,
            probability=probability,
            sr_instance_uid=sr_uid,
            sc_instance_uid=sc_uid,
        )

    def skipped(self, job: Job, reason: str) -> bool:
        return self._finish(job, "skipped", reason=reason)

    def failed(self, job: Job, reason: str) -> bool:
        return self._finish(job, "failed", reason=reason)

    def retry(self, job: Job, reason: str) -> bool:
        """A transient failure: try again later (exponential backoff), or fail after max_attempts.
        True when the job will be tried again, False when it has now failed for good."""
        if job.attempts >= self.policy.max_attempts:
            # not failed by us (the claim was lost): the job's new owner decides, so not "finished"
            return not self.failed(job, f"gave up after {job.attempts} attempts: {reason}")
        delay = self.backoff(job.attempts)
        logger.warning("job %d: %s; retry %d in %.1f s", job.id, reason, job.attempts + 1, delay)
        self._finish(job, "pending", reason=reason, next_attempt_at=self.now() + timedelta(seconds=delay))
        return True

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try after ``attempts`` failed ones: doubling from backoff_s, capped."""
        return min(self.policy.backoff_cap_s, self.policy.backoff_s * 2 ** max(0, attempts - 1))

    def status_of(self, sop_instance_uid: str) -> str | None:
        """The status of this image's job with this model (None: there is none)."""
        with self.store.session() as session:
            return session.scalar(
                select(PacsJob.status).where(
                    PacsJob.sop_instance_uid == sop_instance_uid, PacsJob.model_sha256 == self.model_sha256
                )
            )

    def rows(self, status: str | None = None) -> list[dict[str, Any]]:
        query = select(PacsJob).order_by(PacsJob.id)
        if status is not None:
            query = query.where(PacsJob.status == status)
        with self.store.session() as session:
            return [
                {c.name: getattr(r, c.name) for c in PacsJob.__table__.columns}
                for r in session.scalars(query)
            ]

    def requeue(self, job_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Failed jobs back to ``pending``, due now, with their attempts reset (any model): those of
        ``job_ids``, or every failed job when it is None. All or nothing: ConfigError naming the id
        when one does not exist or is not failed. Returns the re-queued rows as they were."""
        query = select(PacsJob).order_by(PacsJob.id)
        if job_ids is None:
            query = query.where(PacsJob.status == "failed")
        else:
            query = query.where(PacsJob.id.in_(list(job_ids)))
        with self.store.session() as session:
            rows = {
                r.id: {c.name: getattr(r, c.name) for c in PacsJob.__table__.columns}
                for r in session.scalars(query)
            }
            wanted = sorted(rows) if job_ids is None else list(dict.fromkeys(job_ids))
            for job_id in wanted:
                if job_id not in rows:
                    raise ConfigError(f"job {job_id} does not exist (`pneumocxr pacs jobs` lists them)")
                status = rows[job_id]["status"]
                if status != "failed":
                    raise ConfigError(
                        f"job {job_id} is {status}, not failed: only failed jobs can be retried"
                    )
            moment = self.now()
            for job_id in wanted:
                was = rows[job_id]["reason"]
                changed = session.execute(
                    update(PacsJob)
                    .where(PacsJob.id == job_id, PacsJob.status == "failed")  # nobody changed it since
                    .values(
                        status="pending",
                        attempts=0,
                        next_attempt_at=moment,
                        locked_by=None,
                        locked_at=None,
                        reason=f"re-queued by hand; it had failed: {was}" if was else "re-queued by hand",
                        updated_at=moment,
                    )
                ).rowcount
                if changed != 1:  # raising rolls the whole re-queue back
                    raise ConfigError(f"job {job_id} changed while it was being re-queued; try again")
        return [rows[job_id] for job_id in wanted]

    def get_state(self, name: str, default: str | None = None) -> str | None:
        with self.store.session() as session:
            row = session.get(PacsState, name)
            return row.value if row is not None else default

    def set_state(self, name: str, value: str) -> None:
        """Insert or update; two workers inserting the first value at once both succeed."""
        try:
            with self.store.session() as session:
                row = session.get(PacsState, name)
                if row is None:
                    session.add(PacsState(name=name, value=value))
                else:
                    row.value = value
        except IntegrityError:  # another worker inserted it between our read and our insert
            with self.store.session() as session:
                session.execute(update(PacsState).where(PacsState.name == name).values(value=value))

    def _finish(self, job: Job, status: str, *, audit: AuditEntry | None = None, **values: Any) -> bool:
        """Leave ``running`` — only if this claim (worker and attempt) still holds the job."""
        with self.store.session() as session:
            finished = session.execute(
                update(PacsJob)
                .where(*self._claim_holds(job))
                .values(status=status, locked_by=None, locked_at=None, updated_at=self.now(), **values)
            ).rowcount
            if finished == 1 and audit is not None:
                session.add(audit_record(audit))
        if finished != 1:
            logger.warning(
                "job %d: lost its claim (lease expired, taken over); not marked %s", job.id, status
            )
        return finished == 1

    def _claim_holds(self, job: Job) -> tuple:
        """This claim (worker and attempt) still holds the job: the condition of every write for it."""
        return (
            PacsJob.id == job.id,
            PacsJob.status == "running",
            PacsJob.locked_by == self.worker_id,
            PacsJob.attempts == job.attempts,
        )

    def _fail_exhausted_leases(self, moment: datetime, expired: datetime) -> None:
        """Expired leases of jobs already claimed max_attempts times → failed (a poison film)."""
        with self.store.session() as session:
            session.execute(
                update(PacsJob)
                .where(
                    PacsJob.model_sha256 == self.model_sha256,
                    PacsJob.status == "running",
                    PacsJob.locked_at < expired,
                    PacsJob.attempts >= self.policy.max_attempts,
                )
                .values(
                    status="failed",
                    reason=f"the worker stopped (killed, crashed or hung past the {self.policy.lease_s:g} s "
                    f"lease) during each of its {self.policy.max_attempts} attempts",
                    locked_by=None,
                    locked_at=None,
                    updated_at=moment,
                )
            )

    def _job(self, job_id: int) -> Job:
        with self.store.session() as session:
            row = session.get(PacsJob, job_id)
            return Job(
                row.id,
                row.study_instance_uid,
                row.series_instance_uid,
                row.sop_instance_uid,
                row.model_sha256,
                row.source,
                row.attempts,
            )


class LeaseHeartbeat:
    """Renew ``job``'s lease from a background thread while the job is processed (a context manager).

    Every ``policy.renew_every_s`` (a third of the lease by default) the lease is renewed, so a job
    slower than its lease is not taken over while its worker is alive. When a renewal finds the claim
    gone — the worker stalled past its lease and another worker took the job — ``lost`` is set and
    renewing stops; ``holds()`` is the check before anything is written for the job. After
    ``policy.max_hold_s`` renewing stops too: a job that long is presumed hung, and its lease is left
    to expire so that another worker may take it (and ``max_attempts`` can fail a film that hangs
    every worker)."""

    def __init__(self, queue: JobQueue, job: Job):
        self.queue, self.job = queue, job
        self.renewals = 0
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job.id}", daemon=True)
        self._started = time.monotonic()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def holds(self) -> bool:
        """The check before the write-back: renew now (so the send that follows has a whole lease);
        False, logged, when the claim is gone — then nothing may be written for the job."""
        if self.lost:
            return False
        if self.queue.renew(self.job):
            self.renewals += 1
            return True
        self._lose()
        return False

    def _lose(self) -> None:
        self._lost.set()
        logger.error(
            "job %d: lease lost — taken over by another worker while this one processed it (attempt %d); "
            "this worker sends no results for it",
            self.job.id,
            self.job.attempts,
        )

    def _finished_here(self) -> bool:
        """The claim ended because this worker finished the job (not because it was taken over):
        the same attempt, no longer running."""
        with self.queue.store.session() as session:
            row = session.get(PacsJob, self.job.id)
            return row is not None and row.attempts == self.job.attempts and row.status != "running"

    def _run(self) -> None:
        policy = self.queue.policy
        while not self._stop.wait(policy.renew_every_s):
            if time.monotonic() - self._started > policy.max_hold_s:
                logger.warning(
                    "job %d: still running after %g s: its lease is no longer renewed (presumed hung)",
                    self.job.id,
                    policy.max_hold_s,
                )
                return
            try:
                if self.queue.renew(self.job):
                    self.renewals += 1
                    continue
                if not self._finished_here():  # else the worker finished it just now: not a loss
                    self._lose()
                return
            except Exception as exc:  # the database unreachable for a moment: try again next beat
                logger.warning("job %d: lease renewal failed (%s)", self.job.id, type(exc).__name__)

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
