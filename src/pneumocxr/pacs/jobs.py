"""The PACS jobs table as a queue: enqueue once, claim safely, finish exactly once.

- **Once per (SOP instance, model)**: the unique key makes a re-announced or re-sent image a no-op.
- **Claim** is an optimistic conditional UPDATE (``WHERE id = … AND status = … AND attempts = …``,
  the attempt count serving as the row's version): of several workers on one PostgreSQL table (or
  threads on one SQLite file) exactly one gets each job — no row locks held, no ``SKIP LOCKED``
  needed, the same code on both databases.
- **Leases**: a claimed job carries ``locked_at``; a worker killed mid-job leaves it ``running``, and
  once the lease has expired any worker may claim it again. Re-doing it is safe: its outputs have
  deterministic UIDs, so the PACS keeps one SR and one SC whatever happens. A job whose lease
  expired on every one of its ``max_attempts`` (a film that kills or hangs the worker) is ``failed``,
  not handed to the next worker to kill it too.
- **Finishing** is conditional on the claim (status ``running``, this worker, this attempt): a worker
  whose lease was taken over finishes nothing, and writes no audit row — the job is done once.
  ``done`` writes the job's audit row in the same transaction, so a kill -9 cannot leave a done job
  unaudited nor an audited job pending.
- **Retries** for transient failures (PACS down or slow) with exponential backoff and a cap; after
  ``max_attempts`` the job is ``failed`` with its reason. An unreadable film fails at once.
- **Times** are UTC: naive on SQLite (compared as text), aware on PostgreSQL (so ``timestamptz``
  columns hold the right instant whatever the server's ``TimeZone``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

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


class JobQueue:
    def __init__(self, store: Store, model_sha256: str, worker_id: str, policy: QueuePolicy = QueuePolicy()):
        self.store, self.model_sha256, self.worker_id, self.policy = store, model_sha256, worker_id, policy
        self._aware = store.engine.dialect.name != "sqlite"

    def now(self) -> datetime:
        return now(self._aware)

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
            self.failed(job, f"gave up after {job.attempts} attempts: {reason}")
            return False
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
                .where(
                    PacsJob.id == job.id,
                    PacsJob.status == "running",
                    PacsJob.locked_by == self.worker_id,
                    PacsJob.attempts == job.attempts,
                )
                .values(status=status, locked_by=None, locked_at=None, updated_at=self.now(), **values)
            ).rowcount
            if finished == 1 and audit is not None:
                session.add(audit_record(audit))
        if finished != 1:
            logger.warning(
                "job %d: lost its claim (lease expired, taken over); not marked %s", job.id, status
            )
        return finished == 1

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
