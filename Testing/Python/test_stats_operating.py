"""Operating points, binary metrics with Wilson CIs, McNemar, calibration and decision curves."""
from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from mvcf import stats
from mvcf.errors import MVCFError


def test_binary_metrics_counts_and_wilson_intervals():
    truth = np.array([1] * 40 + [0] * 60)
    pred = np.array([1] * 30 + [0] * 10 + [1] * 12 + [0] * 48)
    m = stats.binary_metrics(truth, pred)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (30, 10, 12, 48)
    assert m["sensitivity"]["value"] == pytest.approx(0.75)
    assert m["specificity"]["value"] == pytest.approx(0.8)
    assert m["ppv"]["value"] == pytest.approx(30 / 42)
    assert m["npv"]["value"] == pytest.approx(48 / 58)
    assert m["accuracy"]["value"] == pytest.approx(0.78)
    assert m["f1"]["value"] == pytest.approx(60 / 82)
    z, n, p = 1.959963984540054, 40, 0.75  # Wilson (1927) score interval written out
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert m["sensitivity"]["ci"] == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert m["specificity"]["ci"] == pytest.approx(proportion_confint(48, 60, method="wilson"))
    low, high = m["f1"]["ci"]
    assert low < m["f1"]["value"] < high
    j_low, j_high = proportion_confint(30, 52, method="wilson")
    assert (low, high) == pytest.approx((2 * j_low / (1 + j_low), 2 * j_high / (1 + j_high)))


def test_empty_denominators_are_nan_not_errors():
    m = stats.binary_metrics([0, 0, 0], [0, 0, 0])
    assert np.isnan(m["sensitivity"]["value"]) and np.isnan(m["ppv"]["value"])
    assert m["specificity"]["value"] == 1.0


def test_youden_threshold_is_chosen_on_one_set_and_applied_frozen():
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    score = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    assert stats.youden_threshold(truth, score) == pytest.approx(0.7)
    frozen = stats.metrics_at_threshold([0, 1, 1], [0.65, 0.7, 0.2], threshold=0.7)
    assert (frozen["tp"], frozen["fn"], frozen["tn"]) == (1, 1, 1)


def test_a_youden_tie_goes_to_the_most_specific_threshold_whatever_the_rounding():
    """Thresholds 5 (sensitivity 2/3, specificity 1) and 3 (1, 2/3) tie, but 1 - 1/3 exceeds 2/3 by one bit,
    so argmax took 3, against the documented rule; a frozen threshold chosen on a small set was the less
    specific one."""
    truth, score = [1, 1, 0, 1, 0, 0], [6, 5, 4, 3, 2, 1]
    assert stats.youden_threshold(truth, score) == 5.0
    assert stats.youden_threshold([1, 0, 1, 0], [4, 3, 2, 1]) == 4.0     # 1/2 + 1 - 1 vs 1 + 1/2 - 1


def test_threshold_for_sensitivity_is_most_specific_reaching_target():
    rng = np.random.default_rng(0)
    truth = rng.random(500) < 0.3
    score = rng.normal(size=500) + 1.5 * truth
    for target in (0.5, 0.8, 0.9, 0.95, 1.0):
        threshold = stats.threshold_for_sensitivity(truth, score, target)
        sens = np.mean(score[truth] >= threshold)
        assert sens >= target
        above = score[score > threshold]
        if above.size:  # the next higher observed score misses the target
            assert np.mean(score[truth] >= above.min()) < target
    with pytest.raises(MVCFError, match="target sensitivity"):
        stats.threshold_for_sensitivity(truth, score, 1.5)


def test_mcnemar_on_paired_sensitivity_and_specificity():
    truth = np.array([1] * 30 + [0] * 30)
    a = np.r_[np.ones(25), np.zeros(5), np.zeros(28), np.ones(2)].astype(bool)
    b = np.r_[np.ones(15), np.zeros(15), np.zeros(28), np.ones(2)].astype(bool)
    out = stats.mcnemar_paired(truth, a, b)
    assert out["sensitivity"]["table"] == [[15, 10], [0, 5]]
    assert out["sensitivity"]["p"] == pytest.approx(2 * 0.5 ** 10)  # exact binomial, 10 vs 0 discordant
    assert out["specificity"]["p"] == 1.0


def test_calibration_of_calibrated_probabilities():
    rng = np.random.default_rng(1)
    prob = rng.uniform(0.02, 0.98, 4000)
    truth = rng.random(4000) < prob
    cal = stats.calibration(truth, prob, n_bins=10)
    assert cal["slope"] == pytest.approx(1.0, abs=0.1)
    assert cal["intercept"] == pytest.approx(0.0, abs=0.15)
    assert cal["slope_ci"][0] < cal["slope"] < cal["slope_ci"][1]
    assert cal["intercept_ci"][0] < cal["intercept"] < cal["intercept_ci"][1]
    assert sum(b["n"] for b in cal["bins"]) == 4000
    assert cal["brier"] == pytest.approx(np.mean((prob - truth) ** 2))
    for b in cal["bins"]:
        assert b["low"] <= b["mean_predicted"] <= b["high"]


