"""The result as a Comprehensive 3D SR following TID 1500 (highdicom), with IHE AI Results'
Contributing Equipment.

Content: a device observer (the algorithm, its UID per model), one measurement group referencing the
source image, with the qualitative evaluation Pneumonia (SNOMED CT 233604007) = Present / Absent, the
calibrated probability and the decision threshold as numeric measurements, the intended-use warnings
(coded) and "research use only". Flags, deliberately: COMPLETE (the algorithm's output is complete),
PRELIMINARY (not a final clinical report: no person has read it), UNVERIFIED (no one verified it).
"""

from __future__ import annotations

import highdicom as hd
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    Comprehensive3DSR,
    DeviceObserverIdentifyingAttributes,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    SourceImageForMeasurementGroup,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pneumocxr.inference import PredictionResult
from pneumocxr.pacs.identity import (
    MANUFACTURER,
    SERIES_DESCRIPTION_SR,
    SERIES_NUMBER_SR,
    device_uid,
    output_uids,
    software_version,
)

PNEUMONIA = CodedConcept("233604007", "SCT", "Pneumonia")
CHEST_XRAY = CodedConcept("399208008", "SCT", "Plain chest X-ray")
SCHEME = "99PNEUMOCXR"  # private coding scheme for what standard codes do not name
PROBABILITY = CodedConcept("P-0001", SCHEME, "Calibrated probability of pneumonia")
THRESHOLD = CodedConcept("P-0002", SCHEME, "Decision threshold on the calibrated probability")
WARNING = CodedConcept("W-0001", SCHEME, "Outside the intended use")
STATUS = CodedConcept("R-0001", SCHEME, "Regulatory status")
RESEARCH_USE = CodedConcept("RUO", SCHEME, "Research use only - not for diagnosis")


def pneumonia_present(result: PredictionResult) -> bool:
    """Binary model: the decided class is the positive one; k classes: anything but the first (NORMAL)."""
    return result.decision != 0


def build_sr(source: Dataset, result: PredictionResult) -> Comprehensive3DSR:
    """The SR of ``result`` about ``source`` (its UIDs are deterministic: ``identity.output_uids``)."""
    model_sha = result.model.sha256 or "unsaved-model"
    uids = output_uids(source.StudyInstanceUID, source.SOPInstanceUID, model_sha)
    device = DeviceObserverIdentifyingAttributes(
        uid=device_uid(model_sha),
        name="pneumocxr",
        manufacturer_name=MANUFACTURER,
        model_name=result.model.name,
        serial_number=model_sha[:16],
    )
    context = ObservationContext(observer_device_context=ObserverContext(codes.DCM.Device, device))
    evaluations = [
        QualitativeEvaluation(
            PNEUMONIA, codes.SCT.Present if pneumonia_present(result) else codes.SCT.Absent
        ),
        QualitativeEvaluation(STATUS, RESEARCH_USE),
        *(
            QualitativeEvaluation(WARNING, CodedConcept(w.code, SCHEME, w.message[:64]))
            for w in result.warnings
        ),
    ]
    measurements = [Measurement(PROBABILITY, result.positive_probability, codes.UCUM.NoUnits)]
    if result.threshold is not None:
        measurements.append(Measurement(THRESHOLD, result.threshold, codes.UCUM.NoUnits))
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=uids.tracking, identifier="pneumocxr pneumonia assessment"
        ),
        algorithm_id=AlgorithmIdentification(
            name=f"pneumocxr {result.model.name}", version=software_version(model_sha)
        ),
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[SourceImageForMeasurementGroup(source.SOPClassUID, source.SOPInstanceUID)],
    )
    report = MeasurementReport(
        observation_context=context, procedure_reported=CHEST_XRAY, imaging_measurements=[group]
    )
    return Comprehensive3DSR(
        evidence=[source],
        content=report,
        series_instance_uid=uids.sr_series,
        series_number=SERIES_NUMBER_SR,
        sop_instance_uid=uids.sr_instance,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        contributing_equipment=[_equipment(result, model_sha)],
        series_description=SERIES_DESCRIPTION_SR,
    )


def _equipment(result: PredictionResult, model_sha: str) -> hd.ContributingEquipment:
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=f"pneumocxr {result.model.name}",
        software_versions=software_version(model_sha),
        device_serial_number=model_sha[:16],
        contribution_description="AI pneumonia assessment (research use only, not a medical device)",
    )
