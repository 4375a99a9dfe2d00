"""The C-STORE listener's spool: each received instance on disk until its job is finished.

One file per SOP Instance UID (``<uid>.dcm``, never anything from the patient in a name), written
atomically — a temporary file in the same folder, fsync, rename, fsync of the folder — so that once
the listener answers the C-STORE a crash loses nothing, and a reader never sees half a file. The
bytes are kept exactly as the sender encoded them (a JPEG film stays JPEG). A file lives until its
job is finished for good (done, skipped or failed): the PACS keeps the original, the spool is not
an archive, and patient data should not linger on the AI node.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pneumocxr.errors import ConfigError, UnsupportedImageError
from pneumocxr.pacs.dicomweb import InstanceGone
from pneumocxr.pacs.jobs import Job

logger = logging.getLogger(__name__)

# PS3.5 §9.1: digits and dots, no leading zeros required here, at most 64 characters. Checked before
# a UID from the network becomes a file name (no "../", no separators).
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_PART = ".part"


def valid_uid(uid: object) -> bool:
    text = str(uid or "")
    return len(text) <= 64 and _UID.match(text) is not None


class Spool:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).expanduser()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.folder.chmod(0o700)  # patient data: readable by the service's user only
        except OSError as exc:
            raise ConfigError(f"spool folder {self.folder}: {exc}; choose a writable --spool") from None
        for stale in self.folder.glob(f".*{_PART}"):  # a write interrupted by a crash: never answered
            stale.unlink(missing_ok=True)

    def path(self, sop_instance_uid: str) -> Path:
        if not valid_uid(sop_instance_uid):
            raise ValueError("not a valid DICOM UID (digits and dots, at most 64 characters)")
        return self.folder / f"{sop_instance_uid}.dcm"

    def write(self, sop_instance_uid: str, data: bytes) -> Path:
        """Store ``data`` (a DICOM file) durably under the UID; replaces an earlier copy atomically."""
        final = self.path(sop_instance_uid)
        temporary = self.folder / f".{sop_instance_uid}.{uuid.uuid4().hex}{_PART}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_folder(self.folder)
        return final

    def read(self, sop_instance_uid: str) -> Dataset:
        path = self.path(sop_instance_uid)
        try:
            return pydicom.dcmread(path)
        except FileNotFoundError:
            raise InstanceGone("the received instance is no longer in the spool folder") from None
        except (InvalidDicomError, EOFError, ValueError) as exc:
            raise UnsupportedImageError(
                path.name, f"the received file is not readable DICOM ({exc})"
            ) from None

    def remove(self, sop_instance_uid: str) -> None:
        if valid_uid(sop_instance_uid):
            self.path(sop_instance_uid).unlink(missing_ok=True)

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.dcm"))


class SpoolRetriever:
    """Jobs the C-STORE listener received: the instance from the spool, dropped once finished."""

    def __init__(self, spool: Spool):
        self.spool = spool

    def fetch(self, job: Job) -> Dataset:
        return self.spool.read(job.sop_instance_uid)

    def release(self, job: Job) -> None:
        self.spool.remove(job.sop_instance_uid)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
