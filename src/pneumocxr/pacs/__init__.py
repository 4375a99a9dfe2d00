"""PACS integration: studies in (DICOMweb / Orthanc changes / C-STORE), results out as DICOM a
viewer shows (a TID 1500 SR and a Secondary Capture with the heat map burned in), exactly once.

The worker runs outside the PACS, on the prediction core; a jobs table keyed by (SOP instance, model
sha256) and deterministic output UIDs make re-sent studies and restarts produce no second result.
"""
