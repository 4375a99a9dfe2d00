"""The PACS worker: discover studies, claim jobs, score, send an SR and an SC back — exactly once.

``discover``: with Orthanc, the StableStudy changes after the persisted sequence number; with any
other DICOMweb PACS, QIDO-RS studies since a persisted date. Each instance of a study that is not
the worker's own output becomes a job (a no-op if it already is one). ``process_one``: claim a job,
fetch the instance with the retriever of the job's source (WADO-RS for "dicomweb", the listener's
spool folder for "cstore"), skip what is not a frontal chest radiograph (reason recorded), score
it with the prediction core, write the SR and the SC (deterministic UIDs), send them (STOW-RS or
C-STORE), mark the job done and audit it (one transaction). While it works the job's lease is renewed
(``LeaseHeartbeat``), and just before the write-back the worker checks that it still holds the job:
one taken over by another worker (this one stalled past its lease) gets no results from this one,
and its spool file is left to its new owner. Transient PACS failures are retried with
backoff; a film that cannot be read fails with its reason; an unexpected error in one job is retried
(and fails after ``max_attempts``) rather than crashing the worker into a restart loop on one film.
``run`` stops claiming while the PACS is unreachable (a circuit breaker), so an outage longer than
the retry window delays jobs but fails none. Logs carry job ids and UIDs' hashes, never patient data.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

import numpy as np
from pydicom.dataset import Dataset

from pneumocxr.errors import ConfigError, OutOfScopeError, PneumoCXRError, UnsupportedImageError
from pneumocxr.inference import PredictionResult
from pneumocxr.pacs.dicomweb import DicomWebPacs, InstanceGone, InstanceRef, PacsUnavailable
from pneumocxr.pacs.jobs import Job, JobQueue, LeaseHeartbeat
from pneumocxr.pacs.orthanc import OrthancChanges
from pneumocxr.pacs.sc import build_sc
from pneumocxr.pacs.selection import is_own_output, skip_reason
from pneumocxr.pacs.sr import build_sr
from pneumocxr.store.audit import AuditEntry, AuditLog, prediction_fields

logger = logging.getLogger(__name__)

CHANGES_STATE = "orthanc_changes_seq"
QIDO_STATE = "qido_since_date"


@dataclass(frozen=True)
class Analysis:
    result: PredictionResult
    film: np.ndarray  # (H, W) float in [0, 1]: the film as the core decoded it, original geometry
    heatmap: np.ndarray | None  # (H, W) in [0, 1], or None when the model cannot explain


Analyze = Callable[[Dataset], Analysis]
Send = Callable[[list[Dataset]], None]


class Retriever(Protocol):
    """Where a job's image comes from, chosen by ``job.source``."""

    def fetch(self, job: Job) -> Dataset:
        """The instance; raises PacsUnavailable (retry later) or InstanceGone (skip)."""

    def release(self, job: Job) -> None:
        """The job is finished for good (done, skipped or failed): drop any local copy."""


class DicomWebRetriever:
    """Jobs the watcher discovered: the instance by WADO-RS, nothing kept locally."""

    def __init__(self, pacs: DicomWebPacs):
        self.pacs = pacs

    def fetch(self, job: Job) -> Dataset:
        ref = InstanceRef(job.study_instance_uid, job.series_instance_uid, job.sop_instance_uid, None)
        return self.pacs.retrieve(ref)

    def release(self, job: Job) -> None:
        pass


def short(uid: str | None) -> str:
    """A UID as logs show it: a hash prefix (UIDs can carry site information)."""
    return hashlib.sha256(str(uid).encode()).hexdigest()[:10]


