"""Evaluation on plain arrays (labels, probabilities, patient ids): metrics, CIs, thresholds,
calibration, paired significance tests, multi-class metrics (``multiclass``). Figures live in
``pneumocxr.evaluation.plots`` and ``.multiclass_plots`` (imported on demand: they pull in Matplotlib).

Pure by design: nothing here reads images or models, so every reported number can be recomputed
from a saved per-image predictions CSV.
"""

from pneumocxr.evaluation.calibration import (
    DEFAULT_N_BINS,
    ReliabilityData,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    probability_to_logit,
    reliability_curve,
)
from pneumocxr.evaluation.compare import (
    DeLongResult,
    McNemarResult,
    delong_auc_ci,
    delong_test,
    mcnemar_test,
    pairwise_comparisons,
)
from pneumocxr.evaluation.intervals import (
    DEFAULT_N_BOOT,
    MetricEstimate,
    MetricsCI,
    bootstrap_roc_band,
    metrics_with_ci,
    wilson_interval,
)
from pneumocxr.evaluation.metrics import (
    METRIC_LABELS,
    METRIC_NAMES,
    binary_metrics,
    check_prevalence,
    classification_report,
    confusion_matrix,
    predictive_values,
)
from pneumocxr.evaluation.multiclass import (
    MULTICLASS_LABELS,
    OVERALL_METRICS,
    PER_CLASS_METRICS,
    MulticlassMetrics,
    check_multiclass_inputs,
    multiclass_metrics,
)
from pneumocxr.evaluation.prevalence import PrevalenceAdjusted, prevalence_adjusted
from pneumocxr.evaluation.thresholds import RULES as THRESHOLD_RULES
from pneumocxr.evaluation.thresholds import ThresholdChoice, all_rules, choose_threshold

__all__ = [
    "DEFAULT_N_BINS",
    "DEFAULT_N_BOOT",
    "METRIC_LABELS",
    "METRIC_NAMES",
    "MULTICLASS_LABELS",
    "OVERALL_METRICS",
    "PER_CLASS_METRICS",
    "THRESHOLD_RULES",
    "DeLongResult",
    "McNemarResult",
    "MetricEstimate",
    "MetricsCI",
    "MulticlassMetrics",
    "PrevalenceAdjusted",
    "ReliabilityData",
    "ThresholdChoice",
    "all_rules",
    "apply_temperature",
    "binary_metrics",
    "bootstrap_roc_band",
    "check_multiclass_inputs",
    "check_prevalence",
    "choose_threshold",
    "classification_report",
    "confusion_matrix",
    "delong_auc_ci",
    "delong_test",
    "expected_calibration_error",
    "fit_temperature",
    "mcnemar_test",
    "metrics_with_ci",
    "multiclass_metrics",
    "pairwise_comparisons",
    "predictive_values",
    "prevalence_adjusted",
    "probability_to_logit",
    "reliability_curve",
    "wilson_interval",
]
