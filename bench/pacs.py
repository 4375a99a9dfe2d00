"""The PACS worker end to end through a real Orthanc: studies/minute, and latency from the study
becoming stable (Orthanc's StableStudy) to its SR stored back in the study.

    python bench/pacs.py --model ../main/output/models/efficientnet_lite0.pt   # a trained model
    python bench/pacs.py                                                        # a tiny untrained one

What runs, all on this machine:

- a test Orthanc (``tests/pacs/conftest.py``'s ``OrthancServer``: own storage, loopback ports,
  DICOMweb plugin, ``StableAge`` 2 s — a site's default is 60 s, which adds to every latency here);
- ONE worker: the real CLI, ``python -m pneumocxr pacs watch --orthanc … --poll 0.5`` with a SQLite
  jobs database and torch on ``--threads`` (default 2) threads: claim, WADO-RS, score, Grad-CAM,
  SR + Secondary Capture, STOW-RS, done + audit;
- films from ``--data`` (the train split, NORMAL and PNEUMONIA alternating, full size) as one-film CR
  studies (8-bit, as the tests' ``film_dataset`` makes them), pushed by STOW-RS.

Phases: a warm-up study (model load and first calls, not counted); ``--lone`` studies one at a time,
each pushed once the previous SR landed (the latency of a study that finds the worker idle); then
``--studies`` pushed together (a burst: studies/minute from the first StableStudy to the last SR,
and each study's latency, queueing included).

Timing: a watcher thread polls Orthanc's ``/changes`` every 50 ms and stamps (``time.monotonic``)
the first sight of each StableStudy and of each of our SRs' NewInstance (Orthanc's own change dates
have one-second resolution). Latency = SR seen − StableStudy seen; it includes the worker's polling
(``--poll``) and discovery. "worker s/study" is the audit log's own time per job, claim to done.
Orthanc, the worker and this script share the machine's cores with whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # tests.pacs.conftest: the test Orthanc and DICOM films

from tests.pacs.conftest import PASSWORD, USER, OrthancServer, film_dataset  # noqa: E402

from pneumocxr.imaging import read_image  # noqa: E402
from pneumocxr.pacs.dicomweb import DicomWebPacs  # noqa: E402
from pneumocxr.pacs.identity import SERIES_DESCRIPTION_SR  # noqa: E402
from pneumocxr.store import open_store  # noqa: E402
from pneumocxr.store.audit import AuditLog  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "chest_xray"


class ChangeWatcher(threading.Thread):
    """Stamps the first sight of every StableStudy and of every SR's NewInstance, by study UID."""

    def __init__(self, server: OrthancServer, interval_s: float = 0.05):
        super().__init__(daemon=True)
        self.server, self.interval_s = server, interval_s
        self.session = requests.Session()
        self.session.auth = (USER, PASSWORD)
        self.stable: dict[str, float] = {}
        self.sr: dict[str, float] = {}
        self.stop = threading.Event()
        self.seq = self._get("/changes", last="")["Last"]

    def _get(self, path: str, **params) -> dict:
        response = self.session.get(self.server.url + path, params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def run(self) -> None:
        while not self.stop.is_set():
            feed = self._get("/changes", since=self.seq, limit=500)
            for change in feed["Changes"]:
                seen = time.monotonic()
                if change["ChangeType"] == "StableStudy":
                    uid = self._get(f"/studies/{change['ID']}")["MainDicomTags"]["StudyInstanceUID"]
                    self.stable.setdefault(uid, seen)
                elif change["ChangeType"] == "NewInstance":
                    instance = self._get(f"/instances/{change['ID']}")
                    series = self._get(f"/series/{instance['ParentSeries']}")
                    if series["MainDicomTags"].get("SeriesDescription") == SERIES_DESCRIPTION_SR:
                        study = self._get(f"/studies/{series['ParentStudy']}")
                        self.sr.setdefault(study["MainDicomTags"]["StudyInstanceUID"], seen)
            self.seq = feed["Last"]
            if feed["Done"]:
                self.stop.wait(self.interval_s)

    def wait_sr(self, uids: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(u in self.sr for u in uids):
            if time.monotonic() > deadline:
                missing = sum(u not in self.sr for u in uids)
                raise SystemExit(f"{missing} of {len(uids)} SRs not stored after {timeout_s:g} s")
            time.sleep(0.05)


def films(data: Path, n: int) -> list[np.ndarray]:
    train = data / "train"  # the throughput does not depend on which films; the test split is withheld
    normal, pneumonia = (
        sorted((train / "NORMAL").glob("*.jpeg")),
        sorted((train / "PNEUMONIA").glob("*.jpeg")),
    )
    paths = [p for pair in zip(normal, pneumonia) for p in pair][:n]
    if len(paths) < n:
        raise SystemExit(f"{data}: fewer than {n} training films")
    return [np.rint(read_image(p) * 255).astype(np.uint8) for p in paths]


def tiny_model(path: Path) -> Path:
    """An untrained custom_cnn at 32 px (as the tests' write_checkpoint): the pipeline's own cost."""
    from tests.inference.conftest import write_checkpoint

    return write_checkpoint(path)


def start_worker(server: OrthancServer, model: Path, db: Path, log: Path, threads: int, poll_s: float):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": str(threads),
    }
    command = [
        sys.executable, "-m", "pneumocxr", "pacs", "watch", "--dicomweb", server.dicomweb,
        "--orthanc", server.authed, "--model", str(model), "--db", str(db), "--poll", str(poll_s),
        "--worker-id", "bench",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while "pneumocxr pacs watch:" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start; see {log}")
        time.sleep(0.2)
    return process


def push(pacs: DicomWebPacs, levels: list[np.ndarray]) -> list[str]:
    sources = [film_dataset(film) for film in levels]
    pacs.store(sources)
    return [s.StudyInstanceUID for s in sources]


def summary(name: str, uids: list[str], watcher: ChangeWatcher, span_s: float | None) -> dict:
    latencies = sorted(watcher.sr[u] - watcher.stable[u] for u in uids)
    return {
        "phase": name,
        "studies": len(uids),
        "studies_per_min": round(60 * len(uids) / span_s, 1) if span_s else None,
        "latency_median_s": round(statistics.median(latencies), 2),
        "latency_p90_s": round(latencies[min(len(latencies) - 1, int(0.9 * len(latencies)))], 2),
        "latency_max_s": round(latencies[-1], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="checkpoint (default: a tiny untrained custom_cnn)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--studies", type=int, default=24, help="studies in the burst (default 24)")
    parser.add_argument("--lone", type=int, default=3, help="studies sent one at a time (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the worker (default 2)")
    parser.add_argument("--poll", type=float, default=0.5, help="the worker's --poll (default 0.5 s)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    levels = films(args.data, 1 + args.lone + args.studies)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-pacs-") as tmp:
        work = Path(tmp)
        model = args.model or tiny_model(work / "tiny.pt")
        server = OrthancServer(work / "orthanc")
        worker = None
        watcher = ChangeWatcher(server)
        watcher.start()
        try:
            worker = start_worker(
                server, model, work / "jobs.db", work / "worker.log", args.threads, args.poll
            )
            pacs = DicomWebPacs(server.dicomweb)

            watcher.wait_sr(push(pacs, levels[:1]), 600)  # warm-up: not counted
            lone = []
            for film in levels[1 : 1 + args.lone]:
                lone += push(pacs, [film])
                watcher.wait_sr(lone[-1:], 600)
            burst = push(pacs, levels[1 + args.lone :])
            watcher.wait_sr(burst, 1800)
            span = max(watcher.sr[u] for u in burst) - min(watcher.stable[u] for u in burst)
            rows = [summary("one at a time", lone, watcher, None), summary("burst", burst, watcher, span)]
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(60)
            watcher.stop.set()
            watcher.join(10)
            server.stop()
        audit = [r["latency_ms"] / 1000 for r in AuditLog(open_store(work / "jobs.db")).rows()][1:]
    worker_s = statistics.median(audit)
    load_after = os.getloadavg()[0]

    model_name = str(args.model) if args.model else "tiny untrained custom_cnn (32 px)"
    print(f"model: {model_name}; worker: 1 process, {args.threads} torch threads, --poll {args.poll:g}")
    print(
        f"load average (1 min): {load_before:.1f} at the start, {load_after:.1f} at the end; "
        f"{os.cpu_count()} cores"
    )
    print(f"worker s/study (audit, claim → done, median of {len(audit)}): {worker_s:.2f}")
    print("| phase | studies | studies/min | StableStudy → SR median | p90 | max |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        rate = "—" if r["studies_per_min"] is None else f"{r['studies_per_min']:.1f}"
        print(
            f"| {r['phase']} | {r['studies']} | {rate} | {r['latency_median_s']:.2f} s "
            f"| {r['latency_p90_s']:.2f} s | {r['latency_max_s']:.2f} s |"
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "model": model_name,
                    "worker_s_per_study": worker_s,
                    "load": [load_before, load_after],
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