def test_calibration_detects_overconfidence():
    rng = np.random.default_rng(2)
    logit = rng.normal(0, 1.5, 3000)
    truth = rng.random(3000) < 1 / (1 + np.exp(-logit))
    overconfident = 1 / (1 + np.exp(-2 * logit))
    cal = stats.calibration(truth, overconfident)
    assert cal["slope"] == pytest.approx(0.5, abs=0.08)


def test_decision_curve_net_benefit():
    truth = np.array([1, 1, 0, 0, 0])
    prob = np.array([0.9, 0.3, 0.6, 0.2, 0.1])
    dc = stats.decision_curve(truth, prob, [0.25, 0.5])
    # pt=0.25: treat 0.9, 0.3, 0.6 -> TP 2, FP 1: 2/5 - 1/5 * 1/3; pt=0.5: TP 1, FP 1: 1/5 - 1/5.
    assert dc["net_benefit"] == pytest.approx([0.4 - 0.2 / 3, 0.0])
    assert dc["treat_all"] == pytest.approx([0.4 - 0.6 / 3, 0.4 - 0.6])
    with pytest.raises(MVCFError, match="strictly between"):
        stats.decision_curve(truth, prob, [0.0, 0.5])
    with pytest.raises(MVCFError, match="probabilities"):
        stats.calibration(truth, prob * 2)


def test_calibration_slope_undefined_is_nan_with_a_note(recwarn):
    separated = stats.calibration([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], n_bins=5)
    assert np.isnan(separated["slope"]) and "separate" in separated["notes"][0]
    constant = stats.calibration([0, 1, 0, 1], [0.5] * 4, n_bins=5)
    assert np.isnan(constant["slope"]) and "constant" in constant["notes"][0]
    assert constant["intercept"] == pytest.approx(0.0, abs=1e-9)
    assert not [w for w in recwarn if "Separation" in type(w.message).__name__]


# ---- against base R (Testing/Python/reference/make_proc_reference.R, outputs committed) ----

def _r_values() -> dict:
    import csv
    from pathlib import Path

    with open(Path(__file__).parent / "reference" / "r_misc.csv", newline="") as handle:
        return {(row["check"], row["key"]): float(row["value"]) for row in csv.DictReader(handle)}


R = _r_values()


@pytest.mark.parametrize("count, total", [(30, 40), (0, 12), (12, 12), (1, 3), (57, 113)])
def test_wilson_interval_matches_r_prop_test(count, total):
    low, high = stats.wilson_ci(count, total)
    assert low == pytest.approx(R[("wilson", f"{count}/{total}:low")], abs=1e-12)
    assert high == pytest.approx(R[("wilson", f"{count}/{total}:high")], abs=1e-12)


def _paired_predictions(both: int, only_a: int, only_b: int, neither: int):
    a = np.r_[np.ones(both), np.ones(only_a), np.zeros(only_b), np.zeros(neither)].astype(bool)
    b = np.r_[np.ones(both), np.zeros(only_a), np.ones(only_b), np.zeros(neither)].astype(bool)
    truth = np.r_[np.ones(a.size), np.zeros(4)].astype(int)  # the table is on the positives
    return truth, np.r_[a, np.zeros(4, bool)], np.r_[b, np.zeros(4, bool)]


@pytest.mark.parametrize("cells, exact", [((40, 9, 21, 30), False), ((15, 10, 0, 5), True), ((15, 7, 3, 5), True)])
def test_mcnemar_matches_r(cells, exact):
    out = stats.mcnemar_paired(*_paired_predictions(*cells))["sensitivity"]
    key = "-".join(map(str, cells))
    assert out["table"] == [[cells[0], cells[1]], [cells[2], cells[3]]]
    assert out["exact"] is exact
    assert out["p"] == pytest.approx(R[("mcnemar", f"{key}:p")], abs=1e-12)
    if not exact:
        assert out["statistic"] == pytest.approx(R[("mcnemar", f"{key}:statistic")], abs=1e-12)


def test_calibration_matches_r_glm():
    import csv
    from pathlib import Path

    with open(Path(__file__).parent / "reference" / "calibration_cases.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    truth = np.array([int(r["truth"]) for r in rows])
    prob = np.array([float(r["prob"]) for r in rows])
    cal = stats.calibration(truth, prob)
    assert cal["slope"] == pytest.approx(R[("calibration", "slope")], abs=1e-10)
    assert cal["intercept"] == pytest.approx(R[("calibration", "intercept")], abs=1e-10)
    assert cal["slope_ci"] == pytest.approx((R[("calibration", "slope_low")], R[("calibration", "slope_high")]), abs=1e-10)
    assert cal["intercept_ci"] == pytest.approx((R[("calibration", "intercept_low")], R[("calibration", "intercept_high")]), abs=1e-10)
    assert cal["brier"] == pytest.approx(R[("calibration", "brier")], abs=1e-12)
