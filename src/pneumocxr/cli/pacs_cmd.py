"""``pneumocxr pacs watch|jobs``: the PACS worker and its job list."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pacs",
        help="PACS integration: watch a DICOMweb PACS, send SR + Secondary Capture results back",
        description="A worker outside the PACS: new studies in (Orthanc /changes or QIDO-RS polling), "
        "frontal CR/DX chest films scored by the prediction core, a TID 1500 SR and a Secondary Capture "
        "with the heat map stored back into the same study (STOW-RS), exactly once per (image, model). "
        "Research use only.",
    )
    actions = parser.add_subparsers(dest="pacs_command", metavar="ACTION", required=True)
    watch = actions.add_parser("watch", help="follow the PACS and process new studies until stopped")
    watch.add_argument(
        "--dicomweb", required=True, help="DICOMweb root, e.g. http://user:pass@pacs:8042/dicom-web"
    )
    watch.add_argument("--orthanc", help="Orthanc REST root: follow its /changes (else QIDO-RS polling)")
    watch.add_argument("--model", type=Path, required=True, help="checkpoint or ensemble file")
    watch.add_argument(
        "--db", help="jobs/audit database: SQLite path or postgresql://… (default output/serve/audit.db)"
    )
    watch.add_argument("--include-lateral", action="store_true", help="score lateral views (with a warning)")
    watch.add_argument("--poll", type=float, default=2.0, help="seconds between polls (default 2)")
    watch.add_argument("--once", action="store_true", help="one discovery + processing pass, then exit")
    watch.add_argument("--worker-id", default=None, help="name in the jobs table (default host:pid)")
    watch.add_argument(
        "--lease",
        type=float,
        help="seconds after which a running job is presumed orphaned (its worker died) and is claimed "
        "again; longer than the slowest job (default 300)",
    )
    watch.add_argument(
        "--max-attempts",
        type=int,
        help="tries (transient failures, expired leases) before a job is failed for good (default 5)",
    )
    watch.add_argument("--device", default="cpu")
    watch.set_defaults(handler=run_watch)
    jobs = actions.add_parser("jobs", help="list the jobs (failed and skipped ones with their reasons)")
    jobs.add_argument("--db", help="jobs database (default output/serve/audit.db)")
    jobs.add_argument("--status", choices=("pending", "running", "done", "skipped", "failed"))
    jobs.set_defaults(handler=run_jobs)


# Libraries whose INFO messages quote Study / SOP Instance UIDs in clear ("search for instances of
# study 1.2.…", "copy Patient-related attributes from dataset 1.2.…"): UIDs are identifiers (DICOM
# de-identification replaces them), and the worker's own logs show only their hashes.
CHATTY_LOGGERS = ("dicomweb_client", "highdicom")


def run_watch(args: argparse.Namespace) -> int:
    import logging
    import os
    import signal
    import threading

    from pneumocxr.errors import ConfigError
    from pneumocxr.inference import load_predictor
    from pneumocxr.pacs.dicomweb import DicomWebPacs
    from pneumocxr.pacs.jobs import JobQueue, QueuePolicy
    from pneumocxr.pacs.orthanc import OrthancChanges
    from pneumocxr.pacs.worker import PacsWorker, core_analyzer
    from pneumocxr.store import open_store
    from pneumocxr.store.audit import AuditLog

    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    policy = QueuePolicy()  # the defaults the help text quotes
    lease = policy.lease_s if args.lease is None else args.lease
    attempts = policy.max_attempts if args.max_attempts is None else args.max_attempts
    if lease <= 0 or attempts < 1:
        raise ConfigError(
            f"--lease {lease:g} --max-attempts {attempts}: use a lease > 0 and at least 1 attempt"
        )
    policy = QueuePolicy(lease_s=lease, max_attempts=attempts)
    predictor = load_predictor(args.model, device=args.device)
    store = open_store(args.db)
    worker_id = args.worker_id or f"{socket.gethostname()}:{os.getpid()}"
    queue = JobQueue(store, predictor.identity.sha256 or "unsaved-model", worker_id, policy)
    changes = OrthancChanges(args.orthanc) if args.orthanc else None
    pacs = DicomWebPacs(args.dicomweb)
    worker = PacsWorker(
        pacs,
        queue,
        core_analyzer(predictor),
        changes=changes,
        audit=AuditLog(store),
        include_lateral=args.include_lateral,
    )
    following = "Orthanc changes" if changes else "QIDO-RS polling"
    print(f"pneumocxr pacs watch: {pacs.url} ({following}), worker {worker_id}")
    if args.once:
        added = worker.discover()
        done = 0
        while worker.process_one():
            done += 1
        print(f"{added} new job(s), {done} processed")
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker.run(stop, poll_s=args.poll)
    print("stopped")
    return 0


def run_jobs(args: argparse.Namespace) -> int:
    from pneumocxr.pacs.jobs import JobQueue
    from pneumocxr.store import open_store

    rows = JobQueue(open_store(args.db), "", "cli").rows(args.status)
    for r in rows:
        reason = f"  {r['reason']}" if r["reason"] else ""
        result = f"  {r['decision']} p={r['probability']:.3f}" if r["probability"] is not None else ""
        model = r["model_sha256"][:12]
        print(f"{r['id']:>6}  {r['status']:<8} attempts {r['attempts']}  model {model}{result}{reason}")
    print(f"{len(rows)} job(s)")
    return 0
