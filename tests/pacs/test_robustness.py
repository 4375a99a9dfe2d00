"""Exactly once, and nothing lost — against a real Orthanc (and a real PostgreSQL where named).

- kill -9 of a ``pneumocxr pacs watch`` process in the middle of a batch, then a restart: every
  study ends with exactly one SR and one SC, every job done once (the orphaned job taken over);
- the PACS down while jobs wait: back to pending with growing backoff, none failed however long the
  outage (the worker stops claiming), all done once Orthanc is back on the same storage;
- films that cannot be read: failed with their reason after one attempt, listed by ``pacs jobs``;
- two worker processes on one PostgreSQL jobs table: every study processed by exactly one of them.

Every wait is bounded. The fast tests at the end use fakes for the same rules without a server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import requests
from pydicom.dataset import Dataset
from tests.inference.conftest import write_checkpoint
from tests.pacs.conftest import PASSWORD, USER, OrthancServer, film_dataset
from tests.postgres import postgres_base_url, postgres_schema

from pneumocxr.cli.main import main
from pneumocxr.imaging import read_image
from pneumocxr.inference import load_predictor
from pneumocxr.pacs.dicomweb import DicomWebPacs, InstanceRef, PacsUnavailable
from pneumocxr.pacs.identity import SERIES_DESCRIPTION_SC, SERIES_DESCRIPTION_SR
from pneumocxr.pacs.jobs import JobQueue, QueuePolicy
from pneumocxr.pacs.orthanc import OrthancChanges
from pneumocxr.pacs.worker import Analysis, PacsWorker, core_analyzer
from pneumocxr.store import open_store
from pneumocxr.store.audit import AuditLog

SRC = Path(__file__).resolve().parents[2] / "src"


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def films(shared_data) -> list[np.ndarray]:
    """Real films (8-bit levels): the first NORMAL and PNEUMONIA training images, alternating."""
    train = shared_data / "chest_xray" / "train"
    normal = sorted((train / "NORMAL").glob("*.jpeg"))[:6]
    pneumonia = sorted((train / "PNEUMONIA").glob("*.jpeg"))[:6]
    paths = [p for pair in zip(normal, pneumonia) for p in pair]
    return [np.rint(read_image(p) * 255).astype(np.uint8) for p in paths]


def push_studies(orthanc: OrthancServer, films: list[np.ndarray], n: int) -> list[Dataset]:
    """``n`` one-film studies (CR, 8-bit) stored by STOW-RS."""
    sources = [film_dataset(films[i % len(films)]) for i in range(n)]
    DicomWebPacs(orthanc.dicomweb).store(sources)
    return sources


def study_contents(orthanc: OrthancServer) -> dict[str, Counter]:
    """StudyInstanceUID → instance counts by kind ("sr", "sc", "source"), from Orthanc's REST API."""
    out: dict[str, Counter] = {}
    for study_id in orthanc.get("/studies"):
        study = orthanc.get(f"/studies/{study_id}")
        counts = Counter()
        for series_id in study["Series"]:
            series = orthanc.get(f"/series/{series_id}")
            description = series["MainDicomTags"].get("SeriesDescription")
            kind = {SERIES_DESCRIPTION_SR: "sr", SERIES_DESCRIPTION_SC: "sc"}.get(description, "source")
            counts[kind] += len(series["Instances"])
        out[study["MainDicomTags"]["StudyInstanceUID"]] = counts
    return out


def assert_one_sr_and_one_sc_each(orthanc: OrthancServer, sources: list[Dataset]) -> None:
    contents = study_contents(orthanc)
    assert sorted(contents) == sorted(s.StudyInstanceUID for s in sources)
    for uid, counts in contents.items():
        assert counts == Counter(source=1, sr=1, sc=1), (uid, counts)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def statuses(queue: JobQueue) -> Counter:
    return Counter(r["status"] for r in queue.rows())


