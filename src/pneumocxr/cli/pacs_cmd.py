"""``pneumocxr pacs watch|listen|jobs|export``: the DICOMweb worker, the C-STORE listener, the job list
and the de-identified site-validation export."""

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
        help="seconds after which a running job whose worker stopped renewing its lease (died, hung) is "
        "claimed again; a live worker renews it every third of this (default 300)",
    )
    watch.add_argument(
        "--max-attempts",
        type=int,
        help="tries (transient failures, expired leases) before a job is failed for good (default 5)",
    )
    watch.add_argument("--device", default="cpu")
    watch.set_defaults(handler=run_watch)
    _register_listen(actions)
    _register_export(actions)
    jobs = actions.add_parser(
        "jobs",
        help="list the jobs (failed and skipped ones with their reasons); `jobs retry` re-queues failed ones",
    )
    jobs.add_argument("--db", help="jobs database (default output/serve/audit.db)")
    jobs.add_argument("--status", choices=("pending", "running", "done", "skipped", "failed"))
    jobs.set_defaults(handler=run_jobs)
    jobs_actions = jobs.add_subparsers(dest="jobs_command", metavar="ACTION")
    retry = jobs_actions.add_parser(
        "retry",
        help="put failed jobs back in the queue (attempts reset), e.g. after the PACS was fixed",
        description="Failed jobs (given by id, or all with --failed) become pending again with their "
        "attempts reset: the next worker with the job's model picks them up. Only failed jobs can be "
        "re-queued; nothing is changed when one of the ids is unknown or not failed.",
    )
    retry.add_argument(
        "job_ids", nargs="*", type=int, metavar="JOB_ID", help="ids from `pneumocxr pacs jobs`"
    )
    retry.add_argument("--failed", action="store_true", help="every failed job")
    # SUPPRESS: `pacs jobs --db X retry …` keeps X (a subparser's default would overwrite it)
    retry.add_argument(
        "--db", default=argparse.SUPPRESS, help="jobs database (default output/serve/audit.db)"
    )
    retry.set_defaults(handler=run_jobs_retry)


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


def run_jobs_retry(args: argparse.Namespace) -> int:
    from pneumocxr.errors import ConfigError
    from pneumocxr.pacs.jobs import JobQueue
    from pneumocxr.store import open_store

    if bool(args.job_ids) == args.failed:
        raise ConfigError("pacs jobs retry: give job ids (JOB_ID ...) or --failed, not both and not neither")
    queue = JobQueue(open_store(getattr(args, "db", None)), "", "cli")
    rows = queue.requeue(None if args.failed else args.job_ids)
    for r in rows:
        was = f"; was: {r['reason']}" if r["reason"] else ""
        print(
            f"re-queued job {r['id']}  model {r['model_sha256'][:12]}  after {r['attempts']} attempt(s){was}"
        )
        if r["source"] == "cstore":
            print(
                f"  note: job {r['id']} came by C-STORE and its film left the spool when it failed: have "
                "the PACS send it again now (a job claimed before the film is back is skipped as no "
                "longer in the spool)"
            )
    print(f"{len(rows)} job(s) re-queued")
    return 0


def _register_listen(actions: argparse._SubParsersAction) -> None:
    listen = actions.add_parser(
        "listen",
        help="receive films by DICOM C-STORE, send SR + SC back by C-STORE or STOW-RS",
        description="A DICOM Storage SCP for PACS without DICOMweb: received films are spooled and "
        "queued (once per image and model), scored by a worker thread, and the SR and the Secondary "
        "Capture are sent back by C-STORE (--send cstore --send-to AET@host:port) or STOW-RS "
        "(--send stow --dicomweb URL). Stops cleanly on SIGTERM / SIGINT. Research use only.",
    )
    listen.add_argument("--ae-title", default="PNEUMOCXR", help="our AE title (default PNEUMOCXR)")
    listen.add_argument("--port", type=int, default=11112, help="DICOM port (default 11112)")
    listen.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: loopback only)"
    )
    listen.add_argument(
        "--allow-calling-aet",
        action="append",
        default=[],
        metavar="AET",
        help="accept associations only from this calling AE title (repeatable; default: any)",
    )
    listen.add_argument("--model", type=Path, required=True, help="checkpoint or ensemble file")
    listen.add_argument(
        "--db", help="jobs/audit database: SQLite path or postgresql://… (default output/serve/audit.db)"
    )
    listen.add_argument(
        "--spool", type=Path, default=Path("output/pacs/spool"), help="received films until their job ends"
    )
    listen.add_argument("--send", choices=("cstore", "stow"), required=True, help="how results go back")
    listen.add_argument("--send-to", metavar="AET@HOST:PORT", help="C-STORE destination (--send cstore)")
    listen.add_argument("--dicomweb", help="DICOMweb root for STOW-RS (--send stow)")
    listen.add_argument("--include-lateral", action="store_true", help="score lateral views (with a warning)")
    listen.add_argument("--poll", type=float, default=2.0, help="seconds between queue polls (default 2)")
    listen.add_argument("--worker-id", default=None, help="name in the jobs table (default host:pid)")
    listen.add_argument("--device", default="cpu")
    listen.set_defaults(handler=run_listen)


