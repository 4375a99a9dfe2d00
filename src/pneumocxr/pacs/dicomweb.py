"""The PACS over DICOMweb (dicomweb-client): QIDO-RS to find, WADO-RS to fetch, STOW-RS to send.

``PacsUnavailable`` marks failures worth retrying (connection refused, time-out, HTTP 5xx / 429);
anything else (a 4xx other than 404/429, an unparsable answer) is the job's own problem.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pydicom
import requests
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset

from pneumocxr.errors import PneumoCXRError

logger = logging.getLogger(__name__)


class PacsUnavailable(PneumoCXRError):
    """The PACS did not answer properly; try again later."""


class InstanceGone(PneumoCXRError):
    """The instance is no longer in the PACS (HTTP 404)."""


@dataclass(frozen=True)
class InstanceRef:
    study: str
    series: str | None
    sop: str
    sop_class: str | None
    series_description: str | None = None


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``http://user:pass@host/…`` → (``http://host/…``, (user, pass)); credentials never logged."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), (
        parts.username,
        parts.password or "",
    )


class DicomWebPacs:
    def __init__(self, url: str, *, timeout_s: float = 30.0):
        clean, credentials = split_credentials(url)
        self.session = requests.Session()
        if credentials is not None:
            self.session.auth = credentials
        self.url, self.timeout_s = clean, timeout_s
        self.client = DICOMwebClient(clean, session=self.session, timeout=timeout_s)

    def instances(self, study_uid: str) -> list[InstanceRef]:
        rows = self._call(
            self.client.search_for_instances,
            study_instance_uid=study_uid,
            fields=["SOPClassUID", "SeriesInstanceUID", "SeriesDescription"],
            get_remaining=True,
        )
        return [
            InstanceRef(
                study_uid,
                _value(r, "0020000E"),
                _value(r, "00080018"),
                _value(r, "00080016"),
                _value(r, "0008103E"),
            )
            for r in rows
        ]

    def studies(self, since_date: str | None = None) -> list[str]:
        """Study UIDs (QIDO-RS), optionally from ``since_date`` (YYYYMMDD) on."""
        filters = {"StudyDate": f"{since_date}-"} if since_date else None
        rows = self._call(self.client.search_for_studies, search_filters=filters, get_remaining=True)
        return [uid for uid in (_value(r, "0020000D") for r in rows) if uid]

    def find_studies(self, filters: dict[str, str]) -> list[tuple[str, str | None]]:
        """(StudyInstanceUID, AccessionNumber) of the studies matching QIDO-RS ``filters``."""
        rows = self._call(
            self.client.search_for_studies,
            search_filters=filters or None,
            fields=["AccessionNumber"],
            get_remaining=True,
        )
        return [(uid, _value(r, "00080050")) for r in rows if (uid := _value(r, "0020000D"))]

    def retrieve(self, ref: InstanceRef) -> Dataset:
        """One instance by WADO-RS, in whatever transfer syntax the PACS stores (``transfer-syntax=*``).

        Parsed here rather than by dicomweb-client: Orthanc's WADO-RS parts carry the file meta group
        without the 128-byte preamble and "DICM", which pydicom reads only with ``force=True``."""
        url = f"{self.url}/studies/{ref.study}/series/{ref.series}/instances/{ref.sop}"
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        response = self._call(self.session.get, url, headers={"Accept": accept}, timeout=self.timeout_s)
        self._raise_for_status(response)
        parts = multipart_parts(response.content, response.headers.get("Content-Type", ""))
        if not parts:
            raise InstanceGone(f"the PACS at {self.url} returned no instance for this SOP instance UID")
        return pydicom.dcmread(io.BytesIO(parts[0]), force=True)

    def store(self, datasets: list[Dataset]) -> None:
        """STOW-RS; raises PacsUnavailable unless every instance was stored.

        A STOW-RS answer may be a success status (200/202) that lists instances in its Failed SOP
        Sequence (PS3.18 §10.5.3; e.g. A700 out of resources); dicomweb-client returns it without
        complaint, and a job marked done on it would have lost its result."""
        answer = self._call(self.client.store_instances, datasets)
        failed = list(answer.get("FailedSOPSequence", None) or []) if answer is not None else []
        if failed:
            reasons = sorted({f"{int(item.get('FailureReason', 0)):04X}" for item in failed})
            raise PacsUnavailable(
                f"the PACS at {self.url} did not store {len(failed)} of {len(datasets)} instance(s) "
                f"(STOW-RS FailureReason {', '.join(reasons)})"
            )

    def _call(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except requests.HTTPError as exc:
            self._raise_for_status(exc.response)
            raise
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PacsUnavailable(f"the PACS at {self.url} is unreachable ({type(exc).__name__})") from None

    def _raise_for_status(self, response: requests.Response | None) -> None:
        status = response.status_code if response is not None else None
        if status is not None and status < 400:
            return
        if status == 404:
            raise InstanceGone(f"not found in the PACS (HTTP 404) at {self.url}")
        if status is None or status >= 500 or status == 429:
            raise PacsUnavailable(f"the PACS at {self.url} answered HTTP {status}")
        raise PneumoCXRError(f"the PACS at {self.url} refused the request (HTTP {status})")


def multipart_parts(body: bytes, content_type: str) -> list[bytes]:
    """The bodies of a multipart/related message (RFC 2046), in order."""
    boundary = next(
        (
            p.split("=", 1)[1].strip().strip('"')
            for p in content_type.split(";")
            if p.strip().startswith("boundary=")
        ),
        None,
    )
    if boundary is None:
        return [body] if body else []
    parts = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        content = chunk.partition(b"\r\n\r\n")[2]  # after the part headers
        parts.append(content[:-2] if content.endswith(b"\r\n") else content)
    return parts


def _value(row: dict, tag: str) -> str | None:
    values = row.get(tag, {}).get("Value") or []
    return str(values[0]) if values else None