class PacsWorker:
    """``pacs``: the DICOMweb PACS to discover studies in (None: no discovery, e.g. a C-STORE
    listener's worker). ``retrievers``: job source → where its images come from (default: WADO-RS
    from ``pacs`` for "dicomweb" jobs); the worker claims only jobs of these sources. ``send``: where
    results go (default: STOW-RS to ``pacs``)."""

    def __init__(
        self,
        pacs: DicomWebPacs | None,
        queue: JobQueue,
        analyze: Analyze,
        *,
        send: Send | None = None,
        retrievers: Mapping[str, Retriever] | None = None,
        changes: OrthancChanges | None = None,
        audit: AuditLog | None = None,
        include_lateral: bool = False,
    ):
        if send is None and pacs is None:
            raise ConfigError("the PACS worker needs somewhere to send results: a DICOMweb PACS or a sender")
        self.pacs, self.queue, self.analyze = pacs, queue, analyze
        self.send = send or pacs.store
        if retrievers is None:
            retrievers = {"dicomweb": DicomWebRetriever(pacs)} if pacs is not None else {}
        self.retrievers = dict(retrievers)
        self.changes, self.audit, self.include_lateral = changes, audit, include_lateral
        self.pacs_down = False  # set when a job met PacsUnavailable: `run` pauses claiming

    # ---- discovery ---------------------------------------------------------------------------

    def discover(self) -> int:
        """New jobs from the change feed (Orthanc) or a QIDO-RS poll; returns how many."""
        if self.pacs is None:
            return 0  # jobs arrive some other way (the C-STORE listener enqueues them)
        if self.changes is not None:
            return self._discover_changes()
        since = self.queue.get_state(QIDO_STATE)
        today = date.today()
        added = sum(self.enqueue_study(study) for study in self.pacs.studies(since))
        # next poll from yesterday: studies dated late yesterday may still be arriving
        self.queue.set_state(QIDO_STATE, (today - timedelta(days=1)).strftime("%Y%m%d"))
        return added

    def _discover_changes(self) -> int:
        added, done = 0, False
        while not done:
            seq = int(self.queue.get_state(CHANGES_STATE, "0"))
            studies, last, done = self.changes.stable_studies(seq)
            added += sum(self.enqueue_study(study) for study in studies)
            self.queue.set_state(CHANGES_STATE, str(last))  # only after the studies are enqueued
        return added

    def enqueue_study(self, study_uid: str) -> int:
        added = 0
        for ref in self.pacs.instances(study_uid):
            if is_own_output(ref.sop_class, ref.series_description):
                continue  # our SR/SC landing in the study fires StableStudy again: ignore them
            added += self.queue.enqueue(ref.study, ref.series, ref.sop, "dicomweb")
        if added:
            logger.info("study %s: %d new job(s)", short(study_uid), added)
        return added

    # ---- processing --------------------------------------------------------------------------

    def process_one(self) -> bool:
        """Do one due job; False when there was none."""
        job = self.queue.claim(sources=self.retrievers)
        if job is None:
            return False
        started = time.perf_counter()
        retriever = self.retrievers[job.source]
        with LeaseHeartbeat(self.queue, job) as lease:
            finished = self._process(job, retriever, lease, started)
        if finished and not lease.lost:  # a job taken over keeps its film for its new owner
            retriever.release(job)
        return True

    def _process(self, job: Job, retriever: Retriever, lease: LeaseHeartbeat, started: float) -> bool:
        """Fetch, score, send; True when this worker ended the job for good (done, skipped, failed)."""
        try:
            return self.handle(job, retriever.fetch(job), started, lease=lease)
        except PacsUnavailable as exc:
            self.pacs_down = True
            return not self.queue.retry(job, str(exc))
        except InstanceGone as exc:
            return self.queue.skipped(job, str(exc))
        except UnsupportedImageError as exc:
            return self.queue.failed(job, exc.reason)
        except PneumoCXRError as exc:  # the PACS refused (HTTP 4xx) or the like: retrying will not help
            return self.queue.failed(job, str(exc))
        except Exception as exc:  # a bug or an unforeseen library error: retried, then failed
            logger.error("job %d: unexpected %s", job.id, type(exc).__name__)
            logger.debug("job %d: traceback", job.id, exc_info=True)  # may quote header values
            reason = f"unexpected {type(exc).__name__} (the worker's debug log has the traceback)"
            return not self.queue.retry(job, reason)

    def handle(
        self, job: Job, dataset: Dataset, started: float, *, lease: LeaseHeartbeat | None = None
    ) -> bool:
        """Score ``dataset`` for ``job`` and send its results (whatever the job's source); True when
        the job ended for good here. ``lease``: checked just before the results are sent — when
        another worker has taken the job over, nothing is sent and nothing is recorded."""
        reason = skip_reason(dataset, include_lateral=self.include_lateral)
        if reason is not None:
            logger.info("job %d skipped: %s", job.id, reason)
            return self.queue.skipped(job, reason)
        try:
            analysis = self.analyze(dataset)
        except OutOfScopeError as exc:
            return self.queue.skipped(job, f"{exc.code}: {exc.reason}")
        except UnsupportedImageError as exc:
            return self.queue.failed(job, exc.reason)
        sr = build_sr(dataset, analysis.result)
        sc = build_sc(dataset, analysis.result, analysis.film, analysis.heatmap)
        if lease is not None and not lease.holds():
            logger.warning("job %d: SR and SC not sent (the job's new owner sends them)", job.id)
            return False
        self.send([sr, sc])  # PacsUnavailable propagates: the job is retried (same UIDs: no duplicate)
        result = analysis.result
        counted = self.queue.done(  # with its audit row, in one transaction, if the claim still holds
            job,
            decision=result.label,
            probability=result.positive_probability,
            sr_uid=sr.SOPInstanceUID,
            sc_uid=sc.SOPInstanceUID,
            audit=self._audit_entry(job, result, 1000 * (time.perf_counter() - started)),
        )
        if counted:
            logger.info("job %d: %s p=%.3f → SR + SC sent", job.id, result.label, result.positive_probability)
        return counted

    def _audit_entry(self, job: Job, result: PredictionResult, latency_ms: float) -> AuditEntry | None:
        if self.audit is None:
            return None
        return AuditEntry(
            request_id=f"pacs-{job.id}-{job.attempts}-{uuid.uuid4().hex[:8]}",
            route="pacs",
            status=200,
            latency_ms=latency_ms,
            key_id=self.queue.worker_id,
            **prediction_fields(result),
        )

    def run(
        self,
        stop: threading.Event,
        *,
        poll_s: float = 2.0,
        wake: threading.Event | None = None,
        max_pause_s: float = 60.0,
    ) -> None:
        """Discover and process until ``stop`` is set; the PACS being down only delays work.

        ``wake``: set by whoever enqueues (the C-STORE listener) to start the next pass at once
        rather than after ``poll_s``; whoever sets ``stop`` sets it too.
        While the PACS is unreachable (discovery fails, or a job just met PacsUnavailable) no job is
        claimed and the pause doubles up to ``max_pause_s``: each claim would spend one of the job's
        ``max_attempts``, so without this an outage longer than the retry window would fail them all.
        """
        pause = poll_s
        while not stop.is_set():
            self.pacs_down = False
            try:
                self.discover()
            except PacsUnavailable as exc:
                self.pacs_down = True
                logger.warning("discovery: %s", exc)
            while not stop.is_set() and not self.pacs_down and self.process_one():
                pass
            pause = min(max_pause_s, max(poll_s, 2 * pause)) if self.pacs_down else poll_s
            if self.pacs_down:
                logger.warning("the PACS is unreachable: no job claimed for %.0f s", pause)
            if wake is None:
                stop.wait(pause)
            else:
                wake.wait(pause)
                wake.clear()


def core_analyzer(predictor, refuse=None) -> Analyze:
    """Score with the prediction core and map the decided class with Grad-CAM (the same explainer
    as ``POST /v1/explain``); a predictor that cannot explain (ONNX Runtime) sends the SC without a map."""
    from pneumocxr.explain.prediction_map import ExplainUnavailable, PredictionExplainer
    from pneumocxr.imaging import read_image

    try:
        explainer = PredictionExplainer(predictor)
    except ExplainUnavailable as exc:
        logger.warning("no heat maps in the Secondary Capture: %s", exc)
        explainer = None

    def analyze(dataset: Dataset) -> Analysis:
        if explainer is None:
            return Analysis(predictor.predict(dataset, refuse=refuse), read_image(dataset), None)
        result, cam = explainer.run(dataset, refuse=refuse)
        return Analysis(result, cam.image, cam.aligned)

    return analyze
