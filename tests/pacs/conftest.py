"""A real Orthanc for the PACS tests, started on free loopback ports with a config of its own and
stopped by PID; and real DICOM films made from ../shared/data."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "pneumocxr", "test-only-password"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE = "1.2.840.10008.5.1.4.1.1.1.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OrthancServer:
    """``modalities``: DICOM nodes Orthanc knows, name → (AE title, host, port) — e.g. our C-STORE
    listener, so a test can ask Orthanc to send to it (``POST /modalities/NAME/store``)."""

    def __init__(self, root: Path, modalities: dict[str, tuple[str, str, int]] | None = None):
        self.http_port, self.dicom_port = free_port(), free_port()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.authed = f"http://{USER}:{PASSWORD}@127.0.0.1:{self.http_port}"
        self.dicomweb = f"{self.authed}/dicom-web"
        config = {
            "Name": "PNEUMOCXR_TEST",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 2,
            "DicomModalities": {name: list(node) for name, node in (modalities or {}).items()},
            "OverwriteInstances": True,
        }
        (root / "config.json").write_text(json.dumps(config))
        self.log = (root / "orthanc.log").open("w")
        self.process = subprocess.Popen(
            [str(ORTHANC), str(root / "config.json")], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/system", auth=(USER, PASSWORD), timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not start; see {root / 'orthanc.log'}")

    def get(self, path: str, **kwargs):
        response = requests.get(self.url + path, auth=(USER, PASSWORD), timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, **kwargs):
        response = requests.post(self.url + path, auth=(USER, PASSWORD), timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


def require_orthanc() -> None:
    if not ORTHANC.exists() or not DICOMWEB_PLUGIN.exists():
        pytest.skip(
            "Orthanc with the DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)"
        )


@pytest.fixture
def orthanc(tmp_path):
    require_orthanc()
    server = OrthancServer(tmp_path / "orthanc")
    try:
        yield server
    finally:
        server.stop()


def film_dataset(
    levels: np.ndarray,
    *,
    modality: str = "CR",
    view: str = "AP",
    body_part: str = "CHEST",
    age: str = "003Y",
    bits: int = 8,
    monochrome1: bool = False,
    study_uid: str | None = None,
) -> Dataset:
    """A DICOM radiograph of ``levels`` (uint8 film) as a modality would send it: CR or DX, 8 or 12
    bits (12-bit: levels × 16 with a window mapping back), MONOCHROME1 stored inverted."""
    sop_class = CR_IMAGE if modality == "CR" else DX_IMAGE
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "TEST-1", "Test^Child", "", "O"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20261205", "120000", "ACC1", "1"
    ds.ReferringPhysicianName, ds.SeriesNumber, ds.InstanceNumber = "", 1, 1
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined, ds.PatientAge = modality, view, body_part, age
    ds.Rows, ds.Columns = levels.shape
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    stored = levels.astype(np.uint16)
    if monochrome1:
        stored = 255 - stored
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    if bits == 8:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = stored.astype(np.uint8).tobytes()
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.WindowCenter, ds.WindowWidth = 2040.5, 4081  # maps level × 16 back onto 0..255
        ds.PixelData = (stored * 16).astype(np.uint16).tobytes()
    return ds
