"""Calibration of predicted probabilities and decision-curve net benefit.

- Reliability curve: equal-width bins of predicted probability (scikit-learn's calibration_curve), with
  the number of cases per bin and a Wilson interval for the observed fraction.
- Brier score (scikit-learn).
- Calibration slope: logistic regression of the outcome on logit(p); intercept ("calibration-in-the-large"):
  logistic regression with logit(p) as offset and only an intercept (Van Calster et al. 2019). Both by
  statsmodels GLM (binomial), with Wald CIs. Perfect calibration: slope 1, intercept 0. Constant
  predictions or perfect separation leave the slope undefined (NaN, with a note), not an exception.
- Net benefit at threshold probability pt: TP/n − FP/n · pt/(1−pt) (Vickers & Elkin 2006), with the
  treat-all and treat-none references.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import numpy as np

from mvcf.errors import MVCFError
from mvcf.stats._validate import as_scores, as_truth, check_alpha, same_length

_EPS = 1e-6


def _probabilities(prob: Any) -> np.ndarray:
    values = as_scores(prob, "prob")
    if np.any(values < 0.0) or np.any(values > 1.0):
        raise MVCFError("prob must be probabilities in [0, 1]")
    return values


def default_n_bins(n_cases: int) -> int:
    """Reliability bins for `n_cases`: 5 below 100 cases (so each bin holds a few), else 10."""
    return 5 if int(n_cases) < 100 else 10


def calibration(y_true: Any, prob: Any, n_bins: int = 10, alpha: float = 0.05) -> dict:
    """Reliability bins, Brier score, calibration slope and intercept (with CIs)."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    from mvcf.stats.operating_point import wilson_ci

    alpha = check_alpha(alpha)
    truth = as_truth(y_true, "y_true")
    p = _probabilities(prob)
    same_length(truth, p, names=("y_true", "prob"))
    if int(n_bins) < 1:
        raise MVCFError("n_bins must be at least 1")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    observed, predicted = calibration_curve(truth, p, n_bins=int(n_bins), strategy="uniform")
    index = np.clip(np.searchsorted(edges[1:-1], p, side="right"), 0, int(n_bins) - 1)
    counts = np.bincount(index, minlength=int(n_bins))
    positives = np.bincount(index, weights=truth.astype(float), minlength=int(n_bins))
    bins = []
    filled = iter(zip(observed, predicted))
    for b in range(int(n_bins)):
        if counts[b] == 0:
            continue
        obs, pred = next(filled)
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(counts[b]),
                     "mean_predicted": float(pred), "observed": float(obs),
                     "observed_ci": wilson_ci(int(round(positives[b])), int(counts[b]), alpha)})

    logit = np.log(np.clip(p, _EPS, 1 - _EPS) / (1 - np.clip(p, _EPS, 1 - _EPS)))
    y = truth.astype(float)
    notes = []
    nan2 = (float("nan"), float("nan"))
    slope, slope_ci = float("nan"), nan2
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        if np.ptp(logit) == 0.0:
            notes.append("constant predictions: no calibration slope")
        else:
            try:
                fit = sm.GLM(y, sm.add_constant(logit, has_constant="add"),
                             family=sm.families.Binomial()).fit(tol=1e-12, maxiter=100)
                slope, ci = float(fit.params[1]), fit.conf_int(alpha)[1]
                slope_ci = (float(ci[0]), float(ci[1]))
            except PerfectSeparationWarning:
                notes.append("predictions separate the classes perfectly: calibration slope undefined")
        intercept_fit = sm.GLM(y, np.ones_like(logit), family=sm.families.Binomial(),
                               offset=logit).fit(tol=1e-12, maxiter=100)
    intercept_ci = intercept_fit.conf_int(alpha)[0]
    return {
        "n": int(truth.size), "n_bins": int(n_bins), "bins": bins,
        "brier": float(brier_score_loss(truth, p)),
        "slope": slope, "slope_ci": slope_ci,
        "intercept": float(intercept_fit.params[0]),
        "intercept_ci": (float(intercept_ci[0]), float(intercept_ci[1])),
        "notes": notes,
    }


def decision_curve(y_true: Any, prob: Any, thresholds: Optional[Sequence[float]] = None) -> dict:
    """Net benefit of treating when prob >= pt, of treating all and of treating none, at each pt in (0, 1)."""
    truth = as_truth(y_true, "y_true", need_both=False)
    p = _probabilities(prob)
    same_length(truth, p, names=("y_true", "prob"))
    if truth.size == 0:
        raise MVCFError("no cases for a decision curve")
    pts = np.arange(0.01, 1.0, 0.01) if thresholds is None else np.asarray(thresholds, dtype=float)
    if pts.ndim != 1 or np.any(~np.isfinite(pts)) or np.any((pts <= 0) | (pts >= 1)):
        raise MVCFError("decision-curve thresholds must lie strictly between 0 and 1")
    n = truth.size
    prevalence = truth.mean()
    odds = pts / (1 - pts)
    treat = p[None, :] >= pts[:, None]
    tp = (treat & truth[None, :]).sum(axis=1)
    fp = (treat & ~truth[None, :]).sum(axis=1)
    return {
        "thresholds": pts.tolist(),
        "net_benefit": (tp / n - fp / n * odds).tolist(),
        "treat_all": (prevalence - (1 - prevalence) * odds).tolist(),
        "treat_none": [0.0] * pts.size,
        "prevalence": float(prevalence), "n": int(n),
    }