def start_worker(
    orthanc: OrthancServer, model: Path, db: str, worker_id: str, log: Path, *extra: str
) -> subprocess.Popen:
    """``python -m pneumocxr pacs watch`` in its own process (one torch thread: the CI has 2 cores)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable, "-m", "pneumocxr", "pacs", "watch",
        "--dicomweb", orthanc.dicomweb, "--orthanc", orthanc.authed,
        "--model", str(model), "--db", db, "--poll", "0.3", "--worker-id", worker_id, *extra,
    ]  # fmt: skip
    with log.open("w") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_worker(process: subprocess.Popen, log: Path) -> None:
    """SIGTERM: the worker finishes its current job and exits 0."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def restart_orthanc(server: OrthancServer) -> None:
    """The same Orthanc again: same config, ports and storage (its index keeps the change log)."""
    server.log = (server.root / "orthanc.log").open("a")
    server.process = subprocess.Popen(
        [str(server.process.args[0]), str(server.root / "config.json")],
        stdout=server.log,
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        try:
            return requests.get(server.url + "/system", auth=(USER, PASSWORD), timeout=1).ok
        except requests.ConnectionError:
            return False

    wait_for(up, 30, "Orthanc to restart", interval_s=0.2)


def in_process_worker(orthanc: OrthancServer, tmp_path: Path, policy: QueuePolicy) -> PacsWorker:
    predictor = load_predictor(write_checkpoint(tmp_path / "model.pt"), device="cpu")
    store = open_store(tmp_path / "jobs.db")
    queue = JobQueue(store, predictor.identity.sha256, "in-process", policy)
    return PacsWorker(
        DicomWebPacs(orthanc.dicomweb, timeout_s=5),
        queue,
        core_analyzer(predictor),
        changes=OrthancChanges(orthanc.authed, timeout_s=5),
        audit=AuditLog(store),
    )


def discover_until(worker: PacsWorker, n: int, timeout_s: float = 30) -> None:
    """Discover until ``n`` jobs exist (the studies become stable after Orthanc's StableAge)."""
    wait_for(lambda: worker.discover() >= 0 and len(worker.queue.rows()) >= n, timeout_s, f"{n} jobs", 0.3)


# ----------------------------------------------------------------------------- kill -9


@pytest.mark.slow
def test_kill_9_mid_batch_and_restart_leaves_exactly_one_sr_and_sc_per_study(orthanc, films, tmp_path):
    sources = push_studies(orthanc, films, 6)
    model = write_checkpoint(tmp_path / "model.pt")
    db = str(tmp_path / "jobs.db")
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = start_worker(orthanc, model, db, "first", first_log, "--lease", "3")
    try:
        queue = JobQueue(open_store(db), "", "observer")

        def mid_batch() -> bool:  # a result stored, another job in flight, more to come
            seen = statuses(queue)
            return seen["done"] >= 1 and seen["running"] >= 1 and seen["done"] < 5

        wait_for(mid_batch, 120, f"the first results (worker log: {first_log})", interval_s=0.02)
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)

    at_kill = {r["id"]: r for r in queue.rows()}
    orphaned = [r["id"] for r in at_kill.values() if r["status"] == "running"]
    assert orphaned and Counter(r["status"] for r in at_kill.values())["done"] < 6

    second = start_worker(orthanc, model, db, "second", second_log, "--lease", "3")
    try:
        settled = lambda: len(queue.rows()) == 6 and statuses(queue) == Counter(done=6)  # noqa: E731
        wait_for(settled, 120, f"every job done (worker log: {second_log})", interval_s=0.2)
    finally:
        stop_worker(second, second_log)

    assert_one_sr_and_one_sc_each(orthanc, sources)
    rows = {r["id"]: r for r in queue.rows()}
    for job_id in orphaned:  # taken over once its lease expired, and done by the second worker
        assert rows[job_id]["attempts"] == 2
    assert "lease expired" in second_log.read_text()
    for job_id, r in at_kill.items():  # what was done before the kill was not done again
        if r["status"] == "done":
            assert rows[job_id]["attempts"] == 1 and rows[job_id]["updated_at"] == r["updated_at"]
    audited = [a["request_id"].split("-")[1] for a in AuditLog(queue.store).rows()]
    assert sorted(audited) == sorted(str(i) for i in rows)  # one audit row per job, none twice
    assert {a["key_id"] for a in AuditLog(queue.store).rows()} == {"first", "second"}
    assert_no_identifiers(sources, first_log, second_log)


def assert_no_identifiers(sources: list[Dataset], *logs: Path) -> None:
    """The workers' logs name jobs and hashes of UIDs, never UIDs nor patient attributes."""
    for log in logs:
        text = log.read_text()
        assert "SR + SC sent" in text
        for source in sources:
            for value in (source.StudyInstanceUID, source.SOPInstanceUID, source.SeriesInstanceUID):
                assert value not in text, f"{log.name} quotes a UID"
            assert str(source.PatientName) not in text and source.AccessionNumber not in text


# ----------------------------------------------------------------------------- PACS down


