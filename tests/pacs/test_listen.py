"""``pacs listen`` against a real Orthanc: films in by C-STORE (from a modality and from Orthanc itself),
SR + SC back into the same study by C-STORE or STOW-RS, once per image; results pushed back ignored;
an answer only after the spool file and the job are durable; SIGTERM stops the CLI cleanly."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from dicom_factory import compress
from pydicom.uid import JPEGBaseline8Bit, generate_uid
from pynetdicom import AE
from tests.inference.conftest import write_checkpoint
from tests.pacs.conftest import OrthancServer, film_dataset, free_port, require_orthanc

from pneumocxr.imaging import read_image
from pneumocxr.inference import load_predictor
from pneumocxr.pacs.dimse import CStoreSender, Destination, parse_destination
from pneumocxr.pacs.jobs import JobQueue, QueuePolicy
from pneumocxr.pacs.listener import SOURCE, ListenerConfig, StorageListener, serve
from pneumocxr.pacs.selection import SC_CLASS_PREFIX, SR_CLASS_PREFIX
from pneumocxr.pacs.spool import Spool, SpoolRetriever
from pneumocxr.pacs.worker import PacsWorker, core_analyzer
from pneumocxr.store import open_store

REPO_ROOT = Path(__file__).resolve().parents[2]
AET = "PNEUMOCXR"


@pytest.fixture
def films(shared_data):
    train = shared_data / "chest_xray" / "train"
    paths = sorted((train / "NORMAL").glob("*.jpeg"))[:2] + sorted((train / "PNEUMONIA").glob("*.jpeg"))[:1]
    return [np.rint(read_image(p) * 255).astype(np.uint8) for p in paths]


@pytest.fixture
def listener_port() -> int:
    return free_port()


@pytest.fixture
def orthanc_knowing_listener(tmp_path, listener_port):
    """Orthanc with our listener in its DicomModalities, so it can route films to us."""
    require_orthanc()
    server = OrthancServer(tmp_path / "orthanc", modalities={AET: (AET, "127.0.0.1", listener_port)})
    try:
        yield server
    finally:
        server.stop()


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def c_store(port: int, datasets, calling: str = "MODALITY") -> list[int]:
    """Send ``datasets`` to our listener in one association, as a modality would; their statuses."""
    ae = AE(ae_title=calling)
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=AET)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def dicom_bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def study_instances(orthanc, study_uid: str) -> list[dict]:
    found = orthanc.post("/tools/find", json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}})
    out = []
    for orthanc_id in found:
        tags = orthanc.get(f"/instances/{orthanc_id}/simplified-tags")
        out.append({"id": orthanc_id, "sop": tags["SOPInstanceUID"], "class": tags["SOPClassUID"]})
    return out


def orthanc_dataset(orthanc, orthanc_id: str):
    import requests
    from tests.pacs.conftest import PASSWORD, USER

    response = requests.get(f"{orthanc.url}/instances/{orthanc_id}/file", auth=(USER, PASSWORD), timeout=10)
    response.raise_for_status()
    return pydicom.dcmread(io.BytesIO(response.content))


class Running:
    """The listener and its worker thread, in this process (what ``pacs listen`` composes)."""

    def __init__(self, tmp_path, port: int, send):
        checkpoint = write_checkpoint(tmp_path / "model.pt", threshold=0.5, temperature=1.3)
        self.predictor = load_predictor(checkpoint, device="cpu")
        self.queue = JobQueue(
            open_store(tmp_path / "jobs.db"),
            self.predictor.identity.sha256,
            "listener",
            QueuePolicy(lease_s=30),
        )
        self.spool = Spool(tmp_path / "spool")
        self.wake, self.stop = threading.Event(), threading.Event()
        self.listener = StorageListener(
            ListenerConfig(AET, port=port), self.spool, self.queue, wake=self.wake
        )
        worker = PacsWorker(
            None,
            self.queue,
            core_analyzer(self.predictor),
            send=send,
            retrievers={SOURCE: SpoolRetriever(self.spool)},
        )
        self.thread = threading.Thread(
            target=serve, args=(self.listener, worker, self.stop, self.wake), kwargs={"poll_s": 5}
        )

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: _accepts(self.listener.port), 10, "the listener accepts connections")
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()

    def settled(self, n: int) -> list[dict]:
        rows = self.queue.rows()
        return rows if len(rows) == n and all(r["status"] not in ("pending", "running") for r in rows) else []


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_films_in_by_cstore_results_back_by_cstore_in_the_same_study_once(
    orthanc_knowing_listener, listener_port, films, tmp_path
):
    orthanc = orthanc_knowing_listener
    send = CStoreSender(Destination("ORTHANC", "127.0.0.1", orthanc.dicom_port), AET)
    child = film_dataset(films[0], modality="CR")
    adult = film_dataset(films[1], modality="DX", bits=12, monochrome1=True, age="045Y")
    jpeg = compress(film_dataset(films[2][::2, ::2].copy(), modality="CR"), JPEGBaseline8Bit)
    with Running(tmp_path, listener_port, send) as running:
        # three films (one JPEG baseline) and one again: answered Success, three jobs, durable first
        assert c_store(listener_port, [child, adult, jpeg, child]) == [0, 0, 0, 0]
        assert sorted(r["sop_instance_uid"] for r in running.queue.rows()) == sorted(
            [child.SOPInstanceUID, adult.SOPInstanceUID, jpeg.SOPInstanceUID]
        )
        assert {r["source"] for r in running.queue.rows()} == {"cstore"}
        rows = wait_for(lambda: running.settled(3), 90, "the three jobs done")
        by_sop = {r["sop_instance_uid"]: r for r in rows}
        for source in (child, adult, jpeg):
            row = by_sop[source.SOPInstanceUID]
            assert row["status"] == "done", row["reason"]
            assert row["probability"] == pytest.approx(
                running.predictor.predict(source).positive_probability, abs=1e-12
            )
            outputs = wait_for(
                lambda s=source: (lambda i: i if len(i) == 2 else None)(
                    study_instances(orthanc, s.StudyInstanceUID)
                ),
                30,
                "SR + SC in the source's study",
            )
            classes = {o["sop"]: o["class"] for o in outputs}
            assert classes[row["sr_instance_uid"]].startswith(SR_CLASS_PREFIX)
            assert classes[row["sc_instance_uid"]].startswith(SC_CLASS_PREFIX)
            report = orthanc_dataset(
                orthanc, next(o["id"] for o in outputs if o["sop"] == row["sr_instance_uid"])
            )
            evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
            assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
                source.SOPInstanceUID
            )
        assert running.spool.files() == []  # finished jobs leave no film behind

        # our SR and SC routed back to us: answered Success, ignored
        results = [
            orthanc_dataset(orthanc, o["id"]) for o in study_instances(orthanc, child.StudyInstanceUID)
        ]
        assert c_store(listener_port, results) == [0, 0]
        assert running.listener.counts.ignored == 2 and len(running.queue.rows()) == 3

        # the PACS routes a film to us itself (Orthanc knows our AE): a job, results in its study
        third = film_dataset(films[0], modality="CR")
        orthanc_id = orthanc.post("/instances", data=dicom_bytes(third))["ID"]
        orthanc.post(f"/modalities/{AET}/store", json={"Resources": [orthanc_id], "Synchronous": True})
        rows = wait_for(lambda: running.settled(4), 60, "the routed film's job done")
        assert {r["status"] for r in rows} == {"done"}
        classes = sorted(i["class"] for i in study_instances(orthanc, third.StudyInstanceUID))
        assert (
            len(classes) == 3 and sum(c.startswith((SR_CLASS_PREFIX, SC_CLASS_PREFIX)) for c in classes) == 2
        )
        # and sending it again (Orthanc's "store again" button) adds nothing
        orthanc.post(f"/modalities/{AET}/store", json={"Resources": [orthanc_id], "Synchronous": True})
        assert len(running.queue.rows()) == 4
        assert len(study_instances(orthanc, third.StudyInstanceUID)) == 3
    assert running.listener.counts.refused == 0


@pytest.mark.slow
def test_listen_cli_sends_by_stow_rs_and_stops_on_sigterm(orthanc, films, tmp_path):
    port = free_port()
    checkpoint = write_checkpoint(tmp_path / "model.pt")
    command = [
        sys.executable, "-m", "pneumocxr", "pacs", "listen", "--ae-title", AET, "--port", str(port),
        "--model", str(checkpoint), "--db", str(tmp_path / "jobs.db"), "--spool", str(tmp_path / "spool"),
        "--send", "stow", "--dicomweb", orthanc.dicomweb, "--poll", "1",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_for(lambda: _accepts(port) or process.poll() is not None, 90, "the CLI listens")
        assert process.poll() is None, process.stdout.read()
        film = film_dataset(films[0], modality="DX")
        assert c_store(port, [film]) == [0]
        outputs = wait_for(
            lambda: (lambda i: i if len(i) == 2 else None)(study_instances(orthanc, film.StudyInstanceUID)),
            60,
            "SR + SC stored by STOW-RS",
        )
        assert sorted(o["class"][:25] for o in outputs) == sorted(
            [SR_CLASS_PREFIX[:25], SC_CLASS_PREFIX[:25]]
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        output = process.stdout.read()
        assert "stopped: 1 film(s) stored (1 new job(s))" in output
        assert "Test^Child" not in output and "TEST-1" not in output  # no patient data in the log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        process.stdout.close()


# ---- without Orthanc: the durability contract and the spool's guards ---------------------------------


def _event(ds):
    """What pynetdicom hands the C-STORE handler, minus the network."""
    return SimpleNamespace(
        dataset=ds, file_meta=ds.file_meta, encoded_dataset=lambda: dicom_bytes(ds), assoc=None
    )


def test_a_cstore_is_answered_success_only_once_spooled_and_queued(tmp_path, monkeypatch):
    queue = JobQueue(open_store(tmp_path / "jobs.db"), "m" * 64, "t")
    spool = Spool(tmp_path / "spool")
    listener = StorageListener(ListenerConfig(AET, port=0), spool, queue)
    film = film_dataset(np.full((64, 64), 100, np.uint8))
    assert listener.handle_store(_event(film)) == 0x0000
    assert [p.name for p in spool.files()] == [f"{film.SOPInstanceUID}.dcm"]  # named by UID only
    assert pydicom.dcmread(spool.files()[0]).PatientID == "TEST-1"  # the bytes as sent
    assert listener.handle_store(_event(film)) == 0x0000 and len(queue.rows()) == 1  # re-sent: no-op

    def full_disk(*_):
        raise OSError(28, "No space left on device")

    other = film_dataset(np.full((64, 64), 90, np.uint8))
    monkeypatch.setattr(spool, "write", full_disk)
    assert listener.handle_store(_event(other)) == 0xA700  # the sender keeps it and retries
    assert len(queue.rows()) == 1
    bad = film_dataset(np.full((64, 64), 90, np.uint8))
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):
        bad.SOPInstanceUID = "../../etc/passwd"  # a hostile sender's "UID" must not become a path
    assert listener.handle_store(_event(bad)) == 0xC000


def test_spool_writes_atomically_and_sweeps_what_no_job_needs(tmp_path):
    spool = Spool(tmp_path / "spool")
    (spool.folder / f".1.2.3.{'a' * 8}.part").write_bytes(b"half")  # a crash mid-write
    spool = Spool(tmp_path / "spool")
    assert list(spool.folder.iterdir()) == []
    with pytest.raises(ValueError):
        spool.path("1.2/../3")
    queue = JobQueue(open_store(tmp_path / "jobs.db"), "m" * 64, "t")
    kept, orphan = generate_uid(), generate_uid()
    queue.enqueue("1.2", None, kept, SOURCE)
    spool.write(kept, b"x")
    spool.write(orphan, b"y")  # spooled, then the process died before the job was added
    assert StorageListener(ListenerConfig(AET, port=0), spool, queue).sweep() == 1
    assert [p.stem for p in spool.files()] == [kept]


def test_send_to_is_parsed_and_checked():
    assert parse_destination("ORTHANC@pacs.example:4242") == Destination("ORTHANC", "pacs.example", 4242)
    assert parse_destination("PACS@[::1]:104").host == "::1"
    for bad in ("ORTHANC", "ORTHANC@host", "@host:1", "A_VERY_LONG_AE_TITLE_X@h:1", "X@h:70000"):
        with pytest.raises(Exception, match="--send-to"):
            parse_destination(bad)


@pytest.mark.parametrize(
    ("sop_class", "own"),
    [
        ("1.2.840.10008.5.1.4.1.1.88.34", True),  # Comprehensive 3D SR
        ("1.2.840.10008.5.1.4.1.1.7", True),  # Secondary Capture
        ("1.2.840.10008.5.1.4.1.1.7.4", True),  # multi-frame true-colour SC
        ("1.2.840.10008.5.1.4.1.1.77.1.4", False),  # VL photograph: shares the prefix, not a result
        ("1.2.840.10008.5.1.4.1.1.1", False),  # CR
    ],
)
def test_only_results_are_taken_for_our_own_output(sop_class, own):
    from pneumocxr.pacs.selection import is_own_output

    assert is_own_output(sop_class) is own


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--send", "cstore"], "--send-to"),
        (["--send", "cstore", "--send-to", "ORTHANC@host"], "AET@host:port"),
        (["--send", "stow"], "--dicomweb"),
        (["--send", "stow", "--dicomweb", "http://x", "--ae-title", "A\\B"], "--ae-title"),
    ],
)
def test_listen_names_a_missing_or_bad_destination_in_one_line(args, named, tmp_path, capsys):
    from pneumocxr.cli.main import main

    assert main(["pacs", "listen", "--model", str(tmp_path / "none.pt"), *args]) == 2
    error = capsys.readouterr().err
    assert named in error and "Traceback" not in error
