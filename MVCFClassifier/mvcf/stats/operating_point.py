"""Operating points and binary classification metrics with confidence intervals.

A threshold is chosen on one set (Youden's J or a target sensitivity) and then applied frozen to another;
the rule everywhere is "positive when score >= threshold". Proportions get Wilson score intervals
(statsmodels); F1 gets the Wilson interval of the Jaccard index J = TP/(TP+FP+FN) mapped through the
monotone identity F1 = 2J/(1+J). Paired sensitivities/specificities of two classifiers are compared with
McNemar's test (statsmodels; exact binomial when fewer than 25 discordant pairs).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from mvcf.errors import MVCFError
from mvcf.stats._validate import as_scores, as_truth, check_alpha, same_length


def _roc_points(y_true: Any, score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    truth = as_truth(y_true, "y_true")
    values = as_scores(score)
    same_length(truth, values, names=("y_true", "score"))
    fpr, tpr, thresholds = roc_curve(truth, values, drop_intermediate=False)
    finite = np.isfinite(thresholds)
    return fpr[finite], tpr[finite], thresholds[finite]


#: Sensitivities and specificities are fractions k/n: two equal sums can differ in their last bit
#: (1 - 1/3 > 2/3 in floating point), which decided a tie the documented rule resolves.
TIE = 1e-12


def youden_threshold(y_true: Any, score: Any) -> float:
    """The observed score maximising sensitivity + specificity − 1 (ties: the highest such threshold,
    i.e. the most specific)."""
    fpr, tpr, thresholds = _roc_points(y_true, score)
    youden = tpr - fpr   # thresholds descend: the first of the tied maxima is the most specific
    return float(thresholds[np.flatnonzero(youden >= youden.max() - TIE)[0]])


def threshold_for_sensitivity(y_true: Any, score: Any, target: float) -> float:
    """The highest observed score whose sensitivity on this set is at least `target` (most specific)."""
    if not 0.0 < float(target) <= 1.0:
        raise MVCFError(f"target sensitivity must be in (0, 1], got {target}")
    fpr, tpr, thresholds = _roc_points(y_true, score)
    reached = np.flatnonzero(tpr >= float(target) - TIE)
    return float(thresholds[reached[0]])


def _binary(values: Any, name: str) -> np.ndarray:
    return as_truth(values, name, need_both=False)


def wilson_ci(count: int, total: int, alpha: float = 0.05) -> tuple[float, float]:
    from statsmodels.stats.proportion import proportion_confint

    if total == 0:
        return (float("nan"), float("nan"))
    low, high = proportion_confint(count, total, alpha=alpha, method="wilson")
    return (float(low), float(high))


def _proportion(count: int, total: int, alpha: float) -> dict:
    return {"value": float(count / total) if total else float("nan"), "ci": wilson_ci(count, total, alpha),
            "count": int(count), "total": int(total)}


def binary_metrics(y_true: Any, y_pred: Any, alpha: float = 0.05) -> dict:
    """Sensitivity, specificity, PPV, NPV, accuracy and F1, each {value, ci}, plus tp/fp/tn/fn.
    A metric with an empty denominator is NaN with a NaN interval."""
    alpha = check_alpha(alpha)
    truth = _binary(y_true, "y_true")
    pred = _binary(y_pred, "y_pred")
    same_length(truth, pred, names=("y_true", "y_pred"))
    if truth.size == 0:
        raise MVCFError("no cases to evaluate")
    tp = int(np.sum(truth & pred))
    fp = int(np.sum(~truth & pred))
    tn = int(np.sum(~truth & ~pred))
    fn = int(np.sum(truth & ~pred))
    non_tn = tp + fp + fn
    if non_tn:
        j_low, j_high = wilson_ci(tp, non_tn, alpha)
        f1 = {"value": 2.0 * tp / (2 * tp + fp + fn), "ci": (2 * j_low / (1 + j_low), 2 * j_high / (1 + j_high)),
              "method": "wilson-jaccard"}
    else:
        f1 = {"value": float("nan"), "ci": (float("nan"), float("nan")), "method": "wilson-jaccard"}
    return {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": int(truth.size), "alpha": alpha,
        "sensitivity": _proportion(tp, tp + fn, alpha),
        "specificity": _proportion(tn, tn + fp, alpha),
        "ppv": _proportion(tp, tp + fp, alpha),
        "npv": _proportion(tn, tn + fn, alpha),
        "accuracy": _proportion(tp + tn, truth.size, alpha),
        "f1": f1,
    }


def metrics_at_threshold(y_true: Any, score: Any, threshold: float, alpha: float = 0.05) -> dict:
    """binary_metrics for "positive when score >= threshold" (a threshold frozen from another set)."""
    values = as_scores(score)
    result = binary_metrics(y_true, values >= float(threshold), alpha=alpha)
    result["threshold"] = float(threshold)
    return result


def _mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    from statsmodels.stats.contingency_tables import mcnemar

    table = np.array([[np.sum(correct_a & correct_b), np.sum(correct_a & ~correct_b)],
                      [np.sum(~correct_a & correct_b), np.sum(~correct_a & ~correct_b)]], dtype=int)
    discordant = int(table[0, 1] + table[1, 0])
    if discordant == 0:
        return {"table": table.tolist(), "statistic": 0.0, "p": 1.0, "exact": True}
    exact = discordant < 25
    result = mcnemar(table, exact=exact, correction=True)
    return {"table": table.tolist(), "statistic": float(result.statistic), "p": float(result.pvalue), "exact": exact}


def mcnemar_paired(y_true: Any, pred_a: Any, pred_b: Any) -> dict:
    """McNemar's test of two classifiers' sensitivities (on the positives) and specificities (on the
    negatives) for the same cases. `table` is [[both right, only a right], [only b right, both wrong]]."""
    truth = _binary(y_true, "y_true")
    a = _binary(pred_a, "pred_a")
    b = _binary(pred_b, "pred_b")
    same_length(truth, a, b, names=("y_true", "pred_a", "pred_b"))
    if truth.all() or not truth.any():
        raise MVCFError("McNemar of sensitivity and specificity needs both classes in y_true")
    return {
        "sensitivity": {"a": float(a[truth].mean()), "b": float(b[truth].mean()),
                        **_mcnemar(a[truth], b[truth])},
        "specificity": {"a": float(1 - a[~truth].mean()), "b": float(1 - b[~truth].mean()),
                        **_mcnemar(~a[~truth], ~b[~truth])},
    }