@pytest.mark.slow
def test_pacs_down_jobs_back_off_none_fail_and_all_complete_when_it_returns(orthanc, films, tmp_path):
    policy = QueuePolicy(lease_s=30, max_attempts=6, backoff_s=0.2, backoff_cap_s=0.8)
    worker = in_process_worker(orthanc, tmp_path, policy)
    queue = worker.queue
    sources = push_studies(orthanc, films, 3)
    discover_until(worker, 3)
    orthanc.stop()  # the PACS goes down with three jobs pending

    # each attempt fails as "unreachable", goes back to pending, and waits longer than the last
    delays: dict[int, list[float]] = {r["id"]: [] for r in queue.rows()}
    deadline = time.monotonic() + 30
    while any(len(d) < 4 for d in delays.values()) and time.monotonic() < deadline:
        if worker.process_one():
            for r in queue.rows():
                if r["attempts"] > len(delays[r["id"]]):
                    assert r["status"] == "pending" and "unreachable" in r["reason"]
                    delays[r["id"]].append((r["next_attempt_at"] - r["updated_at"]).total_seconds())
        else:
            time.sleep(0.05)
    for job_delays in delays.values():
        assert job_delays[:4] == pytest.approx([0.2, 0.4, 0.8, 0.8], abs=0.05)
    assert worker.pacs_down

    # an outage longer than what is left of the retry window (2 attempts, 1.6 s): the running
    # worker stops claiming while the PACS is unreachable, so no job spends its last attempts
    stop = threading.Event()
    loop = threading.Thread(target=worker.run, args=(stop,), kwargs={"poll_s": 0.2, "max_pause_s": 0.8})
    loop.start()
    try:
        time.sleep(4)
        assert statuses(queue) == Counter(pending=3)
        assert all(r["attempts"] == 4 for r in queue.rows())  # not one claim while it was down
        restart_orthanc(orthanc)
        wait_for(lambda: statuses(queue) == Counter(done=3), 60, "the jobs to complete", 0.2)
    finally:
        stop.set()
        loop.join(30)
    assert not loop.is_alive()
    assert all(r["attempts"] == 5 for r in queue.rows())
    assert_one_sr_and_one_sc_each(orthanc, sources)


# ----------------------------------------------------------------------------- unreadable films


def truncated(film: np.ndarray) -> Dataset:
    ds = film_dataset(film)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2 // 2 * 2]  # half the pixels, even length
    return ds


def rgb(film: np.ndarray) -> Dataset:
    ds = film_dataset(film)
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "RGB", 3, 0
    ds.PixelData = np.repeat(film[..., None], 3, axis=2).tobytes()
    return ds


@pytest.mark.slow
def test_unreadable_films_fail_once_with_their_reason_and_pacs_jobs_lists_them(
    orthanc, films, tmp_path, capsys
):
    worker = in_process_worker(orthanc, tmp_path, QueuePolicy(max_attempts=5, backoff_s=0.1))
    queue = worker.queue
    broken, colour = truncated(films[0]), rgb(films[1])
    good = film_dataset(films[2])
    DicomWebPacs(orthanc.dicomweb).store([broken, colour, good])
    discover_until(worker, 3)
    while worker.process_one():
        pass
    by_sop = {r["sop_instance_uid"]: r for r in queue.rows()}
    assert by_sop[good.SOPInstanceUID]["status"] == "done"
    for source, words in ((broken, "cannot be decoded"), (colour, "colour DICOM")):
        r = by_sop[source.SOPInstanceUID]
        assert (r["status"], r["attempts"]) == ("failed", 1) and words in r["reason"], r
        assert source.SOPInstanceUID not in r["reason"]  # reasons name no UIDs

    # re-sent by the modality: announced again, not retried
    DicomWebPacs(orthanc.dicomweb).store([broken])
    time.sleep(3)  # past StableAge
    worker.discover()
    assert not worker.process_one()
    assert by_sop[broken.SOPInstanceUID]["attempts"] == 1 == queue.rows()[0]["attempts"]

    assert main(["pacs", "jobs", "--db", str(tmp_path / "jobs.db"), "--status", "failed"]) == 0
    out = capsys.readouterr().out
    assert "cannot be decoded" in out and "colour DICOM" in out and out.strip().endswith("2 job(s)")
    contents = study_contents(orthanc)
    assert contents[good.StudyInstanceUID] == Counter(source=1, sr=1, sc=1)
    assert contents[broken.StudyInstanceUID] == contents[colour.StudyInstanceUID] == Counter(source=1)


# ----------------------------------------------------------------------------- two workers


