"""End to end against a real Orthanc: films in by STOW-RS, StableStudy → jobs → SR + SC back into the
same study, exactly once, with the core's probability; skips recorded with their reasons."""

from __future__ import annotations

import subprocess
import time

import highdicom as hd
import numpy as np
import pytest
from tests.inference.conftest import write_checkpoint
from tests.pacs.conftest import film_dataset

from pneumocxr.imaging import read_image
from pneumocxr.inference import load_predictor
from pneumocxr.pacs.dicomweb import DicomWebPacs
from pneumocxr.pacs.jobs import JobQueue, QueuePolicy
from pneumocxr.pacs.orthanc import OrthancChanges
from pneumocxr.pacs.selection import SC_CLASS_PREFIX, SR_CLASS_PREFIX
from pneumocxr.pacs.worker import PacsWorker, core_analyzer
from pneumocxr.store import open_store
from pneumocxr.store.audit import AuditLog

pytestmark = pytest.mark.slow


def levels_of(path) -> np.ndarray:
    return np.rint(read_image(path) * 255).astype(np.uint8)


@pytest.fixture
def films(shared_data):
    train = shared_data / "chest_xray" / "train"
    return [
        levels_of(p)
        for p in sorted((train / "NORMAL").glob("*.jpeg"))[:2]
        + sorted((train / "PNEUMONIA").glob("*.jpeg"))[:2]
    ]


def run_until_settled(
    worker: PacsWorker, queue: JobQueue, expected_jobs: int, deadline_s: float = 60
) -> None:
    """Discover and process until ``expected_jobs`` jobs exist and none is pending or running."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        worker.discover()
        while worker.process_one():
            pass
        rows = queue.rows()
        if len(rows) >= expected_jobs and all(r["status"] not in ("pending", "running") for r in rows):
            return
        time.sleep(0.5)
    raise AssertionError(
        f"not settled in {deadline_s} s: {[(r['status'], r['reason']) for r in queue.rows()]}"
    )


def orthanc_instances(orthanc) -> list[dict]:
    out = []
    for orthanc_id in orthanc.get("/instances"):
        tags = orthanc.get(f"/instances/{orthanc_id}/simplified-tags")
        out.append(
            {
                "study": tags["StudyInstanceUID"],
                "sop": tags["SOPInstanceUID"],
                "class": tags["SOPClassUID"],
                "id": orthanc_id,
            }
        )
    return out


def test_studies_in_results_out_exactly_once(orthanc, films, tmp_path):
    child = film_dataset(films[2], modality="CR", age="003Y")
    adult_dx = film_dataset(films[3], modality="DX", age="045Y", bits=12, monochrome1=True)
    lateral = film_dataset(films[0], modality="CR", view="LL")
    knee = film_dataset(films[1], modality="DX", body_part="KNEE")
    pacs = DicomWebPacs(orthanc.dicomweb)
    pacs.store([child, adult_dx, lateral, knee])

    checkpoint = write_checkpoint(tmp_path / "model.pt", threshold=0.5, temperature=1.3)
    predictor = load_predictor(checkpoint, device="cpu")
    store = open_store(tmp_path / "jobs.db")
    queue = JobQueue(store, predictor.identity.sha256, "worker-a", QueuePolicy(lease_s=30))
    worker = PacsWorker(
        pacs, queue, core_analyzer(predictor), changes=OrthancChanges(orthanc.authed), audit=AuditLog(store)
    )
    run_until_settled(worker, queue, expected_jobs=4)

    by_sop = {r["sop_instance_uid"]: r for r in queue.rows()}
    assert by_sop[child.SOPInstanceUID]["status"] == "done"
    assert by_sop[adult_dx.SOPInstanceUID]["status"] == "done"
    assert (
        by_sop[lateral.SOPInstanceUID]["status"] == "skipped"
        and "lateral" in by_sop[lateral.SOPInstanceUID]["reason"]
    )
    assert (
        by_sop[knee.SOPInstanceUID]["status"] == "skipped" and "KNEE" in by_sop[knee.SOPInstanceUID]["reason"]
    )

    # the SR and the SC land in the source's study, and the probability is the core's on that file
    for source in (child, adult_dx):
        outputs = [
            i
            for i in orthanc_instances(orthanc)
            if i["study"] == source.StudyInstanceUID and i["sop"] != source.SOPInstanceUID
        ]
        assert sorted(o["class"][: len(SR_CLASS_PREFIX)] == SR_CLASS_PREFIX for o in outputs) == [False, True]
        sr_info = next(o for o in outputs if o["class"].startswith(SR_CLASS_PREFIX))
        sc_info = next(o for o in outputs if o["class"].startswith(SC_CLASS_PREFIX))
        sr_path = tmp_path / f"{sr_info['sop']}.dcm"
        sr_path.write_bytes(orthanc_file(orthanc, sr_info["id"]))
        report = hd.sr.srread(sr_path)
        text = (
            subprocess.run(["dsrdump", str(sr_path)], capture_output=True, text=True).stdout
            if _has_dsrdump()
            else ""
        )
        expected = predictor.predict(source).positive_probability
        assert by_sop[source.SOPInstanceUID]["probability"] == pytest.approx(expected, abs=1e-12)
        numbers = [
            item
            for item in report.ContentSequence[-1].ContentSequence[0].ContentSequence
            if item.ValueType == "NUM"
        ]
        assert float(numbers[0].MeasuredValueSequence[0].NumericValue) == pytest.approx(expected, abs=1e-9)
        assert report.CompletionFlag == "COMPLETE" and report.VerificationFlag == "UNVERIFIED"
        assert report.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == source.StudyInstanceUID
        if text:
            assert "Pneumonia" in text and "Research use only" in text
        assert sc_info["sop"] == by_sop[source.SOPInstanceUID]["sc_instance_uid"]
    adult_sr = orthanc_file(
        orthanc,
        next(
            i["id"]
            for i in orthanc_instances(orthanc)
            if i["sop"] == by_sop[adult_dx.SOPInstanceUID]["sr_instance_uid"]
        ),
    )
    assert b"age_out_of_range" in adult_sr  # the intended-use warning is written into the SR

    # our results fired StableStudy again: the worker must not loop or duplicate
    count = len(orthanc_instances(orthanc))
    time.sleep(3)  # past StableAge
    assert worker.discover() == 0
    assert not worker.process_one()
    assert len(orthanc_instances(orthanc)) == count == 4 + 4
    assert len(list(AuditLog(store).rows())) == 2


def orthanc_file(orthanc, orthanc_id: str) -> bytes:
    import requests
    from tests.pacs.conftest import PASSWORD, USER

    response = requests.get(f"{orthanc.url}/instances/{orthanc_id}/file", auth=(USER, PASSWORD), timeout=10)
    response.raise_for_status()
    return response.content


def _has_dsrdump() -> bool:
    from shutil import which

    return which("dsrdump") is not None
