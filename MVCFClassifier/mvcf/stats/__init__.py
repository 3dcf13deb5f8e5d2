"""Statistics for judging models and readers: ROC/AUC inference (DeLong, bootstrap), operating points with
Wilson CIs, calibration and decision curves, and Obuchowski–Rockette MRMC reader-study analysis.

Methods, formulas and validation: docs/statistics.md. Plots live in `mvcf.stats.plots` (matplotlib is
imported only there).
"""
from mvcf.stats.calibration import calibration, decision_curve, default_n_bins
from mvcf.stats.mrmc import model_vs_readers, mrmc, unaided_vs_aided
from mvcf.stats.operating_point import (binary_metrics, mcnemar_paired, metrics_at_threshold,
                                        threshold_for_sensitivity, wilson_ci, youden_threshold)
from mvcf.stats.roc import (auc, auc_or, bootstrap_auc_ci, delong_ci, delong_cov, delong_test, newcombe_auc_ci, point_interval_fallback,
                            roc_curve_band)

__all__ = [
    "auc", "auc_or", "delong_ci", "newcombe_auc_ci", "point_interval_fallback", "delong_cov", "delong_test", "bootstrap_auc_ci", "roc_curve_band",
    "youden_threshold", "threshold_for_sensitivity", "binary_metrics", "metrics_at_threshold",
    "mcnemar_paired", "wilson_ci", "calibration", "decision_curve", "default_n_bins", "mrmc", "unaided_vs_aided",
    "model_vs_readers",
]
