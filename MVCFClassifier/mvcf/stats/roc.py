"""ROC AUC inference: Mann–Whitney AUC, DeLong variance/CI and paired test, stratified bootstrap CI.

Convention: a higher score means "more likely positive" (no automatic direction flip, unlike pROC's
`direction="auto"`); ties between a positive and a negative count one half.

DeLong et al. (1988) variance from the placement values of Sun & Xu's (2014, IEEE SPL 21(11)) midrank
formulation, obtained from one sort per model: O(k·n log n) for k models on n cases instead of
O(k·n_pos·n_neg). Normalisation (n−1 denominators) and the
two-sided normal CI/test follow pROC (Robin et al. 2011), against which the results are checked.
"""
from __future__ import annotations

from itertools import combinations
from typing import Any, Optional, Sequence

import numpy as np
from scipy import stats as _st

from mvcf.errors import MVCFError
from mvcf.stats._validate import as_scores, as_truth, check_alpha, same_length, score_matrix, score_names


def _structural_components(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs (k,), placement values V10 (k, m) of the positives and V01 (k, n) of the negatives.

    Sun & Xu's V10 = (Tz − Tx)/n, where Tz − Tx (midrank among all cases minus midrank among positives) is
    the number of negatives below the positive plus half those tied with it; likewise for V01. Those counts
    come here from one sort per model: cumulative class counts up to the start and the end of each tie
    group of the sorted scores."""
    k, total = scores.shape
    m = int(truth.sum())
    n = total - m
    order = np.argsort(scores, axis=1)
    ordered = np.take_along_axis(scores, order, axis=1)
    negative = (~truth)[order].astype(float)
    positions = np.broadcast_to(np.arange(total), (k, total))
    new_group = np.ones((k, total), dtype=bool)
    new_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    last_of_group = np.ones((k, total), dtype=bool)
    last_of_group[:, :-1] = new_group[:, 1:]
    group_start = np.maximum.accumulate(np.where(new_group, positions, 0), axis=1)
    group_end = np.minimum.accumulate(np.where(last_of_group, positions, total - 1)[:, ::-1], axis=1)[:, ::-1]
    neg_through = np.cumsum(negative, axis=1)
    neg_before = np.take_along_axis(neg_through - negative, group_start, axis=1)
    neg_tied = np.take_along_axis(neg_through, group_end, axis=1) - neg_before
    pos_before = group_start - neg_before
    pos_tied = (group_end - group_start + 1) - neg_tied
    placement_sorted = np.where(negative == 0.0, (neg_before + 0.5 * neg_tied) / n,
                                (m - pos_before - pos_tied + 0.5 * pos_tied) / m)
    placement = np.empty_like(placement_sorted)
    np.put_along_axis(placement, order, placement_sorted, axis=1)
    v10 = placement[:, truth]
    v01 = placement[:, ~truth]
    return v10.mean(axis=1), v10, v01


def _delong_cov(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    m, n = v10.shape[1], v01.shape[1]
    return np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n


def _prepare(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    truth = as_truth(y_true, "y_true")
    matrix = score_matrix(scores, truth.size)
    _two_per_class(truth, "DeLong")
    return truth, matrix


def _two_per_class(truth: np.ndarray, method: str) -> None:
    if truth.sum() < 2 or (~truth).sum() < 2:
        raise MVCFError(f"{method} needs at least 2 positives and 2 negatives "
                        f"(got {int(truth.sum())} and {int((~truth).sum())})")


def auc(y_true: Any, score: Any) -> float:
    """Empirical (trapezoidal) AUC = P(score_pos > score_neg) + ½ P(tie)."""
    truth = as_truth(y_true, "y_true")
    values = as_scores(score)
    same_length(truth, values, names=("y_true", "score"))
    return float(_structural_components(truth, values[None, :])[0][0])


def auc_or(y_true: Any, score: Any, undefined: float = float("nan")) -> float:
    """`auc`, or `undefined` when the cases hold one class only (e.g. a small validation fold)."""
    truth = np.asarray(y_true)
    return auc(truth, score) if 0 < truth.sum() < truth.size else float(undefined)


def delong_cov(y_true: Any, scores: Any) -> dict:
    """AUCs of k models on the same cases and their k×k DeLong covariance matrix."""
    truth, matrix = _prepare(y_true, scores)
    aucs, v10, v01 = _structural_components(truth, matrix)
    return {"aucs": aucs, "cov": _delong_cov(v10, v01), "n_pos": int(truth.sum()), "n_neg": int((~truth).sum())}


def delong_ci(y_true: Any, score: Any, alpha: float = 0.05) -> dict:
    """AUC with DeLong variance and a normal (1−alpha) CI clipped to [0, 1] (as pROC's ci.auc)."""
    alpha = check_alpha(alpha)
    values = as_scores(score)
    same_length(np.asarray(y_true), values, names=("y_true", "score"))
    result = delong_cov(y_true, values[None, :])
    estimate, var = float(result["aucs"][0]), float(result["cov"][0, 0])
    se = float(np.sqrt(max(var, 0.0)))
    z = _st.norm.ppf(1.0 - alpha / 2.0)
    ci = (float(np.clip(estimate - z * se, 0.0, 1.0)), float(np.clip(estimate + z * se, 0.0, 1.0)))
    return {"auc": estimate, "var": var, "se": se, "ci": ci, "method": "delong",
            "n_pos": result["n_pos"], "n_neg": result["n_neg"]}


def newcombe_auc_ci(auc_value: float, n_pos: int, n_neg: int, alpha: float = 0.05) -> tuple[float, float]:
    """Score-type CI of an AUC (Newcombe 2006, Stat Med 25:559, method 5: the interval of all theta whose
    modified Hanley-McNeil variance, with m* = n* = (m + n)/2 - 1, keeps |AUC - theta| within z SD).
    Unlike DeLong or the bootstrap it does not collapse to a point at AUC 0 or 1 or with one case of a class,
    which is when the report uses it."""
    from scipy.optimize import brentq

    alpha = check_alpha(alpha)
    if n_pos < 1 or n_neg < 1:
        raise MVCFError("an AUC interval needs at least one case of each class")
    z = _st.norm.ppf(1.0 - alpha / 2.0)
    star = (n_pos + n_neg) / 2.0 - 1.0

    def excess(theta: float) -> float:
        var = theta * (1 - theta) * (1 + (star - 1) * (1 - theta) / (2 - theta) + (star - 1) * theta / (1 + theta))
        return (auc_value - theta) ** 2 - z * z * max(var, 0.0) / (n_pos * n_neg)

    eps = 1e-12
    low = 0.0 if auc_value <= eps or excess(0.0) <= 0 else brentq(excess, 0.0, auc_value - eps)
    high = 1.0 if auc_value >= 1 - eps or excess(1.0) <= 0 else brentq(excess, auc_value + eps, 1.0)
    return float(low), float(high)


def point_interval_fallback(auc_value: float, ci: Sequence[float], n_pos: int, n_neg: int,
                            alpha: float = 0.05) -> Optional[tuple[tuple[float, float], str]]:
    """Where an AUC interval (DeLong, bootstrap) collapses to a point: Newcombe's score interval and why it
    collapsed ('perfect separation' at AUC 0 or 1, else 'zero variance'); None for an interval of width. The
    one rule behind every table, summary and plot legend that must never show a zero-width interval."""
    if ci[1] - ci[0] >= 1e-9:
        return None
    reason = "perfect separation" if auc_value in (0.0, 1.0) else "zero variance"
    return newcombe_auc_ci(auc_value, n_pos, n_neg, alpha), reason


#: A variance of an AUC difference at or below this is rounding noise (an SE of 1e-7): no test.
ZERO_VARIANCE = 1e-14


def delong_test(y_true: Any, scores: Any, alpha: float = 0.05, names: Optional[Sequence[str]] = None) -> dict:
    """Paired DeLong test for every pair of k ≥ 2 models scored on the same cases.

    `scores` is a list of k arrays, a mapping or DataFrame (names from its keys/columns), or a (k, n) /
    (n, k) array. For each pair (a, b): diff = AUC_a − AUC_b,
    z = diff / se, two-sided normal p, the (1−alpha) CI of the difference (pROC's roc.test, paired; cut to
    [-1, 1]), and p_holm, the p-value adjusted by Holm's method (statsmodels) over the pairs that are tests. A
    pair whose difference has zero variance has z, p, p_holm and ci None and a `note`.
    """
    alpha = check_alpha(alpha)
    result = delong_cov(y_true, scores)
    aucs, cov = result["aucs"], result["cov"]
    k = aucs.size
    if k < 2:
        raise MVCFError("the paired DeLong test needs at least two score arrays")
    carried = score_names(scores)
    labels = list(names) if names is not None else (carried if carried is not None else list(range(k)))
    if len(labels) != k:
        raise MVCFError(f"{len(labels)} names given for {k} score arrays")
    crit = _st.norm.ppf(1.0 - alpha / 2.0)
    pairs = []
    for a, b in combinations(range(k), 2):
        diff = float(aucs[a] - aucs[b])
        var = float(cov[a, a] + cov[b, b] - 2.0 * cov[a, b])
        se = float(np.sqrt(max(var, 0.0)))
        if var <= ZERO_VARIANCE:   # p = 0 (z = inf) would claim a test; there is none
            pairs.append({"a": labels[a], "b": labels[b], "diff": diff, "se": 0.0, "z": None, "p": None,
                          "ci": None, "note": "the paired DeLong variance is zero (each score is constant or "
                                              "separates the classes perfectly): no test possible"})
            continue
        z = diff / se
        # a difference of two AUCs lies in [-1, 1]; the Wald interval is cut there (it reached 1.118)
        pairs.append({"a": labels[a], "b": labels[b], "diff": diff, "se": se, "z": float(z),
                      "p": float(2.0 * _st.norm.sf(abs(z))),
                      "ci": (max(-1.0, float(diff - crit * se)), min(1.0, float(diff + crit * se)))})
    tested = [pair for pair in pairs if pair["p"] is not None]
    if len(tested) > 1:   # Holm over the comparisons that are tests
        from statsmodels.stats.multitest import multipletests

        adjusted = multipletests([pair["p"] for pair in tested], method="holm")[1]
    else:
        adjusted = [pair["p"] for pair in tested]
    for pair in pairs:
        pair["p_holm"] = None
    for pair, p_holm in zip(tested, adjusted):
        pair["p_holm"] = float(p_holm)
    return {"aucs": aucs.tolist(), "cov": cov.tolist(), "pairs": pairs,
            "n_pos": result["n_pos"], "n_neg": result["n_neg"]}


def _auc_statistic(positives: np.ndarray, negatives: np.ndarray, axis: int = -1) -> np.ndarray:
    u = _st.mannwhitneyu(positives, negatives, axis=axis, method="asymptotic", use_continuity=False).statistic
    return u / (positives.shape[axis] * negatives.shape[axis])


def bootstrap_auc_ci(y_true: Any, score: Any, n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05,
                     method: str = "percentile") -> dict:
    """AUC with a stratified bootstrap CI: positives and negatives are resampled separately (as pROC's
    `boot.stratified=TRUE`), by scipy.stats.bootstrap with a seeded generator; each class is sorted first, so
    the interval does not depend on the order of the rows. method: percentile | BCa | basic."""
    alpha = check_alpha(alpha)
    truth = as_truth(y_true, "y_true")
    values = as_scores(score)
    same_length(truth, values, names=("y_true", "score"))
    if int(n_resamples) < 1:
        raise MVCFError("n_resamples must be at least 1")
    _two_per_class(truth, "a stratified bootstrap")   # one case of a class resamples to itself: scipy refuses
    positives, negatives = np.sort(values[truth]), np.sort(values[~truth])   # the same cases, in any row order
    batch = max(1, int(4_000_000 // values.size))
    res = _st.bootstrap((positives, negatives), _auc_statistic, n_resamples=int(n_resamples), paired=False,
                        vectorized=True, confidence_level=1.0 - alpha, method=method, batch=batch,
                        rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return {"auc": float(_auc_statistic(positives, negatives)), "ci": (float(ci.low), float(ci.high)),
            "se": float(res.standard_error), "method": f"bootstrap-{method.lower()}",
            "n_resamples": int(n_resamples), "seed": seed}


def roc_curve_band(y_true: Any, score: Any, n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05,
                   n_points: int = 101) -> dict:
    """Empirical ROC curve plus a pointwise stratified-bootstrap (1−alpha) band of sensitivity at fixed
    false-positive rates (the band pROC's ci.se draws). Resamples are multinomial case weights within each
    class, so each resampled curve is a weighted cumulative sum over the once-sorted scores."""
    from sklearn.metrics import roc_curve

    truth = as_truth(y_true, "y_true")
    values = as_scores(score)
    same_length(truth, values, names=("y_true", "score"))
    fpr, tpr, _ = roc_curve(truth, values)
    grid = np.linspace(0.0, 1.0, n_points)
    rng = np.random.default_rng(seed)
    order = np.argsort(-values, kind="stable")
    sorted_truth = truth[order]
    sorted_values = values[order]
    ends = np.r_[np.flatnonzero(np.diff(sorted_values) != 0), values.size - 1]
    m, n = int(truth.sum()), int((~truth).sum())
    curves = np.empty((int(n_resamples), grid.size))
    chunk = max(1, int(2_000_000 // values.size))
    for start in range(0, int(n_resamples), chunk):
        rows = min(chunk, int(n_resamples) - start)
        weights = np.zeros((rows, values.size))
        weights[:, sorted_truth] = rng.multinomial(m, np.full(m, 1.0 / m), size=rows)
        weights[:, ~sorted_truth] = rng.multinomial(n, np.full(n, 1.0 / n), size=rows)
        tp = np.cumsum(weights * sorted_truth, axis=1)[:, ends] / m
        fp = np.cumsum(weights * ~sorted_truth, axis=1)[:, ends] / n
        for i in range(rows):
            curves[start + i] = np.interp(grid, np.r_[0.0, fp[i]], np.r_[0.0, tp[i]])
    low, high = np.quantile(curves, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)
    return {"fpr": fpr, "tpr": tpr, "grid_fpr": grid, "tpr_low": low, "tpr_high": high}