def _sender(args: argparse.Namespace):
    """The result sender of ``--send``; ConfigError when its destination is missing."""
    from pneumocxr.errors import ConfigError

    if args.send == "cstore":
        from pneumocxr.pacs.dimse import CStoreSender, check_ae_title, parse_destination

        if not args.send_to:
            raise ConfigError("--send cstore needs --send-to AET@host:port (the PACS's AE title and port)")
        destination = parse_destination(args.send_to)
        return CStoreSender(destination, check_ae_title(args.ae_title)), f"C-STORE to {destination}"
    from pneumocxr.pacs.dicomweb import DicomWebPacs

    if not args.dicomweb:
        raise ConfigError("--send stow needs --dicomweb URL (the PACS's DICOMweb root)")
    pacs = DicomWebPacs(args.dicomweb)
    return pacs.store, f"STOW-RS to {pacs.url}"


def run_listen(args: argparse.Namespace) -> int:
    import os
    import signal
    import threading

    from pneumocxr.inference import load_predictor
    from pneumocxr.pacs.dimse import check_ae_title
    from pneumocxr.pacs.jobs import JobQueue
    from pneumocxr.pacs.listener import SOURCE, ListenerConfig, StorageListener, serve
    from pneumocxr.pacs.spool import Spool, SpoolRetriever
    from pneumocxr.pacs.worker import PacsWorker, core_analyzer
    from pneumocxr.store import open_store
    from pneumocxr.store.audit import AuditLog

    send, sending = _sender(args)
    config = ListenerConfig(
        ae_title=check_ae_title(args.ae_title),
        host=args.host,
        port=args.port,
        allowed_calling_ae_titles=tuple(args.allow_calling_aet),
    )
    predictor = load_predictor(args.model, device=args.device)
    store = open_store(args.db)
    worker_id = args.worker_id or f"{socket.gethostname()}:{os.getpid()}"
    queue = JobQueue(store, predictor.identity.sha256 or "unsaved-model", worker_id)
    spool = Spool(args.spool)
    wake, stop = threading.Event(), threading.Event()
    listener = StorageListener(config, spool, queue, wake=wake)
    worker = PacsWorker(
        None,
        queue,
        core_analyzer(predictor),
        send=send,
        retrievers={SOURCE: SpoolRetriever(spool)},
        audit=AuditLog(store),
        include_lateral=args.include_lateral,
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(
        f"pneumocxr pacs listen: {listener.config.ae_title} on {args.host}:{args.port}, results by "
        f"{sending}, worker {worker_id}",
        flush=True,
    )
    serve(listener, worker, stop, wake, poll_s=args.poll)
    counts = listener.counts
    print(
        f"stopped: {counts.received} film(s) stored ({counts.new_jobs} new job(s)), {counts.ignored} "
        f"result(s) ignored, {counts.refused} refused"
    )
    return 0


def _register_export(actions: argparse._SubParsersAction) -> None:
    export = actions.add_parser(
        "export",
        help="labelled studies → de-identified site_data/ for `pneumocxr evaluate` (site validation)",
        description="Before switching the watcher on: pull the labelled studies' frontal CR/DX chest films "
        "by DICOMweb, de-identify them (dicognito, keyed, plus an attribute allow-list) and write "
        "OUT/images/*.dcm with OUT/manifest.csv (path,label,patient_id,split), which "
        "`pneumocxr evaluate --data OUT` reads. patient_id is a keyed pseudonym, never the real id.",
    )
    export.add_argument(
        "--dicomweb", required=True, help="DICOMweb root, e.g. http://user:pass@pacs:8042/dicom-web"
    )
    export.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="KEYWORD=VALUE",
        help="QIDO-RS study filter, repeatable (e.g. StudyDate=20240101- ModalitiesInStudy=CR)",
    )
    export.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="CSV: StudyInstanceUID or AccessionNumber, label (NORMAL/PNEUMONIA)[, patient_key][, split]",
    )
    export.add_argument("--out", type=Path, required=True, help="output folder (site_data/)")
    privacy = export.add_mutually_exclusive_group(required=True)
    privacy.add_argument("--deidentify", action="store_true", help="de-identify every film (recommended)")
    privacy.add_argument(
        "--keep-identifiers",
        action="store_true",
        help="write the films as they are (identifiable: for use inside the hospital only)",
    )
    export.add_argument(
        "--key-file",
        type=Path,
        default=Path("output/pacs/export.key"),
        help="pseudonym secret, created on first use (default output/pacs/export.key); keep it, never "
        "ship it with the export",
    )
    export.add_argument("--include-lateral", action="store_true", help="export lateral views too")
    export.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from pneumocxr.pacs.dicomweb import DicomWebPacs
    from pneumocxr.pacs.export import (
        ExportOptions,
        export_site_data,
        load_or_create_key,
        parse_query,
        read_labels,
    )

    options = ExportOptions(
        query=parse_query(args.query),
        key=load_or_create_key(args.key_file, args.out),
        deidentify=args.deidentify,
        include_lateral=args.include_lateral,
    )
    labels = read_labels(args.labels)
    summary = export_site_data(DicomWebPacs(args.dicomweb), labels, args.out, options)
    films = ", ".join(f"{n} {label}" for label, n in sorted(summary.exported.items())) or "no films"
    print(f"exported {films} from {summary.studies} labelled studies → {summary.manifest}")
    for reason, n in summary.skipped.most_common():
        print(f"  skipped {n}: {reason}")
    if summary.labelled_not_found:
        print(f"  {summary.labelled_not_found} labelled study(ies) not returned by the query")
    if not args.deidentify:
        print("  NOT de-identified: keep these files inside the hospital")
    print(f"next: pneumocxr evaluate --checkpoint MODEL --data {args.out} --out REPORT_DIR")
    return 0
