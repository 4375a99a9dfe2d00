"""Explanations: Grad-CAM family maps for every registered model, overlays in the original
image geometry, the evaluation grid, and sanity checks (randomisation, faithfulness)."""

from pneumocxr.data.image_files import collect_inputs
from pneumocxr.explain.cam import (
    CLASS_AGNOSTIC,
    METHODS,
    TARGETS,
    CamResult,
    compute_cam,
    resolve_targets,
    target_layer,
)
from pneumocxr.explain.explain_files import explain_images
from pneumocxr.explain.geometry import content_box, to_original_geometry
from pneumocxr.explain.grid import gradcam_grid, gradcam_grid_for, select_cases
from pneumocxr.explain.images import ExplainFailure, ExplainRun, Explanation
from pneumocxr.explain.overlay import blend, save_overlay

__all__ = [
    "CLASS_AGNOSTIC",
    "METHODS",
    "TARGETS",
    "CamResult",
    "ExplainFailure",
    "ExplainRun",
    "Explanation",
    "blend",
    "collect_inputs",
    "compute_cam",
    "content_box",
    "explain_images",
    "gradcam_grid",
    "gradcam_grid_for",
    "resolve_targets",
    "save_overlay",
    "select_cases",
    "target_layer",
    "to_original_geometry",
]
