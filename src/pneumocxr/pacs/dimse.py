"""DIMSE plumbing (pynetdicom): what the listener accepts, and results sent back by C-STORE.

Accepted storage classes: the radiographs the model is for (CR, DX for presentation and processing)
and the other common image classes a PACS routing rule may send along (mammography, CT, MR, US,
XA/RF, NM) — received and recorded as skipped with the reason rather than refused, so the sender's
queue does not fill with failures; plus the SR and Secondary Capture classes, accepted and ignored
(our own results coming back). Transfer syntaxes: the uncompressed ones always, each compressed
one only when pydicom can decode it here (JPEG baseline needs pylibjpeg: the ``dicom`` extra) — a
film we could not decode is better refused at negotiation, when the sender can still convert it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from pydicom import uid as uids
from pydicom.dataset import Dataset
from pynetdicom import AE, build_context
from pynetdicom import sop_class as sc

from pneumocxr.errors import ConfigError
from pneumocxr.pacs.dicomweb import PacsUnavailable

logger = logging.getLogger(__name__)

IMAGE_CLASSES = (
    sc.ComputedRadiographyImageStorage,
    sc.DigitalXRayImageStorageForPresentation,
    sc.DigitalXRayImageStorageForProcessing,
    sc.DigitalMammographyXRayImageStorageForPresentation,
    sc.DigitalMammographyXRayImageStorageForProcessing,
    sc.CTImageStorage,
    sc.EnhancedCTImageStorage,
    sc.MRImageStorage,
    sc.EnhancedMRImageStorage,
    sc.UltrasoundImageStorage,
    sc.UltrasoundMultiFrameImageStorage,
    sc.XRayAngiographicImageStorage,
    sc.XRayRadiofluoroscopicImageStorage,
    sc.NuclearMedicineImageStorage,
)
# results (ours or another algorithm's): accepted so a "send the whole study" rule succeeds, then ignored
RESULT_CLASSES = (
    sc.SecondaryCaptureImageStorage,
    sc.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    sc.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    sc.MultiFrameTrueColorSecondaryCaptureImageStorage,
    sc.BasicTextSRStorage,
    sc.EnhancedSRStorage,
    sc.ComprehensiveSRStorage,
    sc.Comprehensive3DSRStorage,
)
NATIVE_SYNTAXES = (
    uids.ExplicitVRLittleEndian,
    uids.ImplicitVRLittleEndian,
    uids.DeflatedExplicitVRLittleEndian,
)
COMPRESSED_SYNTAXES = (
    uids.JPEGBaseline8Bit,
    uids.JPEGExtended12Bit,
    uids.JPEGLosslessSV1,
    uids.JPEGLossless,
    uids.JPEGLSLossless,
    uids.JPEGLSNearLossless,
    uids.JPEG2000Lossless,
    uids.JPEG2000,
    uids.RLELossless,
)
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700  # we could not store it durably: the sender should try again
STATUS_CANNOT_UNDERSTAND = 0xC000  # no usable SOP Instance UID
_WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})  # stored, with a remark


def decodable_syntaxes() -> list[str]:
    """Transfer syntaxes whose pixel data pydicom can decode with the plugins installed here."""
    from pydicom.pixels import get_decoder

    available = []
    for syntax in COMPRESSED_SYNTAXES:
        try:
            if get_decoder(syntax).is_available:
                available.append(syntax)
        except (NotImplementedError, ValueError):
            continue
    return [*NATIVE_SYNTAXES, *available]


def storage_contexts() -> list:
    """The presentation contexts the listener supports (pynetdicom ``build_context`` objects)."""
    images = decodable_syntaxes()
    contexts = [build_context(cls, images) for cls in IMAGE_CLASSES]
    # results are never decoded: any syntax will do
    results = [*NATIVE_SYNTAXES, *COMPRESSED_SYNTAXES]
    contexts += [build_context(cls, results) for cls in RESULT_CLASSES]
    return contexts


def check_ae_title(title: str, what: str = "--ae-title") -> str:
    """A valid AE title (PS3.5: at most 16 characters, no backslash or control characters)."""
    cleaned = title.strip()
    if not cleaned or len(cleaned) > 16 or "\\" in cleaned or not cleaned.isprintable():
        raise ConfigError(f"{what} {title!r}: an AE title is 1–16 printable characters, no backslash")
    return cleaned


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_destination(text: str) -> Destination:
    """``AET@host:port`` → Destination; ConfigError naming the expected form."""
    match = re.fullmatch(r"([^@]+)@(\[[^\]]+\]|[^:@]+):(\d{1,5})", text.strip())
    if match is None or not 0 < int(match.group(3)) < 65536:
        raise ConfigError(f"--send-to {text!r}: expected AET@host:port, e.g. ORTHANC@pacs.example:4242")
    return Destination(
        check_ae_title(match.group(1), "--send-to"), match.group(2).strip("[]"), int(match.group(3))
    )


class CStoreSender:
    """Sends results (SR + SC) to a DICOM node by C-STORE, in one association per call.

    Every failure — association refused or aborted, a failure status — raises PacsUnavailable: the
    job is retried with backoff and, after the cap, failed with the reason. Re-sending is harmless
    (deterministic UIDs: the receiver keeps one copy)."""

    def __init__(self, destination: Destination, calling_ae_title: str, *, timeout_s: float = 30.0):
        self.destination, self.calling, self.timeout_s = destination, calling_ae_title, timeout_s

    def __call__(self, datasets: list[Dataset]) -> None:
        ae = AE(ae_title=self.calling)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        for cls in sorted({str(ds.SOPClassUID) for ds in datasets}):
            ae.add_requested_context(cls, [uids.ExplicitVRLittleEndian, uids.ImplicitVRLittleEndian])
        where = str(self.destination)
        assoc = ae.associate(self.destination.host, self.destination.port, ae_title=self.destination.ae_title)
        if not assoc.is_established:
            raise PacsUnavailable(f"C-STORE destination {where}: association not established")
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = int(status.Status) if status and "Status" in status else None
                if code is None:
                    raise PacsUnavailable(f"C-STORE destination {where}: no answer (timed out or aborted)")
                if code != STATUS_SUCCESS and code not in _WARNING_STATUSES:
                    raise PacsUnavailable(f"C-STORE destination {where}: status 0x{code:04X}")
        finally:
            if assoc.is_established:
                assoc.release()
