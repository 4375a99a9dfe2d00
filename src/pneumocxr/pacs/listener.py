"""``pneumocxr pacs listen``: a DICOM C-STORE receiver (pynetdicom Storage SCP) feeding the job queue.

For a PACS without DICOMweb: its routing rule sends chest films to our AE title. Each received
instance is written to the spool (atomically, named by SOP Instance UID) and becomes a job with
source "cstore" — the same (SOP instance, model) key as the watcher's, so a re-sent image is a
no-op — and only when both are durable does the sender get Success (0x0000); if either fails it gets
0xA700 (out of resources) and keeps the image to send again. Our own results (SR / Secondary
Capture) coming back are answered Success and dropped. A worker thread in the same process does the
jobs (``PacsWorker`` with the spool as the retriever of "cstore" jobs) and sends the results by
C-STORE or STOW-RS. Nothing here logs patient data: UIDs appear as hashes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from sqlalchemy.exc import SQLAlchemyError

from pneumocxr.errors import ConfigError
from pneumocxr.pacs.dimse import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    check_ae_title,
    storage_contexts,
)
from pneumocxr.pacs.jobs import FINAL, JobQueue
from pneumocxr.pacs.selection import is_own_output
from pneumocxr.pacs.spool import Spool, valid_uid
from pneumocxr.pacs.worker import PacsWorker, short

logger = logging.getLogger(__name__)

SOURCE = "cstore"


@dataclass(frozen=True)
class ListenerConfig:
    ae_title: str = "PNEUMOCXR"  # our AE title: the PACS's routing rule sends to it
    host: str = "127.0.0.1"  # loopback by default: binding a network interface is a decision
    port: int = 11112  # 0: any free port (tests)
    allowed_calling_ae_titles: tuple[str, ...] = ()  # empty: any sender that reaches the port
    max_associations: int = 10  # concurrent senders


@dataclass
class ListenerCounts:
    received: int = 0  # C-STORE requests answered Success
    new_jobs: int = 0  # of which became a new job
    ignored: int = 0  # of which were results (SR / SC), dropped
    refused: int = 0  # answered with a failure status


class StorageListener:
    """The Storage SCP. ``wake`` (optional) is set after each new job, for the worker thread."""

    def __init__(
        self, config: ListenerConfig, spool: Spool, queue: JobQueue, *, wake: threading.Event | None = None
    ):
        self.config = replace(config, ae_title=check_ae_title(config.ae_title))
        self.spool, self.queue, self.wake = spool, queue, wake
        self.counts = ListenerCounts()
        self._lock = threading.Lock()
        self._server = None
        self._ae: AE | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when the config asked for 0)."""
        return self._server.server_address[1] if self._server is not None else self.config.port

    def sweep(self) -> int:
        """Remove spool files no job needs (a crash between spool and enqueue, or after a job
        finished); returns how many. Run before listening, when no C-STORE is in flight."""
        removed = 0
        for path in self.spool.files():
            if self.queue.status_of(path.stem) in (None, *FINAL):
                self.spool.remove(path.stem)
                removed += 1
        if removed:
            logger.info("spool: removed %d file(s) no job needs", removed)
        return removed

    def start(self) -> None:
        self.sweep()
        ae = AE(ae_title=self.config.ae_title)
        ae.supported_contexts = storage_contexts()
        ae.maximum_associations = self.config.max_associations
        if self.config.allowed_calling_ae_titles:
            ae.require_calling_aet = list(self.config.allowed_calling_ae_titles)
        try:
            self._server = ae.start_server(
                (self.config.host, self.config.port),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, self.handle_store)],
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {self.config.host}:{self.config.port} ({exc}); choose another --port"
            ) from None
        self._ae = ae
        logger.info("listening as %s on %s:%d", self.config.ae_title, self.config.host, self.port)
        if self.config.host not in ("127.0.0.1", "::1", "localhost") and not ae.require_calling_aet:
            logger.warning(
                "listening beyond loopback and accepting any calling AE title: DIMSE has no "
                "authentication; restrict senders with --allow-calling-aet and a firewall"
            )

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting associations, let those in progress finish (up to ``grace_s``), then close."""
        if self._server is None:
            return
        self._server.shutdown()
        deadline = time.monotonic() + grace_s
        while self._ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        self._ae.shutdown()
        self._server = None

    def handle_store(self, event) -> int:
        """EVT_C_STORE: spool + enqueue, durably, before answering (runs in the association's thread)."""
        try:
            dataset: Dataset = event.dataset
            dataset.file_meta = event.file_meta
        except Exception as exc:
            logger.warning("C-STORE from %s: undecodable dataset (%s)", _peer(event), type(exc).__name__)
            return self._count("refused", STATUS_CANNOT_UNDERSTAND)
        sop = dataset.get("SOPInstanceUID")
        if not valid_uid(sop) or not valid_uid(dataset.get("StudyInstanceUID")):
            logger.warning("C-STORE from %s: no valid SOP/Study Instance UID; refused", _peer(event))
            return self._count("refused", STATUS_CANNOT_UNDERSTAND)
        sop = str(sop)
        if is_own_output(
            dataset.get("SOPClassUID"), dataset.get("SeriesDescription"), dataset.get("Manufacturer")
        ):
            logger.info("C-STORE %s: a result (SR / SC), ignored", short(sop))
            return self._count("ignored", STATUS_SUCCESS)
        return self._spool_and_enqueue(event, dataset, sop)

    def _spool_and_enqueue(self, event, dataset: Dataset, sop: str) -> int:
        try:
            self.spool.write(sop, event.encoded_dataset())
        except OSError as exc:
            logger.error("C-STORE %s: cannot write the spool (%s); answered 0xA700", short(sop), exc)
            return self._count("refused", STATUS_OUT_OF_RESOURCES)
        series = dataset.get("SeriesInstanceUID")
        try:
            new = self.queue.enqueue(
                str(dataset.StudyInstanceUID), str(series) if series else None, sop, SOURCE
            )
            if not new and self.queue.status_of(sop) in FINAL:
                self.spool.remove(sop)  # re-sent after its job finished: nothing more to do with it
        except SQLAlchemyError as exc:
            # the file stays: a job may exist from an earlier send; ``sweep`` at the next start decides
            logger.error(
                "C-STORE %s: jobs table unavailable (%s); answered 0xA700", short(sop), type(exc).__name__
            )
            return self._count("refused", STATUS_OUT_OF_RESOURCES)
        if new:
            logger.info("C-STORE %s (study %s): new job", short(sop), short(dataset.StudyInstanceUID))
            self._count("new_jobs", None)
            if self.wake is not None:
                self.wake.set()
        else:
            logger.info("C-STORE %s: already a job (re-sent); nothing added", short(sop))
        return self._count("received", STATUS_SUCCESS)

    def _count(self, what: str, status: int | None) -> int | None:
        with self._lock:
            setattr(self.counts, what, getattr(self.counts, what) + 1)
        return status


def _peer(event) -> str:
    """The sender's AE title (configuration, not patient data)."""
    try:
        return str(event.assoc.requestor.ae_title)
    except AttributeError:
        return "?"


def serve(
    listener: StorageListener,
    worker: PacsWorker,
    stop: threading.Event,
    wake: threading.Event,
    *,
    poll_s: float = 2.0,
    join_s: float = 60.0,
) -> None:
    """Listen and work until ``stop`` is set (SIGTERM / SIGINT in the CLI), then shut down in order:
    no new associations, those in progress answered, the worker's current job finished."""
    listener.start()
    thread = threading.Thread(
        target=worker.run, args=(stop,), kwargs={"poll_s": poll_s, "wake": wake}, name="pacs-worker"
    )
    thread.start()
    try:
        while not stop.wait(0.5):
            if not thread.is_alive():
                raise RuntimeError("the PACS worker thread died; see the log above")
    finally:
        stop.set()
        wake.set()
        listener.stop()
        thread.join(join_s)
        if thread.is_alive():
            logger.warning("the worker did not finish its job in %.0f s; its lease will expire", join_s)