@pytest.mark.slow
def test_two_workers_on_one_postgres_table_process_every_study_exactly_once(orthanc, films, tmp_path):
    with postgres_schema(postgres_base_url()) as db:
        model = write_checkpoint(tmp_path / "model.pt")
        logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
        workers = [start_worker(orthanc, model, db, f"w{i + 1}", logs[i]) for i in range(2)]
        try:
            for log in logs:  # both up (model loaded, schema migrated) before any study arrives
                wait_for(lambda log=log: "pneumocxr pacs watch:" in log.read_text(), 120, f"{log.name}")
            sources = push_studies(orthanc, films, 12)
            queue = JobQueue(open_store(db), "", "observer")
            settled = lambda: len(queue.rows()) == 12 and statuses(queue) == Counter(done=12)  # noqa: E731
            wait_for(settled, 180, "every job done", interval_s=0.3)
        finally:
            for process, log in zip(workers, logs):
                stop_worker(process, log)

        assert_one_sr_and_one_sc_each(orthanc, sources)
        rows = queue.rows()
        assert sorted(r["sop_instance_uid"] for r in rows) == sorted(s.SOPInstanceUID for s in sources)
        assert all(r["attempts"] == 1 for r in rows)  # claimed once each: no job done twice
        audit = list(AuditLog(queue.store).rows())
        job_of = [a["request_id"].split("-")[1] for a in audit]
        assert sorted(job_of) == sorted(str(r["id"]) for r in rows)
        by_worker = Counter(a["key_id"] for a in audit)
        assert set(by_worker) == {"w1", "w2"}, by_worker  # both took a share of the work
        assert_no_identifiers(sources, *logs)
        queue.store.dispose()


# ----------------------------------------------------------------------------- fast, with fakes


class FakePacs:
    """Discovery by QIDO-RS (no Orthanc changes); ``down`` makes every call unreachable."""

    def __init__(self, film: Dataset):
        self.film, self.down, self.stored, self.calls = film, False, [], Counter()

    def _check(self, what: str) -> None:
        self.calls[what] += 1
        if self.down:
            raise PacsUnavailable("the PACS at http://fake is unreachable (ConnectionError)")

    def studies(self, since_date=None):
        self._check("studies")
        return [self.film.StudyInstanceUID]

    def instances(self, study_uid):
        self._check("instances")
        f = self.film
        return [InstanceRef(f.StudyInstanceUID, f.SeriesInstanceUID, f.SOPInstanceUID, f.SOPClassUID)]

    def retrieve(self, ref):
        self._check("retrieve")
        return self.film

    def store(self, datasets):
        self._check("store")
        self.stored.extend(datasets)


def fake_worker(tmp_path, analyze, **policy) -> tuple[PacsWorker, FakePacs]:
    pacs = FakePacs(film_dataset(np.full((64, 64), 90, np.uint8)))
    queue = JobQueue(open_store(tmp_path / "jobs.db"), "c" * 64, "fake", QueuePolicy(**policy))
    return PacsWorker(pacs, queue, analyze), pacs


def test_an_unexpected_error_in_one_job_is_retried_then_failed_not_a_crash_loop(tmp_path, caplog):
    def analyze(ds: Dataset) -> Analysis:
        raise ZeroDivisionError(f"patient {ds.PatientName} broke it")

    worker, _ = fake_worker(tmp_path, analyze, max_attempts=2, backoff_s=0.0)
    assert worker.discover() == 1
    assert worker.process_one() and worker.process_one()
    (row,) = worker.queue.rows()
    assert row["status"] == "failed" and row["attempts"] == 2
    assert "unexpected ZeroDivisionError" in row["reason"] and "Test^Child" not in row["reason"]
    assert "Test^Child" not in caplog.text  # the message may carry patient data: not logged


def test_the_worker_claims_nothing_while_the_pacs_is_unreachable(tmp_path):
    worker, pacs = fake_worker(tmp_path, lambda ds: pytest.fail("nothing to score"), max_attempts=2)
    assert worker.discover() == 1
    pacs.down = True
    stop = threading.Event()
    loop = threading.Thread(target=worker.run, args=(stop,), kwargs={"poll_s": 0.05, "max_pause_s": 0.2})
    loop.start()
    time.sleep(1.0)  # about 8 polls: without the breaker, both attempts would be spent and the job failed
    stop.set()
    loop.join(10)
    (row,) = worker.queue.rows()
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert pacs.calls["retrieve"] == 0 and pacs.calls["studies"] >= 2


def test_a_stow_answer_listing_failed_instances_is_not_taken_for_success():
    pacs = DicomWebPacs("http://127.0.0.1:9/dicom-web")
    answer = Dataset()
    failure = Dataset()
    failure.ReferencedSOPInstanceUID, failure.FailureReason = "1.2.3", 0xA700
    answer.FailedSOPSequence = [failure]
    answer.ReferencedSOPSequence = []

    class Client:
        def store_instances(self, datasets):
            return answer

    pacs.client = Client()
    with pytest.raises(PacsUnavailable, match=r"did not store 1 of 2 instance.*A700"):
        pacs.store([Dataset(), Dataset()])
    answer.FailedSOPSequence = []
    pacs.store([Dataset(), Dataset()])  # an empty Failed SOP Sequence is success
