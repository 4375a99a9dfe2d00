"""Deterministic identities of everything the worker writes.

Output UIDs come from (study, source SOP instance, model sha256, what): re-processing the same film
with the same model writes the same UIDs (the PACS keeps one copy), a new model writes new ones. The
device UID of the algorithm changes exactly when the model changes (IHE AI Results).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import generate_uid

from pneumocxr._version import __version__

MANUFACTURER = "pneumocxr (open source)"
SERIES_NUMBER_SR = 9701
SERIES_NUMBER_SC = 9702
# our outputs say who made them in SeriesDescription; the watcher skips anything carrying it
SERIES_DESCRIPTION_SR = "pneumocxr AI result (research use)"
SERIES_DESCRIPTION_SC = "pneumocxr heat map (research use - not for diagnosis)"
OUR_SERIES_DESCRIPTIONS = (SERIES_DESCRIPTION_SR, SERIES_DESCRIPTION_SC)


@dataclass(frozen=True)
class OutputUids:
    sr_series: str
    sr_instance: str
    sc_series: str
    sc_instance: str
    tracking: str


def output_uids(study_uid: str, sop_instance_uid: str, model_sha256: str) -> OutputUids:
    def uid(what: str) -> str:
        return generate_uid(entropy_srcs=[study_uid, sop_instance_uid, model_sha256, what])

    return OutputUids(uid("sr-series"), uid("sr"), uid("sc-series"), uid("sc"), uid("tracking"))


def device_uid(model_sha256: str) -> str:
    """The algorithm as a device: one UID per model file."""
    return generate_uid(entropy_srcs=["pneumocxr-device", model_sha256])


def software_version(model_sha256: str) -> str:
    return f"pneumocxr {__version__}; model sha256 {model_sha256[:16]}"
